"""Hydra override strings (``key=value``): their key, and values quoted for Hydra's override grammar. No
dependencies, so the CLI can use it before anything heavy is imported."""

from __future__ import annotations


def override_key(override: str) -> str:
    """The key of a Hydra override: ``+trainer.inner_lr=0.1`` -> ``trainer.inner_lr``."""
    return override.split("=", 1)[0].lstrip("+~")


def quote(value: str) -> str:
    """A value quoted for Hydra's override grammar (paths with spaces, commas, '=' ...)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
