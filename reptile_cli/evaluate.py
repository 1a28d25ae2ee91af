"""Few-shot evaluation: adapt a copy of the model on each task's support set, score its query set, and
summarise the per-task scores as a mean with a 95% confidence interval.

Protocol (reference implementation; REFERENCE.md "Evaluation"):
- each task starts from the trained weights and, with ``eval.inner_state=checkpoint``, from the inner
  optimizer state saved with them (``fresh``: a new optimizer); ``eval.inner_steps`` steps of
  ``eval.inner_batch_size`` support examples; nothing of the trained model or its saved state changes.
- non-transductive: each query image is classified in one batch together with the whole support set, so batch
  norm never mixes query images; transductive: all query images pass as one batch. Both are computed after
  adaptation (the adaptation is the same); ``eval.transductive`` picks the headline one.
- the CI is the usual few-shot convention: mean +- 1.96 * sample std / sqrt(tasks) over per-task scores
  (normal approximation to the sampling distribution of the mean over tasks).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from reptile_cli import rng
from reptile_cli.data.episodes import EvalTask, Task, inner_batches
from reptile_cli.errors import ConfigError
from reptile_cli.inner_optim import InnerOptimizer
from reptile_cli.losses import loss_reduction
from reptile_cli.progress import progress_bar
from reptile_cli.reptile import Params, adapt, set_params
from reptile_cli.rundir import write_json

Z95 = 1.96


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% CI half-width ``1.96 * s / sqrt(n)``, s the sample std (n - 1); CI is nan for one value.

    Example: ``[0.4] * 300 + [0.6] * 300`` -> ``(0.5, 0.008008...)``.
    """
    t = torch.tensor(list(values), dtype=torch.float64)
    if len(t) == 0:
        return math.nan, math.nan
    ci = Z95 * float(t.std(unbiased=True)) / math.sqrt(len(t)) if len(t) > 1 else math.nan
    return float(t.mean()), ci


@dataclass
class EvalResult:
    """Per-task scores of one evaluation and their summaries.

    ``after``/``before``: the headline metric per task, after and before adaptation (accuracy in [0, 1], MSE,
    or an RL return). ``other``: classification only, the other protocol's accuracy after adaptation.
    ``curve``: RL only, per task the return after 0, 1, ..., k adaptation steps.
    """

    metric: str
    protocol: str
    after: list[float] = field(default_factory=list)
    before: list[float] = field(default_factory=list)
    other: list[float] = field(default_factory=list)
    curve: list[list[float]] = field(default_factory=list)

    def summary(self) -> dict:
        mean, ci = summarize(self.after)
        out = {"metric": self.metric, "protocol": self.protocol, "mean": mean, "ci95": ci,
               "episodes": len(self.after)}
        out["before_adaptation"] = dict(zip(("mean", "ci95"), summarize(self.before)))
        if self.other:
            other = "transductive" if self.protocol == "non_transductive" else "non_transductive"
            out[other] = dict(zip(("mean", "ci95"), summarize(self.other)))
        if self.curve:
            out["adaptation_curve"] = [{"step": j, **dict(zip(("mean", "ci95"), summarize([c[j] for c in self.curve])))}
                                       for j in range(len(self.curve[0]))]
        return out


