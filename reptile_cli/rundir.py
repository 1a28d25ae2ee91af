"""The run directory's small files: ``state.json``, ``provenance.json``, ``metrics.jsonl``, ``config.yaml``.

States (``state.json``): running, completed, stopped (resumable: exit code 3), failed.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from reptile_cli import __version__, locks
from reptile_cli.checkpoint import atomic_write_text
from reptile_cli.errors import ReptileError

PACKAGES = ("torch", "hydra-core", "omegaconf", "typer", "rich", "h5py", "pillow", "numpy")


def json_text(obj: Any) -> str:
    """Indented JSON text of ``obj``, non-finite floats as null."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), indent=2) + "\n"


def write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (non-finite floats become null)."""
    atomic_write_text(path, json_text(obj))


def write_state(run_dir: Path, state: str, **info: Any) -> None:
    """Record the run's state (running, completed, stopped, failed) with details such as iteration, message."""
    write_json(run_dir / "state.json", {"state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info})


def record_failure(run_dir: Path, **info: Any) -> None:
    """``write_state(failed)`` where it can be written: on a full or read-only disk the original error matters
    more than its record, so a failure to record it is only logged."""
    try:
        write_state(run_dir, "failed", **info)
    except ReptileError as err:
        logging.getLogger("reptile").warning("the run's state could not be recorded: %s", err)


DIED = ("the process ended without recording a state (killed, out of memory, or its machine stopped); "
        "its last.pt is the last good checkpoint: resume with reptile train trainer.resume=")


def read_state(run_dir: Path) -> dict:
    """The run's ``state.json``, with a run that claims to be running checked against its lock
    (:mod:`reptile_cli.locks`): when no live process holds the run directory, its writer died, and the record
    becomes ``died`` (written back, and the dead writer's temporary files removed, by taking the lock for a
    moment). ``{}`` without a state file."""
    path = Path(run_dir) / "state.json"
    try:
        state = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    if state.get("state") != "running" or locks.is_held(run_dir) is not False:
        return state
    try:
        hold = locks.FileLock(Path(run_dir) / locks.LOCK_NAME, f"run directory {run_dir}").acquire(retry_s=0)
    except ReptileError:  # a process took it a moment ago: alive after all
        return state
    try:
        state = {**state, "state": "died", "message": DIED + str(Path(run_dir)),
                 "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            write_json(path, state)
            remove_stale_temporaries(run_dir)
        except (ReptileError, OSError):
            pass  # a read-only copy of the run: report it as died without recording it
    finally:
        hold.release()
    return state


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete the temporary files (``.NAME.*.tmp``) that a killed writer left in ``run_dir``; call it holding
    the directory's lock, so that no live writer owns them."""
    for tmp in Path(run_dir).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def git_commit() -> dict:
    """Commit and dirty flag when the package runs from a git checkout; empty otherwise."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return {}
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return {}
    if head.returncode != 0:
        return {"git_commit": None, "git_dirty": True}  # a checkout without commits
    return {"git_commit": head.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The command line as the user typed it (the CLI rewrites sys.argv for Hydra; it records the original here).
COMMAND: list[str] | None = None


def provenance(device: torch.device, dtype: str, data_checksum: str, **extra: Any) -> dict:
    """What produced a run: versions, checkout commit, device, dtype, data checksum, command line, host."""
    versions = {"reptile-cli": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    dev = {"type": device.type, "name": torch.cuda.get_device_name(device) if device.type == "cuda" else
           cpu_name(), "torch_threads": torch.get_num_threads(), "cpu_cores": os.cpu_count()}
    return {"versions": versions, **git_commit(), "device": dev, "dtype": dtype, "dataset_checksum": data_checksum,
            "command": COMMAND or sys.argv, "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}


class MetricsLog:
    """Append-only ``metrics.jsonl``: one JSON object per line, each with its ``iteration``.

    On resume, :meth:`truncate` drops lines past the checkpoint's iteration, so iterations never repeat.
    """

    def __init__(self, path: Path, enabled: bool = True, listeners=()):
        self.path, self.enabled = path, enabled
        self.listeners = list(listeners)  # called with each record once it is written (experiment trackers)

    def append(self, record: dict) -> None:
        """Append one line.

        Raises:
            ReptileError: the file cannot be written (no space, read-only, quota); the lines before stay.
        """
        if not self.enabled:
            return
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:
            raise ReptileError(f"cannot write {self.path}: {err.strerror or err}") from None
        for listener in self.listeners:
            listener(record)

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line after a crash
        return out

    def truncate(self, iteration: int) -> None:
        if not self.enabled:
            return
        kept = [r for r in self.read() if r.get("iteration", 0) <= iteration]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
