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
        return Path(env).expanduser()
    return Path.home() / ".cache" / "reptile"
