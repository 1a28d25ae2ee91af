"""Model zoo: ``build_model(model_cfg, ways)`` from the ``model`` config group."""

from __future__ import annotations

from typing import Any

from torch import nn

from reptile_cli.errors import ConfigError
from reptile_cli.models.conv4 import Conv4
from reptile_cli.models.mlp import MLP


def check_input(cfg: Any, image_shape: tuple[int, int, int] | None) -> None:
    """Raise ConfigError when a conv model's input does not match the dataset's images (C, H, W)."""
    if cfg.name != "conv4" or image_shape is None:
        return
    c, h, _ = image_shape
    if (cfg.in_channels, cfg.image_size) != (c, h):
        raise ConfigError(f"the dataset gives {c}x{h}x{h} images but the model expects {cfg.in_channels}x"
                          f"{cfg.image_size}x{cfg.image_size}: set model.in_channels={c} model.image_size={h} "
                          f"(or pick the matching model=...)")


def build_model(cfg: Any, ways: int) -> nn.Module:
    """Build the network named by ``cfg.name`` (``conv4`` or ``mlp``).

    Args:
        cfg: the ``model`` config node (see ``reptile_cli.config.ModelConfig``).
        ways: N, the number of logits of a classifier (ignored by ``mlp``).

    Raises:
        ConfigError: unknown model name or bad setting.
    """
    if cfg.name == "conv4":
        return Conv4(ways, cfg.in_channels, cfg.image_size, cfg.filters, cfg.stride, cfg.max_pool)
    if cfg.name == "mlp":
        try:
            return MLP(cfg.in_features, list(cfg.hidden), cfg.out_features, cfg.activation)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    raise ConfigError(f"model.name={cfg.name!r} is not a known model: use conv4 or mlp (model=conv4_omniglot, ...)")
