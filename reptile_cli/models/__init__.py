"""Model zoo: the models the ``model`` config group can name (:data:`MODELS`), ``build_model(model_cfg, ways)``.

Each model is described once, by a :class:`ModelSpec`: the ``model.*`` keys it reads, the kinds of task family
it serves and what input it takes. The trainer and evaluator call :func:`build_model` and :func:`check_input`;
:mod:`reptile_cli.applicability` reads the specs to refuse a key of another model. A new model enters here and
in ``conf/model/``, nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from reptile_cli.errors import ConfigError
from reptile_cli.models.conv4 import Conv4
from reptile_cli.models.mlp import MLP
from reptile_cli.models.policy import PolicyMLP
from reptile_cli.models.resnet12 import ResNet12


@dataclass(frozen=True)
class ModelSpec:
    """One model of the zoo.

    Attributes:
        name: the value of ``model.name``.
        what: the model in a sentence (``"a ResNet-12"``), for messages.
        keys: the ``model.*`` keys it reads (any other must keep its default).
        kinds: the task-family kinds it serves (``classification``, ``regression``, ``rl``).
        takes: ``images`` (``[B, C, H, W]``, checked against ``model.in_channels`` / ``model.image_size``) or
            ``vectors`` (``[B, F]``, checked against ``model.in_features`` / ``model.out_features``).
        make: ``(model_cfg, ways) -> nn.Module``; raises ValueError on a bad setting.

    A model whose training forward pass is random (dropout) says so by a true ``noisy`` attribute and has
    ``draw_noise(batch, generator) -> masks`` and ``forward(x, masks)`` / ``stacked_forward(params, x, masks)``;
    the trainer then gives each training task a generator (``Task.noise``), see
    :class:`reptile_cli.models.resnet12.ResNet12`.
    """

    name: str
    what: str
    keys: tuple[str, ...]
    kinds: tuple[str, ...]
    takes: str
    make: Callable[[Any, int], nn.Module]


def _positive_eps(cfg: Any) -> float:
    if not cfg.bn_eps > 0:
        raise ValueError(f"model.bn_eps={cfg.bn_eps}: must be positive (1e-3 as the reference)")
    return cfg.bn_eps


MLP_KEYS = ("hidden", "activation", "in_features", "out_features")
MODELS = {spec.name: spec for spec in (
    ModelSpec("conv4", "conv4 (the paper's 4-layer conv net)",
              ("in_channels", "image_size", "filters", "stride", "max_pool", "bn_eps"), ("classification",), "images",
              lambda cfg, ways: Conv4(ways, cfg.in_channels, cfg.image_size, cfg.filters, cfg.stride, cfg.max_pool,
                                      _positive_eps(cfg))),
    ModelSpec("resnet12", "a ResNet-12",
              ("in_channels", "image_size", "widths", "leaky_slope", "bn_eps", "drop_rate", "dropblock_size"),
              ("classification",), "images",
              lambda cfg, ways: ResNet12(ways, cfg.in_channels, cfg.image_size, tuple(cfg.widths), cfg.leaky_slope,
                                         _positive_eps(cfg), cfg.drop_rate, cfg.dropblock_size)),
    ModelSpec("mlp", "an MLP", MLP_KEYS, ("regression",), "vectors",
              lambda cfg, ways: MLP(cfg.in_features, list(cfg.hidden), cfg.out_features, cfg.activation)),
    ModelSpec("policy", "a policy (RL)", (*MLP_KEYS, "distribution", "init_log_std"), ("rl",), "vectors",
              lambda cfg, ways: PolicyMLP(cfg.in_features, list(cfg.hidden), cfg.out_features, cfg.activation,
                                          cfg.distribution, cfg.init_log_std)),
)}
# the presets to suggest for a kind of task family (``model=...``; RL: the dataset's own policy preset)
SUGGEST = {"classification": "model=conv4_omniglot, model=conv4_miniimagenet or model=resnet12",
           "regression": "model=mlp_sine", "rl": "model=policy_<dataset> (model.name=policy)"}


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` named ``name``.

    Raises:
        ConfigError: no such model (the message lists them).
    """
    if name not in MODELS:
        raise ConfigError(f"model.name={name!r} is not a known model: use {', '.join(MODELS)} (model=conv4_omniglot, "
                          f"model=resnet12, ...)")
    return MODELS[name]


