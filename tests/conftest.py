"""Shared fixtures: the CLI as a subprocess, a small synthetic image store, the shared data mirror."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.cli_server import Client, Unavailable

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


SERVER = Client()


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    """Run ``python -m reptile_cli ARGS`` in a process of its own and return the CompletedProcess (text output).

    The process is forked from a server that did the imports once (:mod:`tests.cli_server`); with ``env``
    given, or ``REPTILE_TEST_SUBPROCESS=1``, it is a plain subprocess (the environment at start-up matters)."""
    base = {**os.environ, "PYTHONUNBUFFERED": "1"}
    base.pop("REPTILE_TRACE", None)
    full_env = {**base, **(env or {})}
    if env is None and os.environ.get("REPTILE_TEST_SUBPROCESS") != "1" and SERVER.failed is None:
        try:
            return SERVER.run(list(args), cwd or REPO, full_env, timeout, base, REPO)
        except Unavailable as err:  # no server here (e.g. no Unix sockets): plain subprocesses
            SERVER.failed = str(err)
            warnings.warn(f"CLI test server unavailable, using plain subprocesses: {err}", stacklevel=2)
    return subprocess.run([sys.executable, "-m", "reptile_cli", *args], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


def metrics_records(run_dir: Path) -> list[dict]:
    """A run's ``metrics.jsonl`` without its timings (``time/*``): what two runs of the same training share."""
    import json

    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def write_store(path: Path, class_names: list[str], per_class: int | list[int], size: int = 28,
                channels: int = 1, seed: int = 0) -> Path:
    """Write a small image file in the ``reptile-cli/images`` format; image i of class c has pixel[0,0] = i,
    pixel[0,1] = c mod 256 (so tests can tell which image was drawn)."""
    rs = np.random.RandomState(seed)
    counts = [per_class] * len(class_names) if isinstance(per_class, int) else per_class
    images = []
    for c, n in enumerate(counts):
        block = rs.randint(0, 256, size=(n, size, size, channels)).astype(np.uint8)
        block[:, 0, 0, 0] = np.arange(n)
        block[:, 0, 1, 0] = c % 256
        images.append(block)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["images"] = np.concatenate(images)
        f["class_start"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        f["class_names"] = np.array(class_names, dtype=h5py.string_dtype())
        f["class_groups"] = np.array(["synthetic"] * len(class_names), dtype=h5py.string_dtype())
        f.attrs.update({"format": "reptile-cli/images", "format_version": 1, "dataset": "omniglot",
                        "variant": "small", "image_size": size, "channels": channels, "resize_filter": "nearest",
                        "content_sha256": "synthetic", "num_classes": len(class_names),
                        "num_images": int(sum(counts))})
    return path


@pytest.fixture
def small_store(tmp_path) -> Path:
    """A data root holding a synthetic ``omniglot_small``: 8 alphabets x 6 characters x 20 drawers."""
    names = [f"Alpha{a}/character{c:02d}" for a in range(8) for c in range(1, 7)]
    write_store(tmp_path / "data" / "omniglot" / "omniglot_small.h5", names, 20)
    return tmp_path / "data"
