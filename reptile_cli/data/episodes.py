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
from reptile_cli.losses import example_losses, reduce_batch

# The metrics task families report, and which way is better (validation, best.pt, sweep ranking).
HIGHER_IS_BETTER = {"acc": True, "mse": False, "return": True}
METRIC_NAMES = {"acc": "accuracy", "mse": "MSE", "return": "return"}


@dataclass
class Task:
    """A supervised task: ``x`` ``[n, C, H, W]`` (or ``[points, 1]``), ``y`` ``[n]`` (or ``[points, 1]``): the
    examples of a training task, or an evaluation task's support set.

    What the inner loop asks of any task (supervised here; RL tasks in :mod:`reptile_cli.rl.tasks`): ``to``
    (device, dtype), ``plan`` (what each inner step uses) and ``step_loss`` (the objective of one step).

    ``noise``: for a model with dropout / DropBlock (``model.noisy``), the generator its masks are drawn from,
    one forward pass after the other (the trainer gives each training task its own, from (seed, iteration,
    task index)); None: the forward pass is deterministic (evaluation tasks, models without noise).
    """

    x: torch.Tensor
    y: torch.Tensor
    noise: torch.Generator | None = None

    def to(self, device, dtype) -> Task:
        self.x = self.x.to(device, dtype)
        self.y = self.y.to(device, dtype) if self.y.is_floating_point() else self.y.to(device)
        return self

    def plan(self, batch_size: int, steps: int, generator: torch.Generator) -> list[torch.Tensor]:
        """The example indices of each inner step: a walk through reshuffled passes over the examples
        (:func:`inner_batches`)."""
        return inner_batches(len(self.x), batch_size, steps, generator)

    def step_loss(self, model, batch: torch.Tensor, kind: str, reduction: str = "mean", autocast=None):
        """(the inner objective on examples ``batch``: per-example losses reduced by ``reduction``, their mean
        per example for reporting)."""
        inputs = (self.x[batch],) if self.noise is None else (self.x[batch], model.draw_noise(len(batch), self.noise))
        if autocast is None:
            losses = example_losses(kind, model(*inputs), self.y[batch])
        else:
            with autocast():
                out = model(*inputs)
            losses = example_losses(kind, out.float(), self.y[batch])
        return reduce_batch(losses, reduction), losses.detach().mean()


