"""Counter-based randomness: every random draw of a task derives from (seed, stream, iteration, index).

Nothing in the tool uses a global random state. A task's generator is a pure function of its coordinates,
so the same seed gives the same tasks whatever the order they are drawn in, the process that draws them
or a resume part-way through a run (the counters are the state; a checkpoint only needs the seed).
"""

from __future__ import annotations

import hashlib

import torch

SCHEME = "blake2b-counter-v1"  # recorded in checkpoints; change it only with a format bump


def derive_seed(seed: int, stream: str, iteration: int = 0, index: int = 0) -> int:
    """A 63-bit seed for one point of the counter space.

    Args:
        seed: the run's (or evaluation's) base seed.
        stream: what the draws are for, e.g. ``"train"``, ``"val"``, ``"test"``, ``"init"``, ``"split"``.
        iteration: meta-iteration (0 for evaluation tasks, whose ``index`` alone identifies them).
        index: task index within the meta-batch or evaluation.

    Returns:
        A non-negative int below 2**63, a stable hash of the four coordinates.
    """
    key = f"{int(seed)}/{stream}/{int(iteration)}/{int(index)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & ((1 << 63) - 1)


def noise_generator(seed: int, iteration: int, index: int, device=None) -> torch.Generator:
    """The generator of training task ``index``'s dropout / DropBlock masks at meta-iteration ``iteration``
    (``Task.noise``): a function of those coordinates alone, so every path, process split and resume draws
    the same masks."""
    return generator(seed, "dropout", iteration, index, device)


def generator(seed: int, stream: str, iteration: int = 0, index: int = 0, device=None) -> torch.Generator:
    """A fresh ``torch.Generator`` (on the CPU, or on ``device``) seeded by :func:`derive_seed` of the same
    coordinates."""
    g = torch.Generator() if device is None else torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, stream, iteration, index))
    return g
