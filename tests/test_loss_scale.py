"""The reference's loss scale and Adam epsilon (issue 13): the first evaluation step from a saved Adam state,
computed by hand with TensorFlow's Adam formula on the summed cross-entropy, equals what this tool takes."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from reptile_cli import rng
from reptile_cli.batched import StackedAdaptation, stack
from reptile_cli.config import EvalConfig, TrainerConfig
from reptile_cli.data.episodes import EvalTask, Task, inner_batches
from reptile_cli.evaluate import Evaluator
from reptile_cli.inner_optim import InnerOptimizer, step_eps
from reptile_cli.models.conv4 import Conv4
from reptile_cli.reptile import get_params

LR, BETA2, EPS = 0.001, 0.999, 1e-8


class OneTask:
    """A task family holding one fixed 5-way 1-shot evaluation task (28x28 images, float64)."""

    kind, metric, ways, splits, checksum = "classification", "acc", 5, ("test",), ""
    shots, query_shots, image_shape = 1, 1, (1, 28, 28)

    def __init__(self):
        g = torch.Generator().manual_seed(3)
        self.task = EvalTask(torch.rand(5, 1, 28, 28, generator=g, dtype=torch.float64), torch.randperm(5, generator=g),
                             torch.rand(5, 1, 28, 28, generator=g, dtype=torch.float64), torch.randperm(5, generator=g))

    def eval_task(self, split, seed, index):
        return self.task


def saved_state(model, step=4000):
    """A trained-looking Adam state: step count, zero first moment (beta1 = 0), positive second moments."""
    g = torch.Generator().manual_seed(1)
    names = [n for n, _ in model.named_parameters()]
    v = {n: torch.rand(p.shape, generator=g, dtype=torch.float64) * 1e-3 for n, p in model.named_parameters()}
    return {"kind": "adam", "step": step, "exp_avg": {n: torch.zeros_like(v[n]) for n in names}, "exp_avg_sq": v}


def reference_first_step(model, state, task, order):
    """tf.train.AdamOptimizer(beta1=0).minimize(per-example cross-entropy vector) for one step, by hand:
    g = sum over the batch of each example's gradient; v <- b2 v + (1 - b2) g^2; m <- g;
    theta <- theta - lr * sqrt(1 - b2^t) / (1 - 0^t) * m / (sqrt(v) + eps), t the step after the saved one."""
    params = get_params(model)
    t = state["step"] + 1
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    x, y = task.support_x[order], task.support_y[order]
    work = copy.deepcopy(model)
    # the gradient of the summed vector loss; batch norm couples the examples, so it is one backward pass of
    # the sum, not a sum of single-example passes
    loss = F.cross_entropy(work(x), y, reduction="none").sum()
    for (n, _), gr in zip(work.named_parameters(), torch.autograd.grad(loss, list(work.parameters()))):
        grads[n] = gr
    out = {}
    for n, p in params.items():
        v = BETA2 * state["exp_avg_sq"][n] + (1 - BETA2) * grads[n] ** 2
        lr_t = LR * math.sqrt(1 - BETA2**t)
        out[n] = p - lr_t * grads[n] / (v.sqrt() + EPS)
    return out, grads


def configs(reduction, convention):
    tcfg = OmegaConf.structured(TrainerConfig(inner_lr=LR, loss_reduction=reduction, adam_eps_convention=convention))
    ecfg = OmegaConf.structured(EvalConfig(inner_steps=1, inner_batch_size=5, path="sequential", chunk_size=1))
    return tcfg, ecfg


def model64():
    torch.manual_seed(0)
    return Conv4(5, filters=8).double()


def max_rel(a, b):
    """||a - b|| / ||b|| over all tensors as one vector (a conv bias before batch norm has a gradient of pure
    rounding noise, ~1e-17, which differs between summation orders; see tests/test_batched.close)."""
    va = torch.cat([a[n].flatten() for n in sorted(a)])
    vb = torch.cat([b[n].flatten() for n in sorted(a)])
    return float((va - vb).norm() / vb.norm())


def test_first_evaluation_step_is_the_references():
    """Sequential evaluation (Evaluator.run_task) and the batched evaluation's inner loop, with the presets'
    loss_reduction=sum and adam_eps_convention=tensorflow, take exactly the reference's first step."""
    model, family = model64(), OneTask()
    state = saved_state(model)
    tcfg, ecfg = configs("sum", "tensorflow")
    order = inner_batches(5, 5, 1, rng.generator(0, "eval/test/inner", 0, 0))[0]
    expected, _ = reference_first_step(model, state, family.task, order)

    ev = Evaluator(family, model, tcfg, ecfg, torch.device("cpu"), torch.float64)
    ev.run_task(get_params(model), state, "test", 0, 0)
    got = get_params(ev.work)
    theta = get_params(model)
    step_got = {n: got[n] - theta[n] for n in got}
    step_expected = {n: expected[n] - theta[n] for n in got}
    assert max_rel(step_got, step_expected) < 1e-9

    adaptation = StackedAdaptation(model, "classification", reduction="sum")
    names = adaptation.names
    p = stack([theta[n] for n in names], 1)
    opt = {"step": state["step"], "exp_avg": stack([state["exp_avg"][n] for n in names], 1),
           "exp_avg_sq": stack([state["exp_avg_sq"][n] for n in names], 1)}
    adaptation.adapt(p, opt, family.task.support_x[None], family.task.support_y[None], order[None, None], tcfg)
    batched = {n: p[i][0] - theta[n] for i, n in enumerate(names)}
    assert max_rel(batched, step_expected) < 1e-9


