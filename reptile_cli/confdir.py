"""Where the Hydra configs are, and the presets they offer (no Hydra import: ``reptile --help`` lists them)."""

from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """The Hydra config folder: ``conf/`` of a checkout, else the copy packaged as ``reptile_cli/conf``.

    Raises:
        FileNotFoundError: neither exists (a broken install).
    """
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no Hydra configs next to {here}: reinstall reptile-cli")


def presets(group: str) -> list[str]:
    """The presets of a config group (``experiment``, ``model``, ``dataset``, ...), sorted; schemas excluded;
    empty when the configs are missing."""
    try:
        folder = config_dir() / group
    except FileNotFoundError:
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.endswith("_schema"))
