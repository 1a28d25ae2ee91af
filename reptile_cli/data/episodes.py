"""Episodes (tasks): what one training task and one evaluation task hold, and how they are drawn.

A *training task* is ``train_shots`` examples of each of N classes, all fed to the inner loop (no query set,
as the reference). An *evaluation task* is K support and ``query_shots`` query examples of each of N classes,
support and query disjoint. Labels are a fresh random permutation of 0..N-1 per task (sorted class ids would
leak a label prior). Every draw comes from the counter-based generator of (seed, stream, iteration, index),
see :mod:`reptile_cli.rng`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from reptile_cli import rng
from reptile_cli.errors import ConfigError, DataError


@dataclass
class Task:
    """A training task: ``x`` ``[N*train_shots, C, H, W]`` (or ``[points, 1]``), ``y`` ``[N*train_shots]``."""

    x: torch.Tensor
    y: torch.Tensor


@dataclass
class EvalTask:
    """An evaluation task: support ``[N*K, ...]`` / ``[N*K]`` and query ``[N*Q, ...]`` / ``[N*Q]``."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor


class TaskFamily(Protocol):
    """What the trainer and evaluator need from a dataset: tasks by counter, a loss and a metric."""

    kind: str  # "classification" or "regression"
    metric: str  # "acc" (higher is better) or "mse" (lower is better)
    ways: int  # logits of the model's head (1 for regression)
    splits: tuple[str, ...]  # the splits (or streams) it can draw evaluation tasks from
    checksum: str  # identifies the data (recorded in provenance and checkpoints)

    def train_task(self, seed: int, iteration: int, index: int) -> Task: ...

    def eval_task(self, split: str, seed: int, index: int) -> EvalTask: ...


class ClassPool:
    """The classes of one split: images of class c are ``images[start[c] + i]``, optionally rotated.

    Args:
        images: uint8 ``[num_images, H, W, C]`` (a tensor in memory, or an object with the same indexing
            that reads lazily, see :class:`reptile_cli.data.datasets.ImageStore`).
        start: int64 ``[num_classes]``, first image of each class in ``images``.
        count: int64 ``[num_classes]``, images per class.
        rotation: int64 ``[num_classes]``, quarter turns (0-3) applied to every image of the class.
        names: one human-readable name per class (used in error messages).
    """

    def __init__(self, images, start: torch.Tensor, count: torch.Tensor, rotation: torch.Tensor,
                 names: list[str]):
        self.images, self.start, self.count, self.rotation, self.names = images, start, count, rotation, names

    def __len__(self) -> int:
        return len(self.names)

    def load(self, cls: int, picks: torch.Tensor) -> torch.Tensor:
        """Images ``picks`` (indices within class ``cls``) as float ``[len(picks), C, H, W]`` in [0, 1]."""
        idx = (int(self.start[cls]) + picks).tolist()
        x = self.images[idx] if isinstance(self.images, torch.Tensor) else self.images.take(idx)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        k = int(self.rotation[cls])
        return torch.rot90(x, k, dims=(2, 3)) if k else x

    def check_size(self, needed: int, split: str, what: str) -> None:
        """Raise DataError naming the first class with fewer than ``needed`` images."""
        small = (self.count < needed).nonzero()
        if len(small):
            c = int(small[0])
            raise DataError(
                f"class {self.names[c]!r} of split {split!r} has {int(self.count[c])} images but {what} needs "
                f"{needed}: lower the shots or remove the class ({len(small)} classes too small)")


class ClassificationTasks:
    """N-way tasks drawn from the class pools of a dataset's splits.

    Args:
        pools: split name -> :class:`ClassPool` (``train`` required; ``val``/``test`` when the split has them).
        ways: N.
        shots: K support examples per class at evaluation.
        query_shots: query examples per class at evaluation.
        train_shots: examples per class of a training task.
        checksum: data identity for provenance.
        image_shape: (C, H, W) of the images, checked against the model.

    Raises:
        ConfigError: N larger than a split's class count, or a non-positive count.
        DataError: a class with fewer images than a task needs (names the class and the counts).
    """

    kind = "classification"
    metric = "acc"

    def __init__(self, pools: dict[str, ClassPool], ways: int, shots: int, query_shots: int,
                 train_shots: int, checksum: str = "", image_shape: tuple[int, int, int] | None = None):
        for name, value in (("ways", ways), ("shots", shots), ("query_shots", query_shots),
                            ("train_shots", train_shots)):
            if value < 1:
                raise ConfigError(f"episode.{name}={value}: must be at least 1")
        self.pools, self.ways, self.shots, self.query_shots, self.train_shots = (
            pools, ways, shots, query_shots, train_shots)
        self.splits = tuple(s for s in ("val", "test") if s in pools)
        self.checksum = checksum
        self.image_shape = image_shape  # (C, H, W) of the images it yields
        for split, pool in pools.items():
            if len(pool) < ways:
                raise ConfigError(f"episode.ways={ways} but split {split!r} has only {len(pool)} classes: "
                                  f"lower episode.ways")
            if split == "train":
                pool.check_size(train_shots, split, f"episode.train_shots={train_shots}")
            else:
                pool.check_size(shots + query_shots, split,
                                f"episode.shots + episode.query_shots = {shots}+{query_shots}")

    def _draw(self, pool: ClassPool, per_class: int, g: torch.Generator):
        classes = torch.randperm(len(pool), generator=g)[: self.ways]
        labels = torch.randperm(self.ways, generator=g)
        xs = [pool.load(int(c), torch.randperm(int(pool.count[c]), generator=g)[:per_class]) for c in classes]
        x = torch.stack(xs)  # [N, per_class, C, H, W]
        y = labels[:, None].expand(-1, per_class)  # [N, per_class]
        return x, y

    def train_task(self, seed: int, iteration: int, index: int) -> Task:
        """Training task ``index`` of meta-iteration ``iteration``: ``[N*train_shots, C, H, W]``."""
        x, y = self._draw(self.pools["train"], self.train_shots, rng.generator(seed, "train", iteration, index))
        return Task(x.flatten(0, 1), y.flatten())

    def eval_task(self, split: str, seed: int, index: int) -> EvalTask:
        """Evaluation task ``index`` of ``split``: support ``[N*K, ...]``, query ``[N*Q, ...]``, disjoint.

        Raises:
            ConfigError: the dataset has no such split.
        """
        if split not in self.pools:
            raise ConfigError(f"eval.split={split!r}: this dataset's evaluation splits are "
                              f"{', '.join(self.splits) or 'none'} (and train)")
        x, y = self._draw(self.pools[split], self.shots + self.query_shots,
                          rng.generator(seed, f"eval/{split}", 0, index))
        k = self.shots
        return EvalTask(x[:, :k].flatten(0, 1), y[:, :k].flatten(), x[:, k:].flatten(0, 1), y[:, k:].flatten())