def score(kind: str, outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Accuracy (argmax of logits ``[Q, N]`` vs labels ``[Q]``) or MSE (``[Q, 1]`` vs ``[Q, 1]``)."""
    if kind == "classification":
        return float((outputs.argmax(-1) == targets).double().mean())
    return float(((outputs.double() - targets.double()) ** 2).mean())


@torch.no_grad()
def predict(model: nn.Module, task: EvalTask, transductive: bool) -> torch.Tensor:
    """Query outputs ``[Q, ...]``: all queries in one batch, or each query with the whole support set."""
    if transductive:
        return model(task.query_x)
    return torch.cat([model(torch.cat([task.support_x, q[None]]))[-1:] for q in task.query_x])


def check_eval(eval_cfg) -> None:
    """Raise ConfigError for evaluation settings that cannot work; ``reptile train`` calls it before training,
    so a bad ``eval.*`` value never costs a whole run before its final validation."""
    for key in ("inner_steps", "inner_batch_size"):
        if eval_cfg[key] < 1:
            raise ConfigError(f"eval.{key}={eval_cfg[key]}: must be at least 1")
    if eval_cfg.chunk_size is not None and eval_cfg.chunk_size < 0:
        raise ConfigError(f"eval.chunk_size={eval_cfg.chunk_size}: must be 0 (automatic) or positive")
    for key in ("episodes", "val_episodes"):
        if key in eval_cfg and eval_cfg[key] is not None and eval_cfg[key] < 2:
            raise ConfigError(f"eval.{key}={eval_cfg[key]}: must be at least 2 (the 95% confidence interval over "
                              f"tasks needs 2 or more)")


def make_evaluator(family, model: nn.Module, trainer_cfg, eval_cfg, device, dtype, autocast=None):
    """The evaluator a task family names (``family.evaluator``: RL families adapt with rollouts, see
    :mod:`reptile_cli.rl.tasks`), else :class:`Evaluator`; all take the same arguments and give an
    :class:`EvalResult` from ``evaluate``."""
    return getattr(family, "evaluator", Evaluator)(family, model, trainer_cfg, eval_cfg, device, dtype, autocast)


class Evaluator:
    """Evaluation of many tasks: the sequential reference (one task after another on a working copy of the
    model) or the batched fast path (``eval.path=batched``: chunks of ``eval.chunk_size`` tasks at once).

    Args:
        family: the task family (``eval_task(split, seed, index)``).
        model: a model of the right architecture; it is copied, never modified.
        trainer_cfg: for the inner optimizer (``inner_optimizer``, ``inner_lr``, Adam betas, epsilon and its
            convention) and ``loss_reduction`` (mean or sum over an inner minibatch).
        eval_cfg: ``inner_steps``, ``inner_batch_size``, ``transductive``, ``inner_state``, ``path``,
            ``chunk_size``.
        device, dtype: where tasks are moved.
        autocast: optional forward-pass context factory (bf16).
    """

    def __init__(self, family, model: nn.Module, trainer_cfg, eval_cfg, device, dtype, autocast=None):
        from reptile_cli.batched import StackedAdaptation

        check_eval(eval_cfg)
        self.family, self.trainer_cfg, self.cfg = family, trainer_cfg, eval_cfg
        self.work = copy.deepcopy(model)
        self.device, self.dtype, self.autocast = device, dtype, autocast
        self.kind = family.kind
        self.path = str(getattr(eval_cfg.path, "value", eval_cfg.path))
        self.chunk_size = eval_cfg.chunk_size or auto_chunk_size(model, family, device, eval_cfg.inner_batch_size)
        self.tasks_at_once = self.chunk_size if self.path == "batched" else 1
        self.reduction = loss_reduction(trainer_cfg)
        self.adaptation = StackedAdaptation(self.work, self.kind, autocast, self.reduction)

    def _to(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.device)
        return t.to(self.dtype) if t.is_floating_point() else t

    def run_task(self, params: Params, optimizer_state: dict | None, split: str, seed: int, index: int):
        """Adapt on task ``index`` of ``split``; returns (before, after, other protocol or None)."""
        task = self.family.eval_task(split, seed, index)
        task = EvalTask(*(self._to(t) for t in (task.support_x, task.support_y, task.query_x, task.query_y)))
        set_params(self.work, params)
        transductive = bool(self.cfg.transductive) or self.kind != "classification"
        before = score(self.kind, predict(self.work, task, transductive), task.query_y)
        optimizer = InnerOptimizer(self.work, self.trainer_cfg)
        if self.cfg.inner_state == "checkpoint" and optimizer_state:
            optimizer.load_state_dict(optimizer_state)
        g = rng.generator(seed, f"eval/{split}/inner", 0, index)
        batches = inner_batches(len(task.support_x), self.cfg.inner_batch_size, self.cfg.inner_steps, g)
        adapt(self.work, optimizer, Task(task.support_x, task.support_y), batches, self.kind, self.reduction,
              self.autocast)
        after = score(self.kind, predict(self.work, task, transductive), task.query_y)
        other = None
        if self.kind == "classification":
            other = score(self.kind, predict(self.work, task, not transductive), task.query_y)
        return before, after, other

    def run_chunk(self, params: Params, optimizer_state: dict | None, split: str, seed: int,
                  indices: list[int]) -> list[tuple]:
        """The fast path: adapt tasks ``indices`` together (:class:`reptile_cli.batched.StackedAdaptation`),
        each from the same weights and the same saved optimizer state; same results as :meth:`run_task`."""
        from reptile_cli.batched import stack

        tasks = [self.family.eval_task(split, seed, i) for i in indices]
        sx, sy, qx, qy = (self._to(torch.stack([getattr(t, k) for t in tasks]))
                          for k in ("support_x", "support_y", "query_x", "query_y"))
        n, names = len(indices), self.adaptation.names
        # in the working model's device, dtype and memory layout (channels-last kernels on a CPU: checkpoints
        # hold contiguous ones, which oneDNN would reorder in every convolution of every step)
        work = dict(self.work.named_parameters())
        like = [work[k] for k in names]
        p = stack([params[k] for k in names], n, like=like)
        opt = {"step": 0}
        if self.trainer_cfg.inner_optimizer == "adam":
            saved = optimizer_state if self.cfg.inner_state == "checkpoint" and optimizer_state else None
            opt["step"] = int(saved["step"]) if saved else 0
            for key in ("exp_avg", "exp_avg_sq"):  # in the weights' memory layout
                if saved:
                    opt[key] = stack([saved[key][k] for k in names], n, like=like)
                else:
                    opt[key] = [torch.zeros_like(w) for w in p]
        transductive = bool(self.cfg.transductive) or self.kind != "classification"
        before = task_scores(self.kind, self.adaptation.predict(p, sx, qx, transductive), qy)
        batches = torch.stack([torch.stack(inner_batches(sx.shape[1], self.cfg.inner_batch_size, self.cfg.inner_steps,
                                                         rng.generator(seed, f"eval/{split}/inner", 0, i)))
                               for i in indices]).to(self.device)
        self.adaptation.adapt(p, opt, sx, sy, batches, self.trainer_cfg)
        after = task_scores(self.kind, self.adaptation.predict(p, sx, qx, transductive), qy)
        other = [None] * n
        if self.kind == "classification":
            other = task_scores(self.kind, self.adaptation.predict(p, sx, qx, not transductive), qy)
        return list(zip(before, after, other))

    def evaluate(self, params: Params, optimizer_state: dict | None, split: str, episodes: int, seed: int,
                 progress: bool = True, label: str = "eval", dist=None) -> EvalResult:
        """Evaluate ``episodes`` tasks of ``split`` (tasks 0..episodes-1 of stream (seed, split)).

        Args:
            params: the trained weights (not modified).
            optimizer_state: the saved inner optimizer ``state_dict`` (copied per task), or None.
            dist: a :class:`reptile_cli.distributed.Distributed` to split the tasks across processes (each
                runs a contiguous block; every process gets all per-task scores, in task order).

        Returns:
            :class:`EvalResult` with one score per task, in task order.
        """
        protocol = "transductive" if self.cfg.transductive else "non_transductive"
        if self.kind != "classification":
            protocol = "query_set"
        if episodes < 1:
            raise ConfigError(f"eval.episodes={episodes}: must be at least 1")
        result = EvalResult(metric=self.family.metric, protocol=protocol)
        chunk = self.tasks_at_once
        mine = dist.tasks(episodes) if dist is not None else range(episodes)
        rows = []
        with progress_bar(len(mine), f"{label} {split}", enabled=progress) as bar:
            for start in range(mine.start, mine.stop, chunk):
                indices = list(range(start, min(start + chunk, mine.stop)))
                if self.path == "batched":
                    rows += self.run_chunk(params, optimizer_state, split, seed, indices)
                else:
                    rows += [self.run_task(params, optimizer_state, split, seed, i) for i in indices]
                bar.advance(f"{self.family.metric} {sum(r[1] for r in rows) / len(rows):.4f}", len(indices))
        if dist is not None:
            rows = [row for part in dist.gather(rows) for row in part]
        for before, after, other in rows:
            result.before.append(before)
            result.after.append(after)
            if other is not None:
                result.other.append(other)
        return result


# Largest single activation tensor of a chunk (bytes) that ``eval.chunk_size=0`` aims for. On a CPU, glibc
# serves blocks under 32 MiB from its heap and maps larger ones afresh each time: a chunk of 25 Mini-ImageNet
# tasks (0.7 GB activations) spent 38% of its time in page faults and ran at 0.50 tasks/s against 0.79 for
# one task at a time. On a GPU the caching allocator keeps memory, so the budget only bounds memory use.
CHUNK_BUDGET = {"cpu": 24 * 2**20, "cuda": 2 * 2**30}
MAX_CHUNK = {"cpu": 32, "cuda": 500}


def auto_chunk_size(model: nn.Module, family, device: torch.device, inner_batch_size: int = 1) -> int:
    """Tasks per chunk for ``eval.chunk_size=0``: as many as keep the largest activation of one pass within
    :data:`CHUNK_BUDGET`, at least 1 and at most :data:`MAX_CHUNK` (32 on a CPU, 500 on a GPU). The largest
    pass has, per task, the support set plus one query (non-transductive prediction, one query at a time),
    all N*Q queries (transductive), or the ``inner_batch_size`` images of an inner step (more than the support
    set when the batch repeats it, see :func:`large_batch_notes`).

    Example: Omniglot 5-way 1-shot (largest activation 64x14x14 floats per image, 6 images) gives 32 on a
    CPU; Mini-ImageNet (32x84x84) gives 4; Omniglot with ``eval.inner_batch_size=100`` gives 2.
    """
    kind = "cuda" if device.type == "cuda" else "cpu"
    shape = getattr(family, "image_shape", None)
    if shape is None:  # sine: a few floats per example
        return MAX_CHUNK[kind]
    largest = 0

    def hook(_module, _inputs, output):
        nonlocal largest
        largest = max(largest, output[0].numel())

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        p = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(2, *shape, dtype=p.dtype, device=p.device))
    finally:
        for h in handles:
            h.remove()
    images = max(family.ways * family.shots + 1, family.ways * family.query_shots, inner_batch_size)
    per_task = largest * p.element_size() * images
    return int(max(1, min(MAX_CHUNK[kind], CHUNK_BUDGET[kind] // max(per_task, 1))))


def large_batch_notes(trainer_cfg, eval_cfg, family) -> list[str]:
    """One warning per inner batch size larger than the examples it draws from (training task or support set).

    Such a batch walks the task's examples several times (the reference's ``_mini_batches`` does the same: it
    reshuffles and goes on filling the batch), so each example appears ``batch / examples`` times in it. Under
    ``loss_reduction=mean`` with batch norm that equals a batch of the distinct examples, at that many times
    the cost; under ``sum`` the gradient is that many times larger.
    """
    if family.kind == "rl":  # an RL step uses its episodes, not a minibatch
        return []
    notes = []
    regression = family.kind != "classification"
    support = family.shots * (1 if regression else family.ways)
    train = (family.train_shots if hasattr(family, "train_shots") else 0) * (1 if regression else family.ways)
    for key, batch, examples, what in (("trainer.inner_batch_size", trainer_cfg.inner_batch_size, train,
                                        "examples of a training task"),
                                       ("eval.inner_batch_size", eval_cfg.inner_batch_size, support,
                                        "support examples of an evaluation task")):
        if examples and batch > examples:
            notes.append(f"{key}={batch} is larger than the {examples} {what}: each inner step repeats them "
                         f"({batch / examples:g} times a batch; the effective batch is the {examples} distinct "
                         f"examples), which under loss_reduction=mean gives the step of a batch of {examples} at "
                         f"{batch / examples:g}x the cost (README \"Inner batches\")")
    return notes


def task_scores(kind: str, outputs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per-task :func:`score` of stacked outputs ``[T, Q, ...]`` against targets ``[T, Q]`` / ``[T, Q, 1]``."""
    if kind == "classification":
        return (outputs.argmax(-1) == targets).double().mean(-1).tolist()
    return ((outputs.double() - targets.double()) ** 2).flatten(1).mean(-1).tolist()


