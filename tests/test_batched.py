"""The fast path equals the sequential path run with the same semantics (float64, same tasks and seed)."""

import copy

import pytest
import torch
from omegaconf import OmegaConf

from reptile_cli import rng
from reptile_cli.batched import StackedAdaptation, batched_meta_step, stack
from reptile_cli.config import EpisodeConfig, ImageDataConfig, TrainerConfig
from reptile_cli.data.episodes import inner_batches
from reptile_cli.families import build_task_family
from reptile_cli.inner_optim import InnerOptimizer
from reptile_cli.models.conv4 import Conv4
from reptile_cli.models.mlp import MLP
from reptile_cli.models.resnet12 import ResNet12
from reptile_cli.reptile import sequential_meta_step


def close(a, b, rel=1e-8) -> bool:
    """Relative distance of two sets of tensors, flattened together: ||a - b|| <= rel * ||b||.

    Compared as one vector because a conv bias placed just before batch norm has a gradient that is pure
    rounding noise: its values are ~1e-11 in float64 and differ at that level between any two summation
    orders, while changing nothing the network computes.
    """
    a = torch.cat([t.detach().flatten() for t in a])
    b = torch.cat([t.detach().flatten() for t in b])
    return bool((a - b).norm() <= rel * b.norm())


def draw(fam, it, n, tcfg):
    tasks = []
    for i in range(n):
        t = fam.train_task(0, it, i)
        t.x = t.x.double()
        tasks.append(t)
    batches = [inner_batches(len(t.x), tcfg.inner_batch_size, tcfg.inner_steps, rng.generator(0, "inner", it, i))
               for i, t in enumerate(tasks)]
    return tasks, batches


@pytest.mark.parametrize("algorithm", ["reptile", "fomaml"])
def test_batched_meta_step_equals_sequential_shared_state(small_store, algorithm):
    fam = build_task_family(OmegaConf.structured(ImageDataConfig(name="omniglot_small", split="alphabets",
                                                                 root=str(small_store))),
                            OmegaConf.structured(EpisodeConfig(ways=5, train_shots=4)))
    tcfg = OmegaConf.structured(TrainerConfig(inner_steps=3, inner_batch_size=8, algorithm=algorithm))
    torch.manual_seed(0)
    a = Conv4(5).double()
    b = copy.deepcopy(a)
    opt_a, opt_b = InnerOptimizer(a, tcfg), InnerOptimizer(b, tcfg)
    adaptation = StackedAdaptation(b, "classification")
    for it in range(3):  # state carried over iterations too
        tasks, batches = draw(fam, it, 4, tcfg)
        la = sequential_meta_step(a, opt_a, tasks, batches, algorithm, 0.7, "classification", shared_state=True)
        lb = batched_meta_step(b, opt_b, adaptation, tasks, batches, algorithm, 0.7, tcfg)
        assert la == pytest.approx(lb, rel=1e-8)
    assert close(list(b.parameters()), list(a.parameters()))
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["step"] == sb["step"] == 9
    for key in ("exp_avg", "exp_avg_sq"):
        assert close(list(sb[key].values()), list(sa[key].values()))


def with_noise(tasks, it):
    """The trainer's dropout generators: one per task, from (seed, iteration, task index)."""
    for i, t in enumerate(tasks):
        t.noise = rng.noise_generator(0, it, i)
    return tasks


@pytest.mark.parametrize("drop_rate", [0.0, 0.3], ids=["deterministic", "dropout+dropblock"])
@pytest.mark.parametrize("stacked", [True, False], ids=["stacked_forward", "vmap"])
def test_resnet12_batched_meta_step_equals_sequential(small_store, stacked, drop_rate):
    """ResNet-12 on both batched routes (its grouped-convolution stacked forward, and torch.func vmap over
    functional_call) == the sequential per-task path, Adam state carried over iterations (float64); with
    dropout and DropBlock on, both paths draw the same masks from the tasks' generators, and the masks change
    the result."""
    fam = build_task_family(OmegaConf.structured(ImageDataConfig(name="omniglot_small", split="alphabets",
                                                                 root=str(small_store))),
                            OmegaConf.structured(EpisodeConfig(ways=5, train_shots=2)))
    tcfg = OmegaConf.structured(TrainerConfig(inner_steps=2, inner_batch_size=5))
    torch.manual_seed(0)
    a = ResNet12(5, 1, 28, (4, 6, 8, 8), drop_rate=drop_rate, block_size=2).double()
    b, plain = copy.deepcopy(a), copy.deepcopy(a)
    opt_a, opt_b, opt_plain = InnerOptimizer(a, tcfg), InnerOptimizer(b, tcfg), InnerOptimizer(plain, tcfg)
    adaptation = StackedAdaptation(b, "classification", use_stacked=stacked)
    assert adaptation.stacked == stacked
    for it in range(2):
        tasks, batches = draw(fam, it, 3, tcfg)
        tasks_b = [copy.copy(t) for t in tasks]
        if drop_rate:  # each path its own generators (they are consumed), of the same coordinates
            with_noise(tasks, it), with_noise(tasks_b, it)
        la = sequential_meta_step(a, opt_a, tasks, batches, "reptile", 0.5, "classification", shared_state=True)
        lb = batched_meta_step(b, opt_b, adaptation, tasks_b, batches, "reptile", 0.5, tcfg)
        assert la == pytest.approx(lb, rel=1e-8)
        plain_tasks = [copy.copy(t) for t in tasks]
        for t in plain_tasks:
            t.noise = None
        sequential_meta_step(plain, opt_plain, plain_tasks, batches, "reptile", 0.5, "classification",
                             shared_state=True)
    assert close(list(b.parameters()), list(a.parameters()))
    for key in ("exp_avg", "exp_avg_sq"):
        assert close(list(opt_b.state_dict()[key].values()), list(opt_a.state_dict()[key].values()))
    # without masks the same tasks give other weights exactly when the model has dropout
    assert close(list(plain.parameters()), list(a.parameters())) == (drop_rate == 0)


