"""The Reptile maths: inner-loop adaptation, the meta-update and the meta step size schedule. No I/O.

Paper: Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms" (arXiv:1803.02999),
Algorithm 2 (batched Reptile) and section 5 (first-order MAML). Semantics of the reference implementation:
the inner optimizer (Adam with beta1 = 0) keeps its moment estimates from one training task to the next;
only the model weights are restored between tasks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from reptile_cli.inner_optim import InnerOptimizer

Params = dict[str, torch.Tensor]


def meta_step_size(iteration: int, total: int, initial: float, final: float) -> float:
    """Linearly annealed epsilon: ``(i/N) * final + (1 - i/N) * initial`` (reference run_*.py; paper 1.0 -> 0).

    Args:
        iteration: 0-based meta-iteration i.
        total: meta-iterations N of the run.
    """
    frac = iteration / total
    return frac * final + (1.0 - frac) * initial


def get_params(model: nn.Module) -> Params:
    """A detached copy of every parameter (the model has no buffers: batch norm keeps no statistics)."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@torch.no_grad()
def set_params(model: nn.Module, params: Params) -> None:
    """Copy ``params`` into the model in place (optimizer state keyed by parameter stays attached)."""
    for n, p in model.named_parameters():
        p.copy_(params[n])


def adapt(model: nn.Module, optimizer: InnerOptimizer, task, plan: list, kind: str, reduction: str = "mean",
          autocast=None, keep_before_last: bool = False) -> tuple[float, Params | None]:
    """Run the inner loop in place: one optimizer step per item of ``plan`` (``task.plan(...)``), each on the
    objective ``task.step_loss(model, item, ...)``. Any task works that has those two methods: a supervised
    :class:`reptile_cli.data.episodes.Task` (items: index batches) or an RL task (items: rollout seeds).

    Args:
        task: the task (on the model's device).
        plan: what each step uses, from ``task.plan``.
        kind: ``classification``, ``regression`` or ``rl``.
        reduction: ``mean`` or ``sum`` of a supervised minibatch's per-example losses.
        autocast: optional context factory for the forward pass (bf16).
        keep_before_last: also return the parameters just before the last step (FOMAML needs them).

    Returns:
        (what the last step reports: its mean per-example loss, or the mean return of its episodes;
        parameters just before the last step or None).
    """
    before_last = None
    value = torch.zeros(())
    for i, item in enumerate(plan):
        if keep_before_last and i == len(plan) - 1:
            before_last = get_params(model)
        optimizer.zero_grad()
        objective, value = task.step_loss(model, item, kind, reduction, autocast)
        objective.backward()
        optimizer.step()
    return float(value), before_last  # one host sync per task, not per step


@torch.no_grad()
def meta_update(theta: Params, targets: Params, eps: float) -> Params:
    """Reptile: ``theta + eps * (target - theta)``, with ``target`` the mean adapted weights (Algorithm 2)."""
    return {n: theta[n] + eps * (targets[n] - theta[n]) for n in theta}


@torch.no_grad()
def fomaml_update(theta: Params, last_steps: Params, eps: float) -> Params:
    """First-order MAML: ``theta + eps * g`` with ``g`` the mean last-step difference (paper section 5)."""
    return {n: theta[n] + eps * last_steps[n] for n in theta}


# Sums over this process's tasks -> means over the meta-batch's tasks (all processes), tensor by tensor.
TaskMean = Callable[[list[torch.Tensor]], list[torch.Tensor]]


def divide_by(n: int) -> TaskMean:
    """The :data:`TaskMean` of a single process holding all ``n`` tasks."""
    return lambda sums: [s / n for s in sums]


def sequential_meta_step(model: nn.Module, optimizer: InnerOptimizer, tasks: list, batches: list,
                         algorithm: str, eps: float, kind: str, autocast=None, shared_state: bool = False,
                         task_mean: TaskMean | None = None, reduction: str = "mean") -> float:
    """One outer-loop iteration on the reference (sequential) path, updating ``model`` in place.

    Each task starts from theta. With ``shared_state=False`` (the reference) it also starts from the
    optimizer state left by the previous task; with ``shared_state=True`` (the batched semantics, see
    :mod:`reptile_cli.batched`) every task starts from the state at the start of the iteration and the
    optimizer ends with the mean of the tasks' states.

    Args:
        tasks: the meta-batch, :class:`reptile_cli.data.episodes.Task` each (this process's share of it).
        batches: per task, its list of inner index batches.
        algorithm: ``reptile`` or ``fomaml``.
        eps: meta step size of this iteration.
        task_mean: turns this process's sums over its tasks into means over the whole meta-batch (see
            :data:`TaskMean`); default: divide by ``len(tasks)``. Needs ``shared_state=True`` when the
            meta-batch is split across processes.
        reduction: ``mean`` or ``sum`` over each inner minibatch (:func:`reduce_batch`).

    Returns:
        mean over tasks of the last inner step's mean per-example loss.
    """
    task_mean = task_mean or divide_by(len(tasks))
    theta = get_params(model)
    names = list(theta)
    total = {n: torch.zeros_like(p) for n, p in theta.items()}
    start = optimizer.snapshot() if shared_state else None
    adam_shared = shared_state and optimizer.kind == "adam"
    state_sums = [torch.zeros_like(t) for t in optimizer.exp_avg + optimizer.exp_avg_sq] if adam_shared else []
    loss_sum = torch.zeros((), dtype=next(iter(theta.values())).dtype, device=next(iter(theta.values())).device)
    for task, task_batches in zip(tasks, batches):
        if shared_state:
            optimizer.restore(start)
        last, before_last = adapt(model, optimizer, task, task_batches, kind, reduction, autocast,
                                  keep_before_last=algorithm == "fomaml")
        loss_sum += last
        if adam_shared:
            torch._foreach_add_(state_sums, optimizer.exp_avg + optimizer.exp_avg_sq)
        with torch.no_grad():
            for n, p in model.named_parameters():
                total[n] += p - before_last[n] if algorithm == "fomaml" else p
        set_params(model, theta)
    end_step = optimizer.step_count
    means = task_mean([total[n] for n in names] + state_sums + [loss_sum.reshape(1)])
    if shared_state:
        k = len(names)
        # into the state's own buffers: they keep the parameters' memory layout, as after a resume (the fused
        # Adam kernel runs only on matching layouts, so a layout change would change the rounding)
        optimizer.restore((end_step if tasks else start[0], means[k:2 * k], means[2 * k:3 * k]))
    update = fomaml_update if algorithm == "fomaml" else meta_update
    set_params(model, update(theta, dict(zip(names, means)), eps))
    return float(means[-1])
