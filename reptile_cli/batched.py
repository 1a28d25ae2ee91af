"""The fast path: adapt every task of a meta-batch (or a chunk of evaluation tasks) at once.

Parameters are stacked on a leading task dimension ``[tasks, ...]`` and one call runs the forward and backward
pass of all tasks. A model with a ``stacked_forward`` (:meth:`reptile_cli.models.conv4.Conv4.stacked_forward`:
grouped convolutions, tasks folded into the channels) runs it under ordinary autograd; any other model is
written as a function of its parameters (``torch.func.functional_call``), its gradient taken with
``torch.func.grad`` and ``vmap``-ed over the tasks. Batch norm keeps no running statistics, which is what makes
the model a pure function of its parameters. The inner optimizer acts on the stacked tensors with the same
elementwise update as the sequential path (:func:`reptile_cli.inner_optim.adam_update`).

Optimizer-state semantics of the batched path (README "Fast path"): the reference carries Adam's moment
estimates from one task to the next, which is sequential by nature. Here every task of a meta-iteration
starts from one shared state; after the iteration the shared state becomes the mean of the tasks' states
(step count advanced by the inner steps of one task). :func:`reptile_cli.reptile.sequential_meta_step` with
``shared_state=True`` computes the same thing one task at a time; tests compare the two in float64.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from reptile_cli.inner_optim import InnerOptimizer, adam_update, eps_convention, is_dense, sgd_update
from reptile_cli.losses import example_losses, reduce_batch
from reptile_cli.reptile import (
    Params,
    TaskMean,
    divide_by,
    fomaml_update,
    get_params,
    meta_update,
    set_params,
)


class StackedAdaptation:
    """Stacked inner-loop adaptation for one model architecture.

    Args:
        model: the network (its own parameters are not used: parameters are passed in, stacked).
        kind: ``classification`` (cross-entropy) or ``regression`` (MSE).
        autocast: optional context factory for the forward pass (bf16).
        reduction: ``mean`` or ``sum`` of the per-example losses of an inner minibatch
            (:func:`reptile_cli.reptile.reduce_batch`).
        use_stacked: run ``model.stacked_forward`` where the model has one (False: ``vmap`` over
            ``functional_call`` all the same; the tests and the bench compare the two).
    """

    def __init__(self, model: nn.Module, kind: str, autocast=None, reduction: str = "mean",
                 use_stacked: bool = True):
        self.model, self.autocast, self.kind, self.reduction = model, autocast, kind, reduction
        self.names = [n for n, _ in model.named_parameters()]
        self.stacked = use_stacked and hasattr(model, "stacked_forward")

        def task_loss(params: Params, x: torch.Tensor, y: torch.Tensor, *noise: torch.Tensor) -> torch.Tensor:
            inputs = (x, list(noise)) if noise else (x,)
            if autocast is None:
                out = functional_call(model, params, inputs)
            else:
                with autocast():
                    out = functional_call(model, params, inputs).float()
            return reduce_batch(example_losses(kind, out, y), reduction)

        self._grad = self._stacked_grad if self.stacked else vmap(grad_and_value(task_loss))
        self._forward = model.stacked_forward if self.stacked else vmap(lambda p, x: functional_call(model, p, (x,)))
        # non-transductive: each of Q query images with the whole support set, per task
        self._forward_each = vmap(vmap(lambda p, x: functional_call(model, p, (x,)), in_dims=(None, 0)))

    def _stacked_grad(self, params: Params, x: torch.Tensor, y: torch.Tensor,
                      *noise: torch.Tensor) -> tuple[Params, torch.Tensor]:
        """Per-task gradients of each task's loss (mean or sum over its minibatch) and those losses ``[T]``,
        by ``model.stacked_forward`` (the tasks are independent, so the gradient of the sum over tasks is each
        task's own gradient); ``noise``: the stacked dropout masks of this step, if any."""
        leaves = {k: p.detach().requires_grad_() for k, p in params.items()}
        with torch.enable_grad():
            with self.autocast() if self.autocast is not None else nullcontext():
                masks = (list(noise),) if noise else ()  # a model without dropout takes no masks argument
                out = self.model.stacked_forward(leaves, x, *masks)  # [T, B, N] logits or [T, B, D] outputs
            out = out.float() if self.autocast is not None else out
            losses = reduce_batch(example_losses(self.kind, out, y), self.reduction)
            grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
        return dict(zip(leaves, grads)), losses.detach()

    def draw_noise(self, generators: list[torch.Generator], batch: int) -> list[torch.Tensor]:
        """The dropout / DropBlock masks of one inner step of T tasks, each task's drawn from its own generator
        as the sequential path draws them (``model.draw_noise``), stacked per layer: ``[T, batch, ...]``."""
        return [torch.stack(masks) for masks in zip(*(self.model.draw_noise(batch, g) for g in generators))]

    def adapt(self, params: list[torch.Tensor], opt: dict, x: torch.Tensor, y: torch.Tensor,
              batches: torch.Tensor, trainer_cfg, keep_before_last: bool = False,
              noise: list[torch.Generator] | None = None) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Run the inner loop of T tasks in place.

        Args:
            params: stacked parameters, ``[T, *shape]`` each, in ``self.names`` order (updated in place).
            opt: stacked optimizer state ``{"step": int, "exp_avg": [...], "exp_avg_sq": [...]}`` (in place).
            x: inputs ``[T, n, ...]``; y: targets ``[T, n]`` (or ``[T, n, 1]``).
            batches: int64 ``[T, steps, B]`` example indices per task and step.
            keep_before_last: also return the parameters just before the last step (FOMAML needs them).
            noise: per task, the generator of its dropout / DropBlock masks (``Task.noise``); None: none.

        Returns:
            (mean per-example loss of the last step per task ``[T]``, whatever the reduction; parameters just
            before the last step or None).
        """
        tasks, steps = batches.shape[:2]
        rows = torch.arange(tasks, device=x.device)[:, None]
        before_last, loss = None, None
        for s in range(steps):
            if keep_before_last and s == steps - 1:
                before_last = [p.clone() for p in params]
            idx = batches[:, s]
            masks = self.draw_noise(noise, idx.shape[1]) if noise is not None else []
            grads, loss = self._grad(dict(zip(self.names, params)), x[rows, idx], y[rows, idx], *masks)
            grads = [grads[n] for n in self.names]
            opt["step"] += 1
            if trainer_cfg.inner_optimizer == "sgd":
                sgd_update(params, grads, trainer_cfg.inner_lr)
            else:
                adam_update(params, grads, opt["exp_avg"], opt["exp_avg_sq"], opt["step"], trainer_cfg.inner_lr,
                            trainer_cfg.adam_beta1, trainer_cfg.adam_beta2, trainer_cfg.adam_eps,
                            eps_convention(trainer_cfg))
        if self.reduction == "sum":
            loss = loss / batches.shape[2]
        return loss.detach(), before_last

    @torch.no_grad()
    def predict(self, params: list[torch.Tensor], support_x: torch.Tensor, query_x: torch.Tensor,
                transductive: bool) -> torch.Tensor:
        """Query outputs ``[T, Q, ...]``: all queries as one batch per task, or each query with the support set
        (``support_x`` ``[T, S, ...]``, ``query_x`` ``[T, Q, ...]``)."""
        p = dict(zip(self.names, params))
        if transductive:
            return self._forward(p, query_x)
        q = query_x.shape[1]
        if self.stacked:  # one query at a time: T * (S + 1) images per pass
            return torch.stack([self._forward(p, torch.cat([support_x, query_x[:, i:i + 1]], 1))[:, -1]
                                for i in range(q)], 1)
        support = support_x[:, None].expand(-1, q, *support_x.shape[1:])
        inputs = torch.cat([support, query_x[:, :, None]], dim=2)  # [T, Q, S + 1, ...]
        return self._forward_each(p, inputs)[:, :, -1]


def stack(tensors: list[torch.Tensor], tasks: int, like: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Each tensor repeated along a new leading task dimension: ``[*shape]`` -> ``[tasks, *shape]``.

    Each task's slice takes the device, dtype and memory layout of the matching tensor of ``like`` (default:
    of the tensor itself), so a channels-last conv kernel stays channels-last per task and
    :meth:`Conv4.stacked_forward` reshapes it to a grouped kernel without copying."""
    out = []
    for i, t in enumerate(tensors):
        ref = t if like is None else like[i]
        if not is_dense(ref):
            ref = ref.contiguous()
        s = torch.empty_strided((tasks, *ref.shape), (ref.numel(), *ref.stride()), dtype=ref.dtype,
                                device=ref.device)
        out.append(s.copy_(t.unsqueeze(0).expand_as(s)))
    return out


def stacked_state(optimizer: InnerOptimizer, tasks: int) -> dict:
    """The optimizer's shared state, copied once per task."""
    opt = {"step": optimizer.step_count}
    if optimizer.kind == "adam":
        opt["exp_avg"], opt["exp_avg_sq"] = stack(optimizer.exp_avg, tasks), stack(optimizer.exp_avg_sq, tasks)
    return opt


def batched_meta_step(model: nn.Module, optimizer: InnerOptimizer, adaptation: StackedAdaptation, tasks: list,
                      batches: list, algorithm: str, eps: float, trainer_cfg,
                      task_mean: TaskMean | None = None) -> float:
    """One outer-loop iteration with all tasks adapted at once (batched optimizer-state semantics).

    Args:
        tasks: the meta-batch (``Task`` each, all of the same size; this process's share of it; their ``noise``
            generators, if any, give the dropout masks).
        batches: per task, its list of inner index batches (as the sequential path draws them).
        task_mean: this process's sums over its tasks -> means over the meta-batch (several processes:
            :mod:`reptile_cli.distributed`); default: divide by ``len(tasks)``.

    Returns:
        mean over tasks of the last inner step's loss.
    """
    task_mean = task_mean or divide_by(len(tasks))
    theta = get_params(model)
    n, names = len(tasks), adaptation.names
    params = stack([theta[k] for k in names], n)
    opt = stacked_state(optimizer, n)
    x, y = torch.stack([t.x for t in tasks]), torch.stack([t.y for t in tasks])
    idx = torch.stack([torch.stack(b) for b in batches]).to(x.device)
    noise = [t.noise for t in tasks] if tasks[0].noise is not None else None
    loss, before_last = adaptation.adapt(params, opt, x, y, idx, trainer_cfg, keep_before_last=algorithm == "fomaml",
                                         noise=noise)
    with torch.no_grad():
        if algorithm == "fomaml":
            sums = [(p - b).sum(0) for p, b in zip(params, before_last)]
        else:
            sums = [p.sum(0) for p in params]
        if optimizer.kind == "adam":
            sums += [t.sum(0) for t in opt["exp_avg"]] + [t.sum(0) for t in opt["exp_avg_sq"]]
        means = task_mean(sums + [loss.sum().reshape(1).to(sums[0].dtype)])
    k = len(names)
    # into the state's own buffers, which keep the parameters' layout (see sequential_meta_step)
    optimizer.restore((opt["step"], means[k:2 * k], means[2 * k:3 * k]))
    update = fomaml_update if algorithm == "fomaml" else meta_update
    set_params(model, update(theta, dict(zip(names, means[:k])), eps))
    return float(means[-1])