def test_resnet12_stacked_forward_with_masks_equals_each_task():
    """With dropout / DropBlock masks, ``stacked_forward`` == each task's own forward with its masks, values
    and gradients (float64), at 84x84 (block outputs 42, 21, 10, 5) and 32x32 (16, 8, 4, 2)."""
    from torch.func import functional_call

    for size, block in ((84, 5), (32, 2)):
        torch.manual_seed(0)
        model = ResNet12(5, 3, size, (4, 6, 8, 8), drop_rate=0.25, block_size=block).double()
        model = model.to(memory_format=torch.channels_last)
        names, tasks, batch = [n for n, _ in model.named_parameters()], 3, 4
        params = dict(zip(names, stack([p.detach() for p in model.parameters()], tasks)))
        for p in params.values():
            p.add_(0.1 * torch.randn_like(p))
        x = torch.rand(tasks, batch, 3, size, size, dtype=torch.float64)
        adaptation = StackedAdaptation(model, "classification")
        masks = adaptation.draw_noise([rng.noise_generator(0, 0, t) for t in range(tasks)], batch)
        assert [tuple(m.shape) for m in masks] == [(tasks, batch, *s) for s in model.block_shapes]
        leaves = {n: p.clone().requires_grad_() for n, p in params.items()}
        out = model.stacked_forward(leaves, x, masks)
        mix = torch.randn_like(out)
        grads = torch.autograd.grad((out * mix).sum(), list(leaves.values()))
        for t in range(tasks):
            own_masks = model.draw_noise(batch, rng.noise_generator(0, 0, t))  # what the sequential path draws
            assert all(torch.equal(m[t], o) for m, o in zip(masks, own_masks))
            own = {n: params[n][t].clone().requires_grad_() for n in names}
            alone = functional_call(model, own, (x[t], own_masks))
            assert torch.allclose(out[t], alone, rtol=1e-10, atol=1e-12)
            own_grads = torch.autograd.grad((alone * mix[t]).sum(), list(own.values()))
            for n, g, g_alone in zip(names, grads, own_grads):
                assert torch.allclose(g[t], g_alone, rtol=1e-9, atol=1e-11), n
            assert not torch.allclose(alone, functional_call(model, own, (x[t],)))  # the masks act


def test_batched_sgd_regression_equals_sequential():
    from reptile_cli.config import SineDataConfig
    from reptile_cli.data.sine import SineTasks

    fam = SineTasks(OmegaConf.structured(SineDataConfig()), shots=10, train_shots=50)
    tcfg = OmegaConf.structured(TrainerConfig(inner_optimizer="sgd", inner_lr=0.02, inner_steps=5,
                                              inner_batch_size=10))
    torch.manual_seed(0)
    a = MLP().double()
    b = copy.deepcopy(a)
    opt_a, opt_b = InnerOptimizer(a, tcfg), InnerOptimizer(b, tcfg)
    adaptation = StackedAdaptation(b, "regression")
    for it in range(4):
        tasks, batches = draw(fam, it, 3, tcfg)
        for t in tasks:
            t.y = t.y.double()
        sequential_meta_step(a, opt_a, tasks, batches, "reptile", 0.1, "regression", shared_state=True)
        batched_meta_step(b, opt_b, adaptation, tasks, batches, "reptile", 0.1, tcfg)
    assert close(list(b.parameters()), list(a.parameters()))


