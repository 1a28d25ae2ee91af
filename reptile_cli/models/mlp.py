"""Multi-layer perceptron for regression task families (sine: 1 -> 64 -> 64 -> 1, tanh; REFERENCE.md)."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class MLP(nn.Module):
    """Fully connected network; PyTorch's default initialisation (as the authors' sine demo).

    Forward: ``[B, in_features]`` -> ``[B, out_features]``.

    Raises:
        ValueError: unknown activation name.
    """

    def __init__(self, in_features: int = 1, hidden: list[int] | tuple[int, ...] = (64, 64),
                 out_features: int = 1, activation: str = "tanh"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"model.activation={activation!r}: choose one of {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
