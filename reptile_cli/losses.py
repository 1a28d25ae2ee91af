"""Inner-loop losses of the supervised task families: per-example losses and their reduction over a minibatch.
Pure tensor maths, used by the tasks (:mod:`reptile_cli.data.episodes`), the fast path and the evaluator."""

from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum")


def loss_reduction(trainer_cfg) -> str:
    """``trainer.loss_reduction`` of a config (``mean`` for configs written before it existed)."""
    value = getattr(trainer_cfg, "loss_reduction", None) or "mean"
    value = str(getattr(value, "value", value))
    if value not in REDUCTIONS:
        raise ValueError(f"trainer.loss_reduction={value!r}: use mean or sum")
    return value


def example_losses(kind: str, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example losses ``[..., B]``: cross-entropy of logits ``[..., B, N]`` against labels ``[..., B]``
    (classification), or the squared error of outputs ``[..., B, D]`` against targets of the same shape,
    averaged over D (regression; D = 1 for sine)."""
    if kind == "classification":
        flat = F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1), reduction="none")
        return flat.reshape(targets.shape)
    return ((outputs - targets) ** 2).mean(-1)


def reduce_batch(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    """The inner-loop objective from per-example losses ``[..., B]`` -> ``[...]``.

    ``mean`` averages over the minibatch (PyTorch's default for ``F.cross_entropy``); ``sum`` adds them up, as
    the reference implementation does (it hands TensorFlow's Adam the per-example cross-entropy vector, whose
    gradient is the sum over the minibatch; REFERENCE.md "Loss scale"). Adam is invariant to a constant scale
    of the loss only while the batch size stays the same: evaluation from the trained Adam state with another
    batch size takes steps of another size under ``sum``.
    """
    return losses.sum(-1) if reduction == "sum" else losses.mean(-1)
