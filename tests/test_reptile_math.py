"""The core maths against hand-computed values: CI, epsilon schedule, inner batches, meta-updates."""

import copy
import math

import pytest
import torch
from torch import nn

from reptile_cli import rng
from reptile_cli.data.episodes import Task, inner_batches
from reptile_cli.evaluate import summarize
from reptile_cli.inner_optim import InnerOptimizer
from reptile_cli.reptile import fomaml_update, meta_step_size, meta_update, sequential_meta_step


def test_ci_of_known_values():
    mean, ci = summarize([0.4] * 300 + [0.6] * 300)
    assert mean == pytest.approx(0.5, abs=1e-12)
    assert ci == pytest.approx(0.00801, abs=5e-6)
    # by hand: s = sqrt(600 * 0.01 / 599), ci = 1.96 s / sqrt(600)
    assert ci == pytest.approx(1.96 * math.sqrt(6 / 599) / math.sqrt(600), rel=1e-12)


def test_ci_single_value_is_undefined():
    assert math.isnan(summarize([0.7])[1])


def test_epsilon_schedule():
    assert meta_step_size(50, 100, 1.0, 0.0) == pytest.approx(0.5)
    assert meta_step_size(0, 100, 1.0, 0.0) == 1.0
    assert meta_step_size(99, 100, 0.1, 0.0) == pytest.approx(0.001)
    assert meta_step_size(25, 100, 1.0, 0.2) == pytest.approx(0.8)


def test_inner_batches_walk_passes_without_replacement():
    g = torch.Generator().manual_seed(0)
    batches = inner_batches(5, 10, 3, g)  # 30 indices = 6 passes over 5 examples, batches span passes
    assert len(batches) == 3 and all(len(b) == 10 for b in batches)
    flat = torch.cat(batches)
    for p in range(6):
        assert sorted(flat[5 * p:5 * p + 5].tolist()) == [0, 1, 2, 3, 4]
    # 50 examples, 5 batches of 10: exactly one pass (the Omniglot 5-way training task)
    one_pass = torch.cat(inner_batches(50, 10, 5, g))
    assert sorted(one_pass.tolist()) == list(range(50))


def test_meta_updates_by_hand():
    theta = {"w": torch.tensor([1.0, 2.0])}
    target = {"w": torch.tensor([3.0, 0.0])}
    assert torch.allclose(meta_update(theta, target, 0.25)["w"], torch.tensor([1.5, 1.5]))
    assert torch.allclose(fomaml_update(theta, target, 0.5)["w"], torch.tensor([2.5, 2.0]))


def test_sequential_step_with_sgd_matches_hand_computation():
    """Linear model, SGD: phi_i = theta - lr * grad_i, new theta = theta + eps * (mean phi - theta)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False).double()
    theta = model.weight.detach().clone()
    xs = [torch.randn(4, 3, dtype=torch.float64) for _ in range(2)]
    ys = [torch.randn(4, 1, dtype=torch.float64) for _ in range(2)]
    cfg = type("T", (), {"inner_optimizer": "sgd", "inner_lr": 0.1})()
    opt = InnerOptimizer(model, cfg)
    batches = [[torch.arange(4)] for _ in range(2)]
    sequential_meta_step(model, opt, [Task(x, y) for x, y in zip(xs, ys)], batches, "reptile", 0.5, "regression")
    phis = []
    for x, y in zip(xs, ys):
        grad = 2 * (x @ theta.T - y).T @ x / 4
        phis.append(theta - 0.1 * grad)
    expected = theta + 0.5 * ((phis[0] + phis[1]) / 2 - theta)
    assert torch.allclose(model.weight.detach(), expected, atol=1e-12)


def test_adam_state_carries_across_tasks_but_weights_restore():
    """Reference semantics: only weights are restored between tasks; Adam's moments keep accumulating."""
    torch.manual_seed(0)
    model = nn.Linear(2, 1).double()
    cfg = type("T", (), {"inner_optimizer": "adam", "inner_lr": 0.01, "adam_beta1": 0.0, "adam_beta2": 0.999,
                         "adam_eps": 1e-8})()
    opt = InnerOptimizer(model, cfg)
    tasks = [Task(torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)) for _ in range(3)]
    batches = [inner_batches(6, 3, 2, rng.generator(0, "t", 0, i)) for i in range(3)]
    sequential_meta_step(model, opt, tasks, batches, "reptile", 1.0, "regression")
    assert opt.state_dict()["step"] == 6  # 3 tasks x 2 steps, one shared state


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_inner_optimizer_equals_torch_optim(kind):
    """The foreach implementation takes the same steps as torch.optim (float64, 7 steps, beta1 = 0)."""
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    b = copy.deepcopy(a)
    cfg = type("T", (), {"inner_optimizer": kind, "inner_lr": 0.01, "adam_beta1": 0.0, "adam_beta2": 0.999,
                         "adam_eps": 1e-8})()
    ours = InnerOptimizer(a, cfg)
    ref = (torch.optim.Adam(b.parameters(), lr=0.01, betas=(0.0, 0.999), eps=1e-8) if kind == "adam"
           else torch.optim.SGD(b.parameters(), lr=0.01))
    for _ in range(7):
        x = torch.randn(5, 3, dtype=torch.float64)
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, rtol=1e-12, atol=1e-14)


