"""Experiment trackers (TensorBoard, MLflow, Weights & Biases) behind one small interface the trainer calls.

``logger=tensorboard`` (or several: ``logger=[tensorboard,mlflow]``) adds trackers beside the run's own files;
the default is none: ``metrics.jsonl`` and the PNG plots only. Each backend is its own module with a class
implementing :class:`Tracker`; :class:`Trackers` fans the trainer's calls out to them and keeps two promises:

- a tracker that fails (server unreachable, disk full, a bug in its library) never stops training: one warning
  names it and the run goes on without it; ``metrics.jsonl`` stays complete;
- a resumed run continues the same tracker run and logs no step twice: ``RUN_DIR/trackers.json`` records each
  tracker's run id and the last step it logged, and steps up to that one are skipped on resume (an exact resume
  recomputes the same values for them, see README "Resuming").

Only the main process of a torchrun job logs. Each job of a sweep is its own tracker run, grouped by the sweep.
The tracker libraries are optional extras (``pip install 'reptile-cli[tensorboard]'``, ``[mlflow]``, ``[wandb]``,
``[all]``); a logger whose package is missing is refused before training, naming the extra.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from reptile_cli.errors import ConfigError

log = logging.getLogger("reptile")

# logger name -> (module of its Tracker class, class name, the package it needs, the extra that installs it)
BACKENDS = {
    "tensorboard": ("reptile_cli.trackers.tensorboard", "TensorBoardTracker", "tensorboard", "tensorboard"),
    "mlflow": ("reptile_cli.trackers.mlflow", "MLflowTracker", "mlflow", "mlflow"),
    "wandb": ("reptile_cli.trackers.wandb", "WandbTracker", "wandb", "wandb"),
}
STATE_FILE = "trackers.json"


@dataclass
class RunInfo:
    """What a tracker needs to open (or reopen) its run.

    Attributes:
        run_dir: the run directory (trackers keep their files under it, or under the sweep's directory).
        name: the run's name (``name`` of the config: the experiment, e.g. ``omniglot_5w1s``).
        job: this run's own name: the run directory's name (a sweep job's number).
        group: the sweep directory's name when the run is a job of a sweep, else None.
        config: the resolved config as a plain dict.
        resumed_run_id: the tracker's run id from an earlier session of this run (resume), or None.
    """

    run_dir: Path
    name: str
    job: str
    group: str | None
    config: dict
    resumed_run_id: str | None = None


class Tracker(Protocol):
    """One tracker backend. Calls may raise anything; :class:`Trackers` turns that into one warning."""

    name: str

    def start(self, info: RunInfo) -> str:
        """Open (or reopen, ``info.resumed_run_id``) the tracker's run; log the run's hyperparameters.
        Returns the run id to reopen it with."""

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Log scalars at meta-iteration ``step`` (``train/loss``, ``train/meta_step_size``, ``val/acc`` and
        its CI bounds ``val/acc_ci95_low`` / ``_high`` ..., ``time/elapsed_s``)."""

    def finish(self, state: str, artifacts: list[Path], images: list[Path], summary: dict) -> None:
        """Close the run: its final state (completed, stopped, failed), files to attach (checkpoint,
        ``eval.json``), PNG plots, the final validation summary (may be empty)."""


def tracker_classes(logger_cfg) -> list[tuple[str, type]]:
    """The Tracker classes a ``logger`` config selects, in a fixed order.

    Raises:
        ConfigError: a selected tracker's package is missing (names the extra that installs it).
    """
    out = []
    for name, (module, cls, package, extra) in BACKENDS.items():
        if logger_cfg is None or logger_cfg.get(name) is None:
            continue
        try:
            importlib.import_module(package)
        except ImportError:
            raise ConfigError(f"logger={name} needs the {package} package: pip install 'reptile-cli[{extra}]' "
                              f"(or [all])") from None
        out.append((name, getattr(importlib.import_module(module), cls)))
    return out


@dataclass
class Trackers:
    """The trackers of one run, as the trainer sees them: ``start``, ``log`` (every ``metrics.jsonl`` record),
    ``finish``. With none selected, or in a process that does not write (torchrun ranks > 0), it does nothing.

    Args:
        logger_cfg: the ``logger`` config node (its non-null entries are the selected trackers).
        run_dir: the run directory (``trackers.json`` goes there).
        enabled: False in processes that must not log.
    """

    logger_cfg: object
    run_dir: Path
    enabled: bool = True
    active: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)  # name -> {"run_id", "last_step"}, as in trackers.json
    logged_before: dict = field(default_factory=dict)  # name -> last step logged by earlier sessions

    def __post_init__(self):
        self.classes = tracker_classes(self.logger_cfg) if self.enabled else []

    def _call(self, name: str, what: str, fn):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - a tracker must never stop training
            self.active.pop(name, None)
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            log.warning("logger %s failed in %s (%s: %s); training goes on without it, metrics.jsonl is complete",
                        name, what, type(err).__name__, first)
            return None

    def start(self, info_for, history: list[dict] = ()) -> None:
        """Open every selected tracker; ``info_for(resumed_run_id)`` builds its :class:`RunInfo`. On a resume,
        ``history`` (the run's ``metrics.jsonl`` up to its checkpoint) is replayed to each tracker from the step
        after the last one it holds, so that a tracker that lost the end of a killed session (W&B's service dies
        with it) has every step again."""
        if not self.classes:
            return
        path = self.run_dir / STATE_FILE
        try:
            self.state = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            self.state = {}
        for name, cls in self.classes:
            section = self.logger_cfg.get(name)
            tracker = self._call(name, "its set-up", lambda cls=cls, section=section: cls(section))
            if tracker is None:
                continue
            self.active[name] = tracker
            saved = self.state.get(name, {})
            info = info_for(saved.get("run_id"))
            last = saved.get("last_step", -1)
            if saved.get("run_id") and hasattr(tracker, "durable_last_step"):
                durable = self._call(name, "reading its files", lambda t=tracker, i=info: t.durable_last_step(i))
                last = last if durable is None else min(last, durable)
            run_id = self._call(name, "start", lambda t=tracker, i=info: t.start(i))
            if name in self.active:
                self.state[name] = {"run_id": run_id, "last_step": last}
                self.logged_before[name] = last
        self._save()
        for record in history:  # a resume: what the trackers lack of the steps before the checkpoint
            self.log(record)

    def log(self, record: dict) -> None:
        """One ``metrics.jsonl`` record: its numbers at its iteration, with each validation CI as bounds."""
        if not self.active or "iteration" not in record:
            return
        step = int(record["iteration"])
        scalars = {}
        for key, value in record.items():
            if key == "iteration" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if value is not None and math.isfinite(value):
                scalars[key] = float(value)
        for key in [k for k in scalars if k.endswith("_ci95")]:
            base = key[: -len("_ci95")]
            if base in scalars:
                scalars[f"{base}_ci95_low"] = scalars[base] - scalars[key]
                scalars[f"{base}_ci95_high"] = scalars[base] + scalars[key]
        changed = False
        for name, tracker in list(self.active.items()):
            if step <= self.logged_before[name]:
                continue  # an earlier session of this run logged it (resume): no step twice
            self._call(name, f"logging step {step}", lambda t=tracker: t.log(step, scalars))
            if name in self.active:
                self.state[name]["last_step"] = max(step, self.state[name]["last_step"])
                changed = True
        if changed:
            self._save()

    def finish(self, state: str, artifacts: list[Path], images: list[Path], summary: dict) -> None:
        for name, tracker in list(self.active.items()):
            self._call(name, "finish", lambda t=tracker: t.finish(state, [p for p in artifacts if p.is_file()],
                                                                  [p for p in images if p.is_file()], summary))
        self.active.clear()

    def _save(self) -> None:
        from reptile_cli.rundir import write_json

        try:
            write_json(self.run_dir / STATE_FILE, self.state)
        except Exception as err:  # noqa: BLE001 - the trackers' own bookkeeping must not stop training either
            log.warning("could not record the trackers' state in %s (%s)", self.run_dir / STATE_FILE, err)
