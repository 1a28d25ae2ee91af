"""Several processes on one meta-batch, with ``torch.distributed`` (launched by ``torchrun``).

Reptile parallelises over the tasks of a meta-batch: rank r adapts a contiguous block of the task indices
0..n-1 (blocks differ by at most one task when n is not a multiple of the world size), and the sums of the
adapted weights, of the inner optimizer states and of the losses are all-reduced and divided by n, so the
update is the mean over all n tasks, never a mean of per-rank means. A task's randomness depends only on
(seed, iteration, task index) (:mod:`reptile_cli.rng`), so the result does not depend on which rank ran it.
Every task starts from one shared optimizer state (the batched semantics, :mod:`reptile_cli.batched`),
whatever ``trainer.path`` says: carrying Adam's moments from task to task cannot be split across processes.

Backends: gloo on CPUs, NCCL on CUDA devices (one GPU per local rank).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from reptile_cli.errors import ConfigError


def world_size_from_env() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_from_env() -> int:
    return int(os.environ.get("RANK", "0"))


def block(n: int, world: int, rank: int) -> range:
    """The task indices of ``rank`` when ``n`` tasks are split into ``world`` contiguous blocks whose sizes
    differ by at most one (the first ``n % world`` ranks take one more). Example: 5 tasks on 2 ranks ->
    ``range(0, 3)`` and ``range(3, 5)``."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


@dataclass
class Distributed:
    """This process's place in the process group.

    Attributes:
        rank, world: global rank and number of processes.
        local_rank: rank on this machine (selects the GPU).
        backend: ``gloo`` or ``nccl``.
    """

    rank: int
    world: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def tasks(self, n: int) -> range:
        """This rank's block of task indices 0..n-1 (see :func:`block`)."""
        return block(n, self.world, self.rank)

    def sum(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Element-wise sums over all ranks, of tensors of any shapes, in one all-reduce (a flat buffer)."""
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        out, start = [], 0
        for t in tensors:  # same memory layout as the input (channels-last weights stay channels-last)
            out.append(torch.empty_like(t).copy_(flat[start:start + t.numel()].view(t.shape)))
            start += t.numel()
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (any picklable value)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def init_from_env(device_kind: str) -> Distributed | None:
    """Join the process group that ``torchrun`` describes in the environment; None for a single process.

    Args:
        device_kind: the configured device (``cpu``, ``cuda``, ``auto``, ``mps``); CUDA uses NCCL and one GPU
            per local rank, everything else gloo.

    Raises:
        ConfigError: more processes on a machine than GPUs, or MPS (no multi-process backend).
    """
    world = world_size_from_env()
    if world <= 1:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_kind == "cuda" or (device_kind == "auto" and torch.cuda.is_available())
    if device_kind == "mps":
        raise ConfigError("device=mps cannot run several processes (no distributed backend): use device=cpu")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible): start at "
                              f"most that many processes per node (torchrun --nproc_per_node)")
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def check_meta_batch(meta_batch_size: int, world: int) -> None:
    """Raises ConfigError when some rank would get no task of the meta-batch."""
    if meta_batch_size < world:
        raise ConfigError(f"trainer.meta_batch_size={meta_batch_size} is smaller than the {world} processes, so some "
                          f"would have no task: start at most {meta_batch_size} (torchrun --nproc_per_node)")
