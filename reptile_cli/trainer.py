"""The training loop: set up or resume, then meta-iterations with logging, validation and checkpoints.

Per meta-iteration (paper Algorithm 2): draw ``meta_batch_size`` tasks from the counter-based stream
(seed, "train", iteration, task), adapt to each with ``inner_steps`` inner-optimizer steps, then move the
weights towards the mean adapted weights by the annealed meta step size. See :mod:`reptile_cli.reptile`.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import signal
import threading
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from reptile_cli import rng
from reptile_cli.applicability import check_applicable
from reptile_cli.batched import StackedAdaptation, batched_meta_step
from reptile_cli.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from reptile_cli.config import TrainCommand, to_plain
from reptile_cli.data.episodes import HIGHER_IS_BETTER
from reptile_cli.device import precision, resolve_device, seeded
from reptile_cli.distributed import Distributed, check_meta_batch
from reptile_cli.errors import EXIT_STOPPED, ConfigError, DataError, ReptileError
from reptile_cli.evaluate import check_eval, large_batch_notes, make_evaluator, write_eval_json
from reptile_cli.families import build_task_family
from reptile_cli.inner_optim import InnerOptimizer
from reptile_cli.losses import loss_reduction
from reptile_cli.models import build_model, check_input, place
from reptile_cli.progress import progress_bar
from reptile_cli.reptile import get_params, meta_step_size, sequential_meta_step
from reptile_cli.rundir import MetricsLog, provenance, write_json, write_state
from reptile_cli.trackers import RunInfo, Trackers

log = logging.getLogger("reptile")


class Stopped(ReptileError):
    """Training stopped on a signal or ``trainer.max_time``; ``last.pt`` was written (exit code 3)."""

    def __init__(self, message: str, by_signal: bool = False):
        super().__init__(message, EXIT_STOPPED)
        self.by_signal = by_signal  # Ctrl-C / SIGTERM (a multirun then stops as a whole), not a time budget


def check_trainer(t) -> None:
    """Reject settings that cannot run, before any work (one line naming the key)."""
    for key in ("meta_iters", "meta_batch_size", "inner_steps", "inner_batch_size", "checkpoint_every",
                "log_every"):
        if getattr(t, key) < 1:
            raise ConfigError(f"trainer.{key}={getattr(t, key)}: must be at least 1")
    if t.val_tasks < 2:
        raise ConfigError(f"trainer.val_tasks={t.val_tasks}: must be at least 2 (the 95% confidence interval over "
                          f"tasks needs 2 or more)")
    if t.eval_every < 0:
        raise ConfigError(f"trainer.eval_every={t.eval_every}: must be 0 (end only) or positive")
    if not t.inner_lr > 0 or not math.isfinite(t.inner_lr):
        raise ConfigError(f"trainer.inner_lr={t.inner_lr}: must be a positive finite number")
    for key in ("meta_step_size", "meta_step_size_final"):
        if not 0 <= getattr(t, key) < math.inf:
            raise ConfigError(f"trainer.{key}={getattr(t, key)}: must be a finite number >= 0 (the paper anneals "
                              f"1.0 -> 0 on images, 0.1 -> 0 on sine)")
    if not 0 <= t.adam_beta1 < 1 or not 0 <= t.adam_beta2 < 1 or not t.adam_eps > 0:
        raise ConfigError(f"trainer.adam_beta1={t.adam_beta1} adam_beta2={t.adam_beta2} adam_eps={t.adam_eps}: "
                          f"betas must be in [0, 1) and adam_eps positive")
    if t.max_time is not None and not t.max_time > 0:
        raise ConfigError(f"trainer.max_time={t.max_time}: give a positive number of seconds, or null for no limit")


def better(metric: str, new: float, old: float | None) -> bool:
    """Accuracy and return: higher is better; MSE: lower is better."""
    return old is None or (new > old if HIGHER_IS_BETTER[metric] else new < old)


class Trainer:
    """One training run in ``run_dir`` from a composed ``train`` config.

    ``given``: the keys the user set (command-line overrides); a key among them that does not apply to this run
    is refused (:mod:`reptile_cli.applicability`). None: every key is checked.

    Raises (from :meth:`run`):
        ConfigError / DataError: bad settings or data, before any iteration.
        Stopped: a signal or the time budget ended the run; ``last.pt`` holds the last finished iteration.
        ReptileError: the loss or weights became non-finite (the last good checkpoint is kept).
    """

    def __init__(self, cfg: DictConfig, run_dir: Path, dist: Distributed | None = None,
                 given: set[str] | None = None, group: str | None = None):
        self.cfg, self.run_dir, self.dist = cfg, Path(run_dir), dist
        self.main = dist is None or dist.is_main  # only the main process writes files and logs progress
        check_trainer(cfg.trainer)
        check_eval(cfg.eval)
        if dist is not None:
            check_meta_batch(cfg.trainer.meta_batch_size, dist.world)
        self.device = resolve_device(cfg.device)
        self.dtype, self.autocast = precision(cfg.dtype, self.device)
        self.family = build_task_family(cfg.dataset, cfg.episode)
        if cfg.trainer.resume and given is not None:
            # a resume re-applies the run's own overrides and the settings its checkpoint records, which were
            # checked when it started; of the rest, only what may change on resume can differ (resume_from)
            given = {k for k in given if k.startswith(RESUME_MAY_CHANGE)}
        check_applicable(cfg, self.family, "train", given)
        if cfg.trainer.path == "batched" and not getattr(self.family, "batched", True):
            raise ConfigError(f"trainer.path=batched adapts stacked supervised tasks; {cfg.dataset.name} collects "
                              f"episodes task by task: use trainer.path=sequential")
        check_input(cfg.model, getattr(self.family, "image_shape", None), getattr(self.family, "features", None))
        with seeded(rng.derive_seed(cfg.seed, "init")):
            self.model = build_model(cfg.model, self.family.ways)
        self.model = place(self.model, self.device, self.dtype)
        self.noisy = bool(getattr(self.model, "noisy", False))  # dropout / DropBlock in the inner loop
        self.optimizer = InnerOptimizer(self.model, cfg.trainer)
        self.reduction = loss_reduction(cfg.trainer)
        self.adaptation = StackedAdaptation(self.model, self.family.kind, self.autocast, self.reduction)
        # experiment trackers (logger=...): fed every metrics.jsonl record; a missing package is refused here
        self.trackers = Trackers(cfg.get("logger"), self.run_dir, enabled=self.main)
        self.group = group
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", enabled=self.main, listeners=[self.trackers.log])
        self.iteration, self.best, self.best_iteration = 0, None, None
        # the meta-iterations' losses since the last metrics line (kept in checkpoints, so that the first line
        # after a resume averages the same iterations as the run left alone would)
        self.pending_losses: list[float] = []
        # seconds of training behind the kept iterations, summed over the sessions of a resumed run
        self.seconds_before, self.session_start = 0.0, None
        self.stop_reason: str | None = None
        self.started = False  # set once the run (or the resumed run) has been set up and begins iterating

    # -------------------------------------------------------------------------------- state and files
    def state(self) -> dict:
        return {"iteration": self.iteration, "model": {k: v.cpu() for k, v in self.model.state_dict().items()},
                "inner_optimizer": self.optimizer.state_dict(), "config": to_plain(self.cfg),
                "best_metric": self.best, "best_iteration": self.best_iteration, "seed": int(self.cfg.seed),
                "rng_scheme": rng.SCHEME, "task": {"kind": self.family.kind, "ways": self.family.ways,
                                                   "metric": self.family.metric},
                "dataset_checksum": self.family.checksum, "inner_state_semantics": self.semantics,
                "train_seconds": self.train_seconds(), "pending_losses": list(self.pending_losses)}

    def train_seconds(self) -> float:
        """Wall-clock seconds spent training up to now, over every session of the run (a resumed run adds
        its own to the checkpoint's; time after a checkpoint that a crash lost is not counted)."""
        now = time.time() - self.session_start if self.session_start is not None else 0.0
        return self.seconds_before + now

    @property
    def semantics(self) -> str:
        """``carried`` (the reference: Adam's state goes from task to task) or ``shared`` (every task of a
        meta-iteration starts from one state: the batched path, and any run over several processes)."""
        return "shared" if self.dist is not None or self.cfg.trainer.path == "batched" else "carried"

    def save(self, name: str) -> Path:
        path = self.run_dir / name
        if self.main:
            save_checkpoint(path, self.state())
        return path

    def write_state(self, state: str, **info) -> None:
        if self.main:
            write_state(self.run_dir, state, **info)

    def resume_from(self, where: str) -> None:
        """Continue from ``last.pt`` of a run directory (or a checkpoint file): weights, inner optimizer
        state, iteration and best metric; ``metrics.jsonl`` is cut back to that iteration.

        Raises:
            ConfigError: the checkpoint was trained with settings that differ from this config (listed).
        """
        ckpt = load_checkpoint(where)
        differ = config_differences(with_defaults(ckpt["config"]), to_plain(self.cfg))
        saved, now = ckpt.get("inner_state_semantics"), self.semantics
        if saved and saved != now:
            differ.append(f"inner optimizer state {saved} -> {now} (resume a torchrun run with torchrun, or set "
                          f"trainer.path as it was)")
        if differ:
            raise ConfigError(f"trainer.resume={where}: the checkpoint was trained with other settings "
                              f"({'; '.join(differ[:4])}); resume with the original overrides")
        saved_data, data = ckpt.get("dataset_checksum"), self.family.checksum
        if saved_data and data and saved_data != data:
            raise DataError(f"trainer.resume={where}: the data at {self.cfg.dataset.root} (content sha256 "
                            f"{data[:16]}) is not the data the run was trained on ({saved_data[:16]}); give "
                            f"dataset.root=PATH of the run's data, or start a new run")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["inner_optimizer"])
        self.iteration, self.best, self.best_iteration = ckpt["iteration"], ckpt["best_metric"], ckpt["best_iteration"]
        self.seconds_before = float(ckpt.get("train_seconds") or 0.0)
        self.pending_losses = [float(v) for v in ckpt.get("pending_losses", [])]  # [] before this was recorded
        self.metrics.truncate(self.iteration)
        log.info("resumed from %s at iteration %d", where, self.iteration)

    # -------------------------------------------------------------------------------- validation
    def validate(self, episodes: int, label: str):
        evaluator = make_evaluator(self.family, self.model, self.cfg.trainer, self.cfg.eval, self.device,
                                   self.dtype, self.autocast)
        return evaluator.evaluate(get_params(self.model), self.optimizer.state_dict(), "val", episodes,
                                  self.cfg.eval.seed, progress=self.cfg.trainer.progress and self.main, label=label,
                                  dist=self.dist)

    def record_validation(self, result) -> dict:
        summary = result.summary()
        metric = self.family.metric
        record = {"iteration": self.iteration, f"val/{metric}": summary["mean"], f"val/{metric}_ci95": summary["ci95"],
                  "val/episodes": summary["episodes"]}
        self.metrics.append(record)
        if better(metric, summary["mean"], self.best):
            self.best, self.best_iteration = summary["mean"], self.iteration
            self.save("best.pt")
        return summary

    # -------------------------------------------------------------------------------- the loop
    def _handle_signal(self, signum, frame) -> None:
        self.stop_reason = signal.Signals(signum).name

    def start(self) -> None:
        """Resume (checked against the checkpoint first: a refused resume writes nothing) or begin: the run's
        records, ``init.pt`` and ``state.json`` running. :meth:`run` calls it when it has not been called."""
        t = self.cfg.trainer
        resume = t.resume
        if resume == "auto":
            resume = str(self.run_dir) if (self.run_dir / "last.pt").is_file() else None
        if resume:
            self.resume_from(resume)
        if self.main:
            for note in large_batch_notes(self.cfg.trainer, self.cfg.eval, self.family):
                log.warning(note)
            self.write_records(bool(resume))
            self.trackers.start(lambda run_id: RunInfo(self.run_dir, str(self.cfg.name), self.run_dir.name,
                                                       self.group, to_plain(self.cfg), run_id),
                                history=self.metrics.read() if resume else ())
        if not resume:
            self.save("init.pt")
        self.started = True
        self.write_state("running", iteration=self.iteration)

    def run(self) -> dict:
        """Train to ``trainer.meta_iters``; returns the final validation summary (empty without validation).
        The trackers are closed with the run's end state whatever ends it."""
        if not self.started:
            self.start()
        try:
            summary = self._run()
        except Stopped:
            self.finish_trackers("stopped", {})
            raise
        except BaseException:
            self.finish_trackers("failed", {})
            raise
        self.finish_trackers("completed", summary)
        return summary

    def finish_trackers(self, state: str, summary: dict) -> None:
        if not self.trackers.active:
            return
        images = []
        try:
            from reptile_cli.plots import plot_run

            images.append(Path(plot_run(self.run_dir)))
        except Exception as err:  # noqa: BLE001 - no plot is no reason to lose the trackers' end
            log.warning("no plot for the trackers: %s", err)
        self.trackers.finish(state, [self.run_dir / "last.pt", self.run_dir / "eval.json"], images, summary)

    def _run(self) -> dict:
        cfg = self.cfg
        has_val = "val" in self.family.splits
        old_handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, self._handle_signal)
        try:
            self._loop(has_val)
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        summary = {}
        if has_val:
            try:
                summary = self.record_validation(self.validate(cfg.eval.val_episodes, "final validation"))
            except KeyboardInterrupt:
                self.write_state("stopped", iteration=self.iteration, reason="SIGINT in final validation")
                hint = resume_hint(self.run_dir)
                raise Stopped(f"stopped during the final validation; last.pt (iteration {self.iteration}) is "
                              f"complete: evaluate it, or finish with: reptile train {hint}", by_signal=True) from None
            if self.main:
                write_eval_json(self.run_dir / "eval.json", summary, split="val",
                                checkpoint=self.run_dir / "last.pt", iteration=self.iteration, cfg=cfg,
                                family=self.family)
        self.write_state("completed", iteration=self.iteration, best_metric=self.best,
                         best_iteration=self.best_iteration)
        return summary

    def write_records(self, resumed: bool) -> None:
        """``config.yaml`` and ``provenance.json`` (on resume, the original record with the resume appended)."""
        cfg, t = self.cfg, self.cfg.trainer
        atomic_write_text(self.run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        extra = {"path": t.path.value}
        if self.dist is not None:
            extra.update(processes=self.dist.world, backend=self.dist.backend,
                         inner_state_semantics="shared per meta-iteration (batched semantics: several processes)")
        this = provenance(self.device, str(cfg.dtype.value), self.family.checksum, **extra)
        prov_file = self.run_dir / "provenance.json"
        if resumed and prov_file.is_file():  # keep the original record; list each resume after it
            first = json.loads(prov_file.read_text())
            first.setdefault("resumed", []).append({"iteration": self.iteration, **this})
            this = first
        write_json(prov_file, this)

    def meta_step(self, it: int, eps: float) -> float:
        """One outer-loop iteration on this process's tasks of the meta-batch; returns the mean last inner
        loss over all the meta-batch's tasks."""
        cfg, t = self.cfg, self.cfg.trainer
        indices = self.dist.tasks(t.meta_batch_size) if self.dist else range(t.meta_batch_size)
        tasks, batches = [], []
        for i in indices:
            task = self.family.train_task(cfg.seed, it, i)
            task = task.to(self.device, self.dtype)
            if self.noisy:  # dropout / DropBlock masks of this task's inner steps: a function of (seed, it, i)
                task.noise = rng.noise_generator(cfg.seed, it, i, self.device)
            tasks.append(task)
            batches.append(task.plan(t.inner_batch_size, t.inner_steps, rng.generator(cfg.seed, "inner", it, i)))
        if t.path == "batched":
            return batched_meta_step(self.model, self.optimizer, self.adaptation, tasks, batches, t.algorithm.value,
                                     eps, t, self.task_mean)
        return sequential_meta_step(self.model, self.optimizer, tasks, batches, t.algorithm.value, eps,
                                    self.family.kind, self.autocast, shared_state=self.dist is not None,
                                    task_mean=self.task_mean, reduction=self.reduction)

    def task_mean(self, sums: list[torch.Tensor]) -> list[torch.Tensor]:
        """This process's sums over its tasks -> means over the whole meta-batch (all processes)."""
        if self.dist is not None:
            sums = self.dist.sum(sums)
        return [s / self.cfg.trainer.meta_batch_size for s in sums]

    def stop_agreed(self) -> bool:
        """Whether any process wants to stop (a signal, the time budget): all must stop at the same iteration."""
        if self.dist is None:
            return self.stop_reason is not None
        flag = torch.tensor([0.0 if self.stop_reason is None else 1.0])
        if self.dist.backend == "nccl":
            flag = flag.to(self.device)
        if float(self.dist.sum([flag])[0]) > 0 and self.stop_reason is None:
            self.stop_reason = "a stop on another process"
        return self.stop_reason is not None

    def _loop(self, has_val: bool) -> None:
        t = self.cfg.trainer
        start_time = time.time()
        self.session_start = log_time = start_time
        losses = self.pending_losses  # appended to in place: saved with every checkpoint
        timed = 0  # iterations of this session since the last metrics line (for the rate)
        with progress_bar(t.meta_iters, "train", enabled=t.progress and self.main, completed=self.iteration) as bar:
            while self.iteration < t.meta_iters:
                it = self.iteration
                eps = meta_step_size(it, t.meta_iters, t.meta_step_size, t.meta_step_size_final)
                loss = self.meta_step(it, eps)
                if not math.isfinite(loss) or not all(torch.isfinite(p).all() for p in self.model.parameters()):
                    raise ReptileError(f"training diverged at iteration {it + 1} (loss {loss}): lower "
                                       f"trainer.inner_lr or trainer.meta_step_size; last good checkpoint kept in "
                                       f"{self.run_dir}")
                self.iteration = it + 1
                losses.append(loss)
                timed += 1
                bar.advance(f"loss {loss:.4f}")
                if self.main and (self.iteration % t.log_every == 0 or self.iteration == t.meta_iters):
                    mean_loss = sum(losses) / len(losses)
                    # time/elapsed_s: training seconds since the run began, over all its sessions
                    name = f"train/{self.family.train_metric}"  # loss, or the episodes' return (RL)
                    self.metrics.append({"iteration": self.iteration, name: mean_loss,
                                         "train/meta_step_size": eps,
                                         "time/elapsed_s": round(self.train_seconds(), 3)})
                    log.info("iteration %d/%d  %s %.4f  epsilon %.4f  %.2f it/s", self.iteration,
                             t.meta_iters, name, mean_loss, eps, timed / max(time.time() - log_time, 1e-9))
                    losses.clear()
                    timed, log_time = 0, time.time()
                if has_val and t.eval_every and self.iteration % t.eval_every == 0 and self.iteration < t.meta_iters:
                    self.record_validation(self.validate(t.val_tasks, "validation"))
                if self.iteration % t.checkpoint_every == 0 or self.iteration == t.meta_iters:
                    self.save("last.pt")
                    self.write_state("running", iteration=self.iteration)
                if self.stop_reason is None and t.max_time and time.time() - start_time > t.max_time:
                    self.stop_reason = f"trainer.max_time={t.max_time:g}s"
                if self.stop_agreed() and self.iteration < t.meta_iters:
                    self.save("last.pt")
                    self.write_state("stopped", iteration=self.iteration, reason=self.stop_reason)
                    again = (" (the run's trainer.max_time applies again on resume: add trainer.max_time=null to run "
                             "to the end)" if self.stop_reason.startswith("trainer.max_time") else "")
                    raise Stopped(f"stopped by {self.stop_reason} at iteration {self.iteration}; resume with: "
                                  f"reptile train {resume_hint(self.run_dir)}{again}",
                                  by_signal=self.stop_reason.startswith("SIG"))


# Settings whose preset values may change between versions of this tool while a run's must not: a resume that
# does not give them takes the checkpoint's (``reptile_cli.cli.resume_overrides``).
KEPT_FROM_CHECKPOINT = ("trainer.path", "trainer.loss_reduction", "trainer.adam_eps_convention")

# Settings that may change when a run is resumed: they do not alter the training trajectory.
# dataset.root may move: the data's content checksum must then be the same (Trainer.resume_from).
RESUME_MAY_CHANGE = ("dataset.root", "logger", "trainer.resume", "trainer.max_time", "trainer.progress",
                     "trainer.eval_every", "trainer.val_tasks", "trainer.checkpoint_every", "trainer.log_every",
                     "device", "eval.", "threads")


def with_defaults(saved: dict) -> dict:
    """A checkpoint's config with the schema's defaults for the keys added after it was written (e.g.
    ``trainer.loss_reduction``: runs from before it trained with the mean; ``model.distribution``), as a plain
    dict. The ``model`` and ``dataset`` sections get their own schema's defaults too."""
    from reptile_cli import config as schemas

    merged = to_plain(OmegaConf.merge(OmegaConf.structured(TrainCommand), saved))
    model = merged.get("model") or {}
    merged["model"] = to_plain(OmegaConf.merge(OmegaConf.structured(schemas.ModelConfig), model))
    data = merged.get("dataset") or {}
    schema = {"sine": schemas.SineDataConfig, "nav2d": schemas.Nav2DConfig,
              "cartpole": schemas.CartPoleConfig}.get(data.get("name"), schemas.ImageDataConfig)
    try:
        merged["dataset"] = to_plain(OmegaConf.merge(OmegaConf.structured(schema), data))
    except Exception:  # noqa: BLE001 - a section this version does not know: compared as it is
        pass
    return merged


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """``key: saved -> current`` for every leaf that differs, except :data:`RESUME_MAY_CHANGE`."""
    out = []
    for key in sorted(set(saved) | set(current)):
        path = f"{prefix}{key}"
        if path.startswith(RESUME_MAY_CHANGE):
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, path + ".")
        elif a != b:
            out.append(f"{path}: {a} -> {b}")
    return out


def resume_hint(run_dir: Path) -> str:
    """The argument that resumes a run in place (the CLI re-applies the run's original overrides)."""
    return f"trainer.resume={shlex.quote(str(run_dir))}"
