"""Checkpoints: atomic save, safe load (``weights_only=True``: a checkpoint file never runs code).

A checkpoint holds everything to rebuild the model and resume training: model weights, the inner optimizer's
state, the iteration, the full config as a plain dict, the best validation metric, the random-stream scheme
(randomness is counter-based, so the seed and iteration are the whole RNG state) and a format version.
"""

from __future__ import annotations

import gc
import os
import pickle
import re
import resource
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from reptile_cli.errors import ReptileError

FORMAT = "reptile-cli/checkpoint"
FORMAT_VERSION = 2  # 2: model.bn_eps recorded (see upgrade_v1)


def atomic_write(path: Path, write) -> None:
    """Write via ``write(tmp_path)`` to a temporary file beside ``path``, fsync, then rename over ``path``.

    A crash or a full disk leaves the previous file intact; the temporary file is removed on failure.

    Raises:
        ReptileError: the folder cannot be written (the message names the path and the OS error).
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise ReptileError(f"cannot write {path}: {err.strerror or err}") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it the usual permissions
    cause = None
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(err, (OSError, RuntimeError)):
            raise
        cause = write_failure(Path(tmp), err)
    if cause is not None:
        # raised outside the except block: the failed write's traceback (which holds torch.save's open file,
        # so its blocks would stay allocated on a full disk) is gone by now, and the space with it
        gc.collect()
        kept = "; the previous file is kept" if path.exists() else ""
        raise ReptileError(f"cannot write {path}: {cause}{kept}")


def write_failure(partial: Path, err: BaseException) -> str:
    """Why a write stopped, in words. An OS error says it itself (no space left on device, read-only file
    system, quota exceeded, file name too long ...); ``torch.save`` reports a short write as a RuntimeError
    without the OS error ("unexpected pos ..."), so then the file system is looked at while the failed file's
    blocks are still allocated: nearly no space left, or this process's file size limit (``ulimit -f``)."""
    if isinstance(err, OSError):
        return err.strerror or str(err)
    try:
        free = shutil.disk_usage(partial.parent).free
    except OSError:
        free = None
    if free is not None and free < 1 << 20:
        return f"no space left on device ({free:,} bytes free on the file system of {partial.parent})"
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        return f"the write stopped short (this process may write files of at most {limit:,} bytes: ulimit -f)"
    return f"the write stopped short ({str(err).splitlines()[0][:120]}): a full disk or a quota?"


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` for a text file."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save ``state`` (model, inner_optimizer, iteration, config, ...) atomically, stamped with the format."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, on the CPU, without running any code.

    Raises:
        ReptileError: missing, truncated, corrupt, code-carrying or foreign file (one line, naming the file).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise ReptileError(f"checkpoint {path} does not exist: give a .pt file or a run directory holding last.pt")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols of non-checkpoints
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(err))
        if found:
            raise ReptileError(f"{path} was refused: loading it would call {found.group(1)} (a checkpoint holds "
                               f"only tensors and plain values, and this tool never runs code from a file)") from None
        raise ReptileError(f"{path} is not a checkpoint file (unreadable content): give a .pt written by "
                           f"reptile, e.g. a run's last.pt") from None
    except Exception as err:  # noqa: BLE001 - random bytes raise anything from IndexError to RuntimeError
        raise ReptileError(f"{path} is truncated or corrupt ({type(err).__name__}): use another checkpoint, "
                           f"e.g. the run's last.pt or best.pt") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ReptileError(f"{path} is not a reptile checkpoint (no '{FORMAT}' stamp)")
    version = ckpt.get("format_version")
    if version == 1:
        upgrade_v1(ckpt)
    elif version != FORMAT_VERSION:
        raise ReptileError(f"{path} has checkpoint format {version}, this reptile reads 1 to "
                           f"{FORMAT_VERSION}: use the reptile version that wrote it")
    return ckpt


def upgrade_v1(ckpt: dict[str, Any]) -> None:
    """Format 1 predates ``model.bn_eps``: its conv4 models used PyTorch's batch-norm epsilon, 1e-5. Record it
    so that evaluating or resuming such a checkpoint keeps the network it was trained as."""
    model = ckpt.get("config", {}).get("model", {})
    if model.get("name") == "conv4":
        model.setdefault("bn_eps", 1e-5)
    ckpt["format_version"] = FORMAT_VERSION