def test_inner_optimizer_state_roundtrip_does_not_alias():
    model = nn.Linear(2, 2)
    cfg = type("T", (), {"inner_optimizer": "adam", "inner_lr": 0.1, "adam_beta1": 0.0, "adam_beta2": 0.999,
                         "adam_eps": 1e-8})()
    opt = InnerOptimizer(model, cfg)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    saved = opt.state_dict()
    frozen = copy.deepcopy(saved)
    other = InnerOptimizer(model, cfg)
    other.load_state_dict(saved)
    model(torch.ones(1, 2)).sum().backward()
    other.step()
    assert other.state_dict()["step"] == 2
    assert all(torch.equal(saved["exp_avg_sq"][k], frozen["exp_avg_sq"][k]) for k in saved["exp_avg_sq"])


def test_counter_seeds_are_stable_and_distinct():
    assert rng.derive_seed(0, "train", 5, 1) == rng.derive_seed(0, "train", 5, 1)
    seeds = {rng.derive_seed(s, st, it, i) for s in (0, 1) for st in ("train", "val") for it in range(3)
             for i in range(3)}
    assert len(seeds) == 36


def test_fused_adam_equals_foreach_for_any_layout():
    """adam_update (fused kernel) == adam_update_foreach, including a channels-last weight with a contiguous
    gradient (the fused kernel pairs elements by memory order, so the gradient must be converted first) and
    moments in another layout (then the foreach fallback runs)."""
    from reptile_cli.inner_optim import adam_update, adam_update_foreach, fused_adam_applies

    torch.manual_seed(0)
    shapes = [(4, 6, 3, 3), (7,), (3, 5)]
    for moments_like_params in (True, False):
        params = [torch.randn(s, dtype=torch.float64) for s in shapes]
        params[0] = params[0].contiguous(memory_format=torch.channels_last)
        fused_p = [p.clone() for p in params]
        if moments_like_params:
            m = [torch.zeros_like(p) for p in params]
        else:
            m = [torch.zeros(p.shape, dtype=p.dtype) for p in params]
        v = [t.clone() for t in m]
        fm, fv = [t.clone() for t in m], [t.clone() for t in v]
        for step in range(1, 6):
            grads = [torch.randn(s, dtype=torch.float64) for s in shapes]  # contiguous: unlike params[0]
            adam_update_foreach(params, grads, m, v, step, 0.01, 0.0, 0.999, 1e-8)
            adam_update(fused_p, grads, fm, fv, step, 0.01, 0.0, 0.999, 1e-8)
        converted = [torch.empty_like(p).copy_(g) for p, g in zip(params, grads)]
        assert fused_adam_applies(fused_p, converted, fm, fv) == moments_like_params
        for a, b in zip(params + m + v, fused_p + fm + fv):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)