def check_input(cfg: Any, image_shape: tuple[int, int, int] | None,
                features: tuple[int, int] | None = None) -> None:
    """Raise ConfigError when an image model's input does not match the dataset's images ``(C, H, W)``, or a
    vector model's ``in_features`` / ``out_features`` the task family's (input, target) sizes ``features``."""
    takes = model_spec(cfg.name).takes
    if takes == "vectors" and features is not None and (cfg.in_features, cfg.out_features) != tuple(features):
        raise ConfigError(f"model.in_features={cfg.in_features} model.out_features={cfg.out_features}: the tasks "
                          f"have {features[0]} input and {features[1]} target value(s) per example; set "
                          f"model.in_features={features[0]} model.out_features={features[1]}")
    if takes != "images" or image_shape is None:
        return
    c, h, _ = image_shape
    if (cfg.in_channels, cfg.image_size) != (c, h):
        raise ConfigError(f"the dataset gives {c}x{h}x{h} images but the model expects {cfg.in_channels}x"
                          f"{cfg.image_size}x{cfg.image_size}: set model.in_channels={c} model.image_size={h} "
                          f"(or pick the matching model=...)")


def build_model(cfg: Any, ways: int) -> nn.Module:
    """Build the network named by ``cfg.name`` (one of :data:`MODELS`).

    Args:
        cfg: the ``model`` config node (see ``reptile_cli.config.ModelConfig``).
        ways: N, the number of logits of a classifier (ignored by vector models).

    Raises:
        ConfigError: unknown model name or bad setting (e.g. ``model.bn_eps`` not positive).
    """
    spec = model_spec(cfg.name)
    try:
        return spec.make(cfg, ways)
    except ValueError as err:
        raise ConfigError(str(err)) from None


HEAD_INITS = ("zeros", "glorot")


def replace_head(weights: dict, optimizer_state: dict | None, ways: int, how: str,
                 generator: torch.Generator) -> tuple[dict, dict | None]:
    """A classifier's weights and inner optimizer state with a new ``ways``-way head (``head.weight``
    ``[ways, F]``, ``head.bias`` ``[ways]``), to evaluate a checkpoint on another N than it was trained for.

    ``how``: ``zeros`` (weights and bias 0: every class starts equal and the support set alone makes the head,
    a common choice for first-order meta-learning: no class is preferred before adaptation) or ``glorot``
    (Glorot-uniform weights from ``generator``, zero bias: a freshly initialised layer).
    The head's Adam moments become, for each new class, the mean over the trained classes' rows (per input
    feature), so the new head's first steps have the trained head's scale; the step count is kept. The other
    layers and their state are unchanged. Returns copies; the arguments are not modified.

    Raises:
        ConfigError: the model has no ``head`` layer, or ``how`` is unknown.
    """
    if how not in HEAD_INITS:
        raise ConfigError(f"eval.new_head={how!r}: use {' or '.join(HEAD_INITS)}")
    if "head.weight" not in weights:
        classifiers = " or ".join(n for n, spec in MODELS.items() if "classification" in spec.kinds)
        raise ConfigError(f"eval.new_head applies to classifiers with a head layer (model.name={classifiers})")
    weights = dict(weights)
    features = weights["head.weight"].shape[1]
    dtype = weights["head.weight"].dtype
    w = torch.zeros(ways, features, dtype=dtype)
    if how == "glorot":
        bound = (6.0 / (features + ways)) ** 0.5
        w = (torch.rand(ways, features, generator=generator, dtype=torch.float64) * 2 - 1).mul_(bound).to(dtype)
    weights["head.weight"], weights["head.bias"] = w, torch.zeros(ways, dtype=dtype)
    if optimizer_state and "exp_avg" in optimizer_state:
        optimizer_state = {**optimizer_state}
        for key in ("exp_avg", "exp_avg_sq"):
            moments = dict(optimizer_state[key])
            moments["head.weight"] = moments["head.weight"].mean(0, keepdim=True).expand(ways, -1).clone()
            moments["head.bias"] = moments["head.bias"].mean().expand(ways).clone()
            optimizer_state[key] = moments
    return weights, optimizer_state


def place(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Move ``model`` to ``device``/``dtype``; on a CPU, conv weights go channels-last (NHWC strides).

    oneDNN's CPU convolutions run on NHWC without reordering every tensor they touch: one forward and backward
    pass of the Omniglot Conv4 on 10 images took 6.4 ms channels-last against 8.8 ms in the default layout
    (1 thread). Only the memory layout changes; values, shapes and checkpoints are the same.
    """
    model = model.to(device, dtype)
    if device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    return model