def inner_batches(num_examples: int, batch_size: int, num_batches: int,
                  generator: torch.Generator) -> list[torch.Tensor]:
    """Index batches for the inner loop: a walk through shuffled passes over the task's examples.

    Each pass is a fresh permutation; a batch may span the end of one pass and the start of the next
    (reference ``_mini_batches`` without replacement), so no example repeats until all were used.

    Returns:
        ``num_batches`` int64 tensors of ``batch_size`` indices each.

    Raises:
        ValueError: a non-positive size.
    """
    if batch_size < 1 or num_batches < 1 or num_examples < 1:
        raise ValueError("inner batches need positive sizes")
    needed = batch_size * num_batches
    passes = -(-needed // num_examples)
    order = torch.cat([torch.randperm(num_examples, generator=generator) for _ in range(passes)])
    return list(order[:needed].view(num_batches, batch_size))


@dataclass
class EvalTask:
    """An evaluation task: support ``[N*K, ...]`` / ``[N*K]`` and query ``[N*Q, ...]`` / ``[N*Q]``."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor


class TaskFamily(Protocol):
    """What the trainer and evaluator need from a dataset: tasks by counter, a loss and a metric."""

    kind: str  # "classification", "regression" or "rl"
    metric: str  # "acc", "mse" or "return" (HIGHER_IS_BETTER says which way is better)
    train_metric: str  # what the inner loop reports as train/<train_metric>: "loss" (supervised) or "return"
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
            raise ConfigError(
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
        checked: the splits whose class and image counts must suffice for the tasks (default: all; an
            evaluation checks only the split it draws from).

    Raises:
        ConfigError: N larger than a split's class count, or a non-positive count.
        DataError: a class with fewer images than a task needs (names the class and the counts).
    """

    kind = "classification"
    metric = "acc"
    train_metric = "loss"

    def __init__(self, pools: dict[str, ClassPool], ways: int, shots: int, query_shots: int,
                 train_shots: int, checksum: str = "", image_shape: tuple[int, int, int] | None = None,
                 checked: tuple[str, ...] | None = None):
        for name, value in (("ways", ways), ("shots", shots), ("query_shots", query_shots),
                            ("train_shots", train_shots)):
            if value < 1:
                raise ConfigError(f"episode.{name}={value}: must be at least 1")
        self.pools, self.ways, self.shots, self.query_shots, self.train_shots = (
            pools, ways, shots, query_shots, train_shots)
        self.splits = tuple(s for s in ("val", "test") if s in pools)
        self.checksum = checksum
        self.image_shape = image_shape  # (C, H, W) of the images it yields
        self.seeded_split = True  # whether the class split is drawn from dataset.split_seed (set by its maker)
        for split, pool in pools.items():
            if checked is not None and split not in checked:
                continue
            if len(pool) < ways:
                raise ConfigError(f"episode.ways={ways} but split {split!r} has only {len(pool)} classes: "
                                  f"lower episode.ways")
            if split == "train":
                pool.check_size(train_shots, split, f"episode.train_shots={train_shots}")
            else:
                pool.check_size(shots + query_shots, split,
                                f"episode.shots + episode.query_shots = {shots}+{query_shots}")

    def _pick(self, pool: ClassPool, per_class: int, g: torch.Generator):
        """(classes ``[N]``, labels ``[N]``, image indices within each class ``[N, per_class]``)."""
        classes = torch.randperm(len(pool), generator=g)[: self.ways]
        labels = torch.randperm(self.ways, generator=g)
        picks = torch.stack([torch.randperm(int(pool.count[c]), generator=g)[:per_class] for c in classes])
        return classes, labels, picks

    @staticmethod
    def _load(pool: ClassPool, classes, labels, picks):
        x = torch.stack([pool.load(int(c), p) for c, p in zip(classes, picks)])  # [N, per_class, C, H, W]
        y = torch.as_tensor(labels)[:, None].expand(-1, picks.shape[1])  # [N, per_class]
        return x, y

    def _draw(self, pool: ClassPool, per_class: int, g: torch.Generator):
        return self._load(pool, *self._pick(pool, per_class, g))

    def episode_ids(self, split: str, seed: int, index: int) -> dict:
        """Which images evaluation task ``index`` of ``split`` holds, as an episodes file lists them
        (:class:`FixedEpisodes`): class names in draw order, their labels, and per class the indices (within
        the class, in the prepared file's order) of the support and of the query images."""
        pool = self._pool(split)
        classes, labels, picks = self._pick(pool, self.shots + self.query_shots,
                                            rng.generator(seed, f"eval/{split}", 0, index))
        k = self.shots
        return {"classes": [pool.names[int(c)] for c in classes], "labels": labels.tolist(),
                "support": picks[:, :k].tolist(), "query": picks[:, k:].tolist()}

    def _pool(self, split: str) -> ClassPool:
        if split not in self.pools:
            raise ConfigError(f"eval.split={split!r}: this dataset's evaluation splits are "
                              f"{', '.join(self.splits) or 'none'} (and train)")
        return self.pools[split]

    def train_task(self, seed: int, iteration: int, index: int) -> Task:
        """Training task ``index`` of meta-iteration ``iteration``: ``[N*train_shots, C, H, W]``."""
        x, y = self._draw(self.pools["train"], self.train_shots, rng.generator(seed, "train", iteration, index))
        return Task(x.flatten(0, 1), y.flatten())

    def eval_task(self, split: str, seed: int, index: int) -> EvalTask:
        """Evaluation task ``index`` of ``split``: support ``[N*K, ...]``, query ``[N*Q, ...]``, disjoint.

        Raises:
            ConfigError: the dataset has no such split.
        """
        x, y = self._draw(self._pool(split), self.shots + self.query_shots,
                          rng.generator(seed, f"eval/{split}", 0, index))
        return split_support_query(x, y, self.shots)


def split_support_query(x: torch.Tensor, y: torch.Tensor, shots: int) -> EvalTask:
    """Images ``[N, K + Q, ...]`` and labels ``[N, K + Q]`` -> an :class:`EvalTask`, class-major order."""
    k = shots
    return EvalTask(x[:, :k].flatten(0, 1), y[:, :k].flatten(), x[:, k:].flatten(0, 1), y[:, k:].flatten())


EPISODES_FORMAT = "reptile-cli/episodes"


class FixedEpisodes:
    """Evaluation tasks read from an episodes file instead of drawn: which images are support and which query,
    per episode, so that published fixed test episodes are evaluated exactly.

    The file is JSON: ``{"format": "reptile-cli/episodes", "version": 1, "split": "test", "dataset": ...,
    "content_sha256": ..., "episodes": [{"classes": [name, ...], "labels": [int, ...], "support": [[i, ...],
    ...], "query": [[j, ...], ...]}, ...]}``. ``classes`` are class names of the split (``Alphabet/characterNN``,
    a Mini-ImageNet wnid, a folder's class path; ``/rotDDD`` for a rotated class), ``labels`` their labels
    (default 0..N-1), and ``support[c]`` / ``query[c]`` the indices of class ``c``'s images, counted from 0 in
    the prepared file's order (file-name order for folders and Omniglot). Every episode has the same N, K and Q.
    ``reptile eval ... eval.save_episodes=FILE`` writes the episodes it draws in this format.

    Args:
        family: the :class:`ClassificationTasks` whose images the file names.
        path: the file.
        split: the split its classes must belong to (``eval.split``).

    Raises:
        DataError: unreadable file, wrong format, a class not in the split, an index outside its class,
            support and query sharing an image, uneven N / K / Q, or a file made from other data.
    """

    def __init__(self, family: ClassificationTasks, path, split: str):
        import json
        from pathlib import Path

        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise DataError(f"eval.episodes_file={path}: cannot read it as JSON ({err})") from None
        if not isinstance(doc, dict) or doc.get("format") != EPISODES_FORMAT or not isinstance(
                doc.get("episodes"), list) or not doc["episodes"]:
            raise DataError(f"eval.episodes_file={path}: not an episodes file (format {EPISODES_FORMAT!r} with a "
                            f"non-empty 'episodes' list; see reptile eval ... eval.save_episodes=FILE)")
        if doc.get("version", 1) != 1:
            raise DataError(f"eval.episodes_file={path} has format version {doc.get('version')!r}; this reptile "
                            f"reads version 1")
        if doc.get("split", split) != split:
            raise ConfigError(f"eval.episodes_file={path} holds episodes of split {doc['split']!r}: set "
                              f"eval.split={doc['split']}")
        name = getattr(family, "dataset_name", None)
        if name and doc.get("dataset") not in (None, name):
            raise DataError(f"eval.episodes_file={path} lists episodes of dataset {doc['dataset']!r}, not "
                            f"{family.dataset_name!r}")
        if doc.get("content_sha256") and family.checksum and doc["content_sha256"] != family.checksum:
            raise DataError(f"eval.episodes_file={path} was made from other data (content sha256 "
                            f"{doc['content_sha256'][:16]}, this data {family.checksum[:16]}): image indices would "
                            f"name other images")
        pool = family._pool(split)
        index = {name: i for i, name in enumerate(pool.names)}
        self.family, self.pool, self.path, self.split = family, pool, path, split
        self.episodes = []
        shapes = set()
        for n, ep in enumerate(doc["episodes"]):
            where = f"eval.episodes_file={path}, episode {n}"
            try:
                names, support, query = list(ep["classes"]), ep["support"], ep["query"]
                labels = list(ep.get("labels", range(len(names))))
                classes = [index[c] for c in names]
            except KeyError as err:
                raise DataError(f"{where}: {err.args[0]!r} is missing or not a class of split {split!r}") from None
            except TypeError:
                raise DataError(f"{where}: give 'classes', 'support' and 'query' lists") from None
            if len(set(classes)) != len(classes):
                twice = ", ".join(sorted({n for n in names if names.count(n) > 1}))
                raise DataError(f"{where}: a class appears twice ({twice}); the N classes of an episode must be "
                                f"distinct")
            if not (len(support) == len(query) == len(classes) == len(labels)) or sorted(labels) != list(
                    range(len(classes))):
                raise DataError(f"{where}: 'classes', 'labels', 'support' and 'query' need one entry per class, "
                                f"labels 0..N-1")
            ks = {len(s) for s in support} | {-len(q) for q in query}
            for c, s, q in zip(classes, support, query):
                not_ints = [i for i in (*s, *q) if type(i) is not int]
                if not_ints:
                    raise DataError(f"{where}: image {not_ints[0]!r} of class {pool.names[c]} is not an integer index")
                if set(s) & set(q) or len(set(s)) != len(s) or len(set(q)) != len(q):
                    raise DataError(f"{where}: class {pool.names[c]} repeats an image (support and query must be "
                                    f"distinct images)")
                bad = [i for i in (*s, *q) if not 0 <= i < int(pool.count[c])]
                if bad:
                    raise DataError(f"{where}: image {bad[0]!r} of class {pool.names[c]}, which has "
                                    f"{int(pool.count[c])} images (indices 0..{int(pool.count[c]) - 1})")
            shapes.add((len(classes), tuple(sorted(ks))))
            if len(shapes) > 1 or len([k for k in ks if k > 0]) != 1 or len([k for k in ks if k < 0]) != 1:
                raise DataError(f"{where}: every episode must have the same N, the same K support and Q query "
                                f"images per class")
            self.episodes.append((classes, labels, [list(s) + list(q) for s, q in zip(support, query)]))
        self.ways = len(self.episodes[0][0])
        self.shots = max(shapes.pop()[1])
        self.query_shots = len(self.episodes[0][2][0]) - self.shots

    def __len__(self) -> int:
        return len(self.episodes)

    def __getattr__(self, name: str):  # kind, metric, checksum, image_shape ...: the family's
        return getattr(self.family, name)

    def eval_task(self, split: str, seed: int, index: int) -> EvalTask:
        """Episode ``index`` of the file (``seed`` only orders the inner minibatches, as for drawn tasks)."""
        classes, labels, picks = self.episodes[index]
        x, y = ClassificationTasks._load(self.pool, classes, labels, torch.tensor(picks))
        return split_support_query(x, y, self.shots)