def task_settings(cfg, family=None) -> dict:
    """The settings that define an evaluation's tasks and adaptation, for ``eval.json``. A family whose tasks are
    not N-way K-shot episodes (RL) gives its own, through an optional ``task_settings(cfg)`` method."""
    own = getattr(family, "task_settings", None)
    if own is not None:
        return own(cfg)
    e = cfg.eval
    return {"dataset": cfg.dataset.name, "split_scheme": cfg.dataset.get("split"),
            "split_seed": cfg.dataset.get("split_seed"),
            "ways": cfg.episode.ways, "shots": cfg.episode.shots, "query_shots": cfg.episode.query_shots,
            "transductive": bool(e.transductive), "inner_steps": e.inner_steps,
            "inner_batch_size": e.inner_batch_size, "inner_state": str(getattr(e.inner_state, "value", e.inner_state)),
            "new_head": e.get("new_head"), "episodes_file": e.get("episodes_file"),
            "loss_reduction": loss_reduction(cfg.trainer),
            "inner_optimizer": str(cfg.trainer.inner_optimizer.value if hasattr(cfg.trainer.inner_optimizer, "value")
                                   else cfg.trainer.inner_optimizer), "inner_lr": cfg.trainer.inner_lr,
            "seed": e.seed}


def write_eval_json(path, summary: dict, *, split: str, checkpoint, iteration: int, cfg, family=None,
                    **extra) -> None:
    """Write ``eval.json``: metric, mean, ci95 (1.96 * s / sqrt(n) over tasks), episodes, task settings,
    checkpoint path and iteration, plus ``extra`` (per-task scores, a paired comparison)."""
    write_json(path, {**summary, "split": split, "ci_method": "1.96 * sample std / sqrt(episodes), over tasks",
                      "settings": task_settings(cfg, family), "checkpoint": str(checkpoint), "iteration": iteration,
                      **extra})
