"""The fast path equals the sequential path run with the same semantics (float64, same tasks and seed)."""

import copy

import pytest
import torch
from omegaconf import OmegaConf

from reptile_cli import rng
from reptile_cli.batched import StackedAdaptation, batched_meta_step
from reptile_cli.config import EpisodeConfig, ImageDataConfig, TrainerConfig
from reptile_cli.data.datasets import build_task_family
from reptile_cli.inner_optim import InnerOptimizer
from reptile_cli.models.conv4 import Conv4
from reptile_cli.models.mlp import MLP
from reptile_cli.reptile import inner_batches, sequential_meta_step


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
