"""Device and numeric precision: ``device=auto|cpu|cuda|mps`` and ``dtype=float32|float64|bfloat16``."""

from __future__ import annotations

import contextlib
import functools

import torch

from reptile_cli.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU.

    Raises:
        ConfigError: the requested device is not available here.
    """
    name = str(getattr(name, "value", name))
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but this torch has no CUDA device: use device=cpu or install a CUDA build")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device=mps but MPS is not available here: use device=cpu")
    return torch.device(name)


def precision(name: str, device: torch.device):
    """(weight dtype, autocast factory or None): float32/float64 weights; bfloat16 autocasts the forward pass.

    Raises:
        ConfigError: float64 on MPS (unsupported there).
    """
    name = str(getattr(name, "value", name))
    if name == "float64":
        if device.type == "mps":
            raise ConfigError("dtype=float64 is not supported on MPS: use float32")
        return torch.float64, None
    if name == "bfloat16":
        return torch.float32, functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    return torch.float32, None


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block (model initialisation) under a fixed torch seed without touching the global stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
