"""Where prepared data lives on disk."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "REPTILE_DATA"


def default_data_root() -> Path:
    """The data root: ``$REPTILE_DATA`` if set, else ``~/.cache/reptile``.

    Each dataset gets a sub-folder (``<root>/omniglot/``) holding its downloaded archives and prepared files.

    Returns:
        The root folder (not created here).
    """
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return absolute(env)
    return Path.home() / ".cache" / "reptile"


def absolute(path: str | os.PathLike) -> Path:
    """``path`` with ``~`` expanded, made absolute against the current working directory and resolved
    (symbolic links and ``..`` removed), so that a record of it names the same place from any directory."""
    return Path(path).expanduser().resolve()


def resolve_dataset_root(dataset_cfg) -> None:
    """Record in ``dataset_cfg.root`` (in place) the absolute path a run reads its data from: the given
    ``dataset.root`` resolved against the working directory, or the data root in use when it is null
    (``$REPTILE_DATA`` or ``~/.cache/reptile``). Generated task families (sine) read no files: unchanged.

    A relative path typed once must not name another folder when the run is resumed or evaluated from
    elsewhere; ``config.yaml`` and every checkpoint hold the resolved path.
    """
    if dataset_cfg.name == "sine" or "root" not in dataset_cfg:  # generated tasks (sine, RL environments)
        return
    dataset_cfg.root = str(absolute(dataset_cfg.root) if dataset_cfg.root else default_data_root())
