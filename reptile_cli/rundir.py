"""The run directory's small files: ``state.json``, ``provenance.json``, ``metrics.jsonl``, ``config.yaml``.

States (``state.json``): running, completed, stopped (resumable: exit code 3), failed.
"""

from __future__ import annotations

import importlib.metadata
import json
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

from reptile_cli import __version__
from reptile_cli.checkpoint import atomic_write_text

PACKAGES = ("torch", "hydra-core", "omegaconf", "typer", "rich", "h5py", "pillow", "numpy")


def _json(obj: Any) -> str:
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
    atomic_write_text(path, _json(obj))


def write_state(run_dir: Path, state: str, **info: Any) -> None:
    """Record the run's state (running, completed, stopped, failed) with details such as iteration, message."""
    write_json(run_dir / "state.json", {"state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info})


def read_state(run_dir: Path) -> dict:
    path = Path(run_dir) / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


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

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def append(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

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