# every model of the zoo with a stacked forward: (channels, size, factory); Conv4 at the zoo's widths 32/64/128
STACKED_MODELS = {
    "conv4 omniglot 64": (1, 28, lambda: Conv4(5, 1, 28, 64, 2, False)),
    "conv4 miniimagenet 32": (3, 84, lambda: Conv4(5, 3, 84, 32, 1, True)),
    "conv4 cifar 64": (3, 32, lambda: Conv4(5, 3, 32, 64, 1, True)),
    "conv4 cifar 128": (3, 32, lambda: Conv4(5, 3, 32, 128, 1, True)),
    "resnet12 narrow widths 84": (3, 84, lambda: ResNet12(5, 3, 84, (4, 8, 12, 16))),
    "resnet12 widths 32": (3, 32, lambda: ResNet12(5, 3, 32, (8, 16, 20, 24), slope=0.2)),
}


@pytest.mark.parametrize("which", list(STACKED_MODELS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_stacked_forward_equals_each_task(which, channels_last):
    """``stacked_forward`` (grouped convolutions and batched matrix products) == each task's own forward,
    batch norm per task, and so are the gradients of every task's parameters (float64)."""
    from torch.func import functional_call

    torch.manual_seed(0)
    channels, size, make = STACKED_MODELS[which]
    model = make().double()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    names = [n for n, _ in model.named_parameters()]
    tasks = 3
    params = dict(zip(names, stack([p.detach() for p in model.parameters()], tasks)))
    for p in params.values():  # different weights per task
        p.add_(0.1 * torch.randn_like(p))
    x = torch.rand(tasks, 4, channels, size, size, dtype=torch.float64)
    leaves = {n: p.clone().requires_grad_() for n, p in params.items()}
    out = model.stacked_forward(leaves, x)
    assert out.shape == (tasks, 4, 5)
    mix = torch.randn_like(out)  # an arbitrary loss, so every logit's gradient differs
    grads = torch.autograd.grad((out * mix).sum(), list(leaves.values()))
    for t in range(tasks):
        own = {n: params[n][t].clone().requires_grad_() for n in names}
        alone = functional_call(model, own, (x[t],))
        assert torch.allclose(out[t], alone, rtol=1e-10, atol=1e-12)
        own_grads = torch.autograd.grad((alone * mix[t]).sum(), list(own.values()))
        for n, g, g_alone in zip(names, grads, own_grads):  # conv biases before batch norm: zero up to rounding
            assert torch.allclose(g[t], g_alone, rtol=1e-9, atol=1e-11), n
    # and differs from the first task's weights used for all: the tasks really are separate
    assert not torch.allclose(out[1], functional_call(model, {n: params[n][0] for n in names}, (x[1],)))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("pad", [(0, 1, 0, 1), (1, 1, 1, 1), (2, 0, 1, 3)])
def test_padded_relu_equals_relu_then_pad(pad, channels_last):
    """PaddedReLU == F.pad(F.relu(x)) in value, memory format and gradient (float64 gradcheck)."""
    from reptile_cli.models.conv4 import PaddedReLU

    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = PaddedReLU.apply(x, pad)
    assert torch.equal(out, torch.nn.functional.pad(torch.relu(x), pad))
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: PaddedReLU.apply(t, pad), (x,))


@pytest.mark.parametrize("stride,size", [(2, 5), (2, 9), (1, 6)])
@pytest.mark.parametrize("kernel_channels_last", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_grouped_conv_matmul_equals_grouped_conv(stride, size, kernel_channels_last, batch):
    """GroupedConvMatmul == F.conv2d(groups=T) in value and in all three gradients (float64), whatever the
    kernels' layout; the output and the input gradient are channels-last."""
    from reptile_cli.models.stacked_ops import GroupedConvMatmul

    torch.manual_seed(0)
    tasks, c, o = 3, 4, 5
    w = torch.randn(tasks, o, c, 3, 3, dtype=torch.float64)
    if kernel_channels_last:  # each task's kernel channels-last, as batched.stack keeps a placed model's
        w = torch.empty_strided(w.shape, (o * c * 9, c * 9, 1, 3 * c, c), dtype=w.dtype).copy_(w)
    b = torch.randn(tasks, o, dtype=torch.float64)
    x = torch.randn(batch, tasks * c, size, size, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    mix = None
    grads = {}
    for name in ("matmul", "conv2d"):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        if name == "matmul":
            out = GroupedConvMatmul.apply(*leaves, tasks, stride)
            assert out.is_contiguous(memory_format=torch.channels_last)
        else:
            out = torch.nn.functional.conv2d(leaves[0], leaves[1].reshape(-1, c, 3, 3), leaves[2].reshape(-1),
                                             stride=stride, groups=tasks)
        mix = torch.randn_like(out) if mix is None else mix
        grads[name] = (out, *torch.autograd.grad((out * mix).sum(), leaves))
    for got, want in zip(grads["matmul"], grads["conv2d"]):
        assert got.shape == want.shape
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


def test_stacked_grad_under_bfloat16_autocast():
    """With dtype=bfloat16 on a CPU the batched path runs (the matmul convolutions take the autocast's
    bfloat16 activations and float32 weights) and gives float32 gradients near the float32 ones."""
    import functools

    from reptile_cli.models import place

    torch.manual_seed(0)
    model = place(Conv4(5), torch.device("cpu"), torch.float32)
    names = [n for n, _ in model.named_parameters()]
    params = dict(zip(names, stack([p.detach() for p in model.parameters()], 4)))
    x, y = torch.randn(4, 5, 1, 28, 28), torch.randint(0, 5, (4, 5))
    autocast = functools.partial(torch.autocast, device_type="cpu", dtype=torch.bfloat16)
    g16, loss16 = StackedAdaptation(model, "classification", autocast)._stacked_grad(params, x, y)
    g32, loss32 = StackedAdaptation(model, "classification")._stacked_grad(params, x, y)
    assert torch.allclose(loss16, loss32, atol=0.02)
    for n in names:
        assert g16[n].dtype == torch.float32 and g16[n].shape == g32[n].shape
        if n.endswith("conv.weight") or n.startswith("head"):
            assert (g16[n] - g32[n]).norm() < 0.25 * g32[n].norm(), n


@pytest.mark.parametrize("inner_state", ["checkpoint", "fresh"])
def test_batched_evaluation_equals_sequential(small_store, inner_state):
    """Same tasks, same seed: the batched evaluation (uneven chunks) gives the per-task scores of the sequential
    one, for both protocols and before adaptation (float64)."""
    from reptile_cli.config import EvalConfig
    from reptile_cli.evaluate import Evaluator
    from reptile_cli.reptile import get_params

    fam = build_task_family(OmegaConf.structured(ImageDataConfig(name="omniglot_small", split="alphabets",
                                                                 root=str(small_store))),
                            OmegaConf.structured(EpisodeConfig(ways=5, shots=1, query_shots=2)))
    tcfg = OmegaConf.structured(TrainerConfig())
    torch.manual_seed(0)
    model = Conv4(5).double()
    opt = InnerOptimizer(model, tcfg)
    task = fam.train_task(0, 0, 0)
    for _ in range(3):  # a trained-ish model and a non-trivial saved optimizer state
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(task.x.double()), task.y).backward()
        opt.step()
    results = {}
    for path in ("sequential", "batched"):
        ecfg = OmegaConf.structured(EvalConfig(inner_steps=8, inner_batch_size=3, path=path, chunk_size=3,
                                               inner_state=inner_state))
        ev = Evaluator(fam, model, tcfg, ecfg, torch.device("cpu"), torch.float64)
        results[path] = ev.evaluate(get_params(model), opt.state_dict(), "test", 7, 0, progress=False)
    a, b = results["sequential"], results["batched"]
    assert a.after == b.after and a.other == b.other and a.before == b.before
    assert len(set(a.after)) > 1  # the scores are not all alike


def test_shared_state_keeps_the_parameters_layout(small_store):
    """After a meta-step the shared Adam moments keep the parameters' memory layout (channels-last on a CPU),
    as they have after a resume: otherwise the fused Adam kernel would run on one and not the other, and a
    resumed run would round differently from an uninterrupted one."""
    from reptile_cli.models import place

    fam = build_task_family(OmegaConf.structured(ImageDataConfig(name="omniglot_small", split="alphabets",
                                                                 root=str(small_store))),
                            OmegaConf.structured(EpisodeConfig(ways=5, train_shots=4)))
    tcfg = OmegaConf.structured(TrainerConfig(inner_steps=2, inner_batch_size=8))
    for batched in (True, False):
        model = place(Conv4(5), torch.device("cpu"), torch.float32)
        opt = InnerOptimizer(model, tcfg)
        tasks, batches = draw(fam, 0, 3, tcfg)
        for t in tasks:
            t.x = t.x.float()
        if batched:
            batched_meta_step(model, opt, StackedAdaptation(model, "classification"), tasks, batches, "reptile",
                              0.5, tcfg)
        else:
            sequential_meta_step(model, opt, tasks, batches, "reptile", 0.5, "classification", shared_state=True)
        assert model.blocks[1].conv.weight.is_contiguous(memory_format=torch.channels_last)
        for p, m, v in zip(model.parameters(), opt.exp_avg, opt.exp_avg_sq):
            assert m.stride() == p.stride() == v.stride()