def test_mean_reduction_steps_with_the_mean_gradient():
    """With loss_reduction=mean the same step uses g / batch: from a carried state whose v was built from
    batch-10 sums (scale 10 g), the mean's step is larger than the sum's; here it is checked against the formula
    with g / 5, and the sum's step against g."""
    model, family = model64(), OneTask()
    state = saved_state(model)
    order = inner_batches(5, 5, 1, rng.generator(0, "eval/test/inner", 0, 0))[0]
    _, g_sum = reference_first_step(model, state, family.task, order)
    theta = get_params(model)
    t = state["step"] + 1
    for reduction, scale in (("mean", 1 / 5), ("sum", 1.0)):
        tcfg, ecfg = configs(reduction, "pytorch")
        ev = Evaluator(family, model, tcfg, ecfg, torch.device("cpu"), torch.float64)
        ev.run_task(get_params(model), state, "test", 0, 0)
        got = get_params(ev.work)
        for n in theta:
            g = g_sum[n] * scale
            v = BETA2 * state["exp_avg_sq"][n] + (1 - BETA2) * g**2
            want = -LR * g / ((v / (1 - BETA2**t)).sqrt() + EPS)  # torch.optim.Adam's form
            assert torch.allclose(got[n] - theta[n], want, rtol=1e-8, atol=1e-15), (reduction, n)


def test_training_loss_is_reported_per_example_under_both_reductions():
    """train/loss stays comparable across reductions: the inner loop reports the mean per-example loss."""
    from reptile_cli.reptile import adapt

    model = model64()
    x, y = torch.rand(10, 1, 28, 28, dtype=torch.float64), torch.arange(10) % 5
    batches = [torch.arange(10)]
    values = {}
    for reduction in ("mean", "sum"):
        m = copy.deepcopy(model)
        opt = InnerOptimizer(m, OmegaConf.structured(TrainerConfig(inner_optimizer="sgd", inner_lr=0.0)))
        values[reduction], _ = adapt(m, opt, Task(x, y), batches, "classification", reduction)
    with torch.no_grad():
        expected = float(F.cross_entropy(model(x), y))
    assert values["mean"] == pytest.approx(expected, rel=1e-12)
    assert values["sum"] == pytest.approx(expected, rel=1e-12)


def test_tensorflow_epsilon_equals_tensorflow_formula():
    """step_eps turns PyTorch's update into TensorFlow's: lr sqrt(1-b2^t) m / (sqrt(v) + eps)."""
    v, m = torch.tensor([1e-14, 1e-6, 1.0], dtype=torch.float64), torch.tensor([1e-7, 1e-3, 0.5], dtype=torch.float64)
    for t in (1, 10, 1000):
        tf = LR * math.sqrt(1 - BETA2**t) * m / (v.sqrt() + EPS)
        torch_form = LR * m / ((v / (1 - BETA2**t)).sqrt() + step_eps(EPS, BETA2, t, "tensorflow"))
        assert torch.allclose(torch_form, tf, rtol=1e-12)
    assert step_eps(EPS, BETA2, 1, "pytorch") == EPS
    with pytest.raises(ValueError):
        step_eps(EPS, BETA2, 1, "keras")
