"""Policies and value baselines for reinforcement-learning task families (``reptile_cli/rl/``).

- :class:`PolicyMLP`: an MLP from observations to a Gaussian (mean; a state-independent log standard deviation,
  also meta-learned) or a categorical distribution (logits) over actions.
- :class:`LinearFeatureBaseline`: the value baseline of Duan et al. 2016 used by MAML's RL experiments (Finn et
  al. 2017, section 5.3): a ridge regression of returns-to-go on per-step features ``[s, s^2, t, t^2, t^3, 1]``
  (t scaled by 1/100), fitted afresh on each batch of episodes. It has no parameters to meta-learn.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from reptile_cli.models.mlp import MLP


class PolicyMLP(nn.Module):
    """Stochastic policy ``pi(a | s)``.

    Args:
        in_features: observation size (2 for 2D navigation, 4 for CartPole).
        hidden: hidden layer widths.
        out_features: action dimensions (Gaussian) or number of discrete actions (categorical).
        activation: ``tanh`` or ``relu``.
        distribution: ``gaussian`` or ``categorical``.
        init_log_std: initial log standard deviation of every Gaussian action dimension.

    Forward: observations ``[B, in_features]`` -> means ``[B, out_features]`` (Gaussian) or logits.

    Raises:
        ValueError: unknown activation or distribution.
    """

    def __init__(self, in_features: int, hidden: list[int], out_features: int, activation: str = "tanh",
                 distribution: str = "gaussian", init_log_std: float = 0.0):
        super().__init__()
        if distribution not in ("gaussian", "categorical"):
            raise ValueError(f"model.distribution={distribution!r}: use gaussian or categorical")
        self.net = MLP(in_features, hidden, out_features, activation)
        self.distribution = distribution
        if distribution == "gaussian":
            self.log_std = nn.Parameter(torch.full((out_features,), float(init_log_std)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``log pi(a | s)`` per step: obs ``[N, in]``, actions ``[N, out]`` (Gaussian) or ``[N]`` (int) -> ``[N]``."""
        out = self(obs)
        if self.distribution == "categorical":
            return torch.log_softmax(out, -1).gather(-1, actions.long()[:, None])[:, 0]
        var = torch.exp(2 * self.log_std)
        return (-((actions - out) ** 2) / (2 * var) - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Actions for observations ``[N, in]``, drawn with ``generator`` (reproducible)."""
        out = self(obs)
        if self.distribution == "categorical":
            return torch.multinomial(torch.softmax(out, -1), 1, generator=generator)[:, 0]
        noise = torch.randn(out.shape, generator=generator, dtype=out.dtype, device=out.device)
        return out + torch.exp(self.log_std) * noise


class LinearFeatureBaseline:
    """Least-squares value baseline, refitted on every batch (no meta-learned parameters).

    Args:
        reg: ridge coefficient (grown tenfold until the normal equations are solvable, as rllab does).
    """

    def __init__(self, reg: float = 1e-5):
        self.reg = reg

    @staticmethod
    def features(obs: torch.Tensor) -> torch.Tensor:
        """obs ``[E, T, D]`` -> ``[E, T, 2D + 4]``: ``s, s^2, t, t^2, t^3, 1`` with t = step / 100."""
        e, t_len, _ = obs.shape
        t = (torch.arange(t_len, dtype=obs.dtype, device=obs.device) / 100.0)[None, :, None].expand(e, t_len, 1)
        o = obs.clamp(-10, 10)
        return torch.cat([o, o**2, t, t**2, t**3, torch.ones_like(t)], -1)

    def fit_predict(self, obs: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Fit on the valid steps (``mask`` ``[E, T]``) of ``returns`` ``[E, T]``, predict every step ``[E, T]``."""
        x = self.features(obs.double())
        valid = mask.bool()
        xv, yv = x[valid], returns.double()[valid]
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        reg = self.reg
        for _ in range(5):
            try:
                coef = torch.linalg.solve(xv.T @ xv + reg * eye, xv.T @ yv)
                break
            except RuntimeError:
                reg *= 10
        else:
            coef = torch.zeros(x.shape[-1], dtype=x.dtype, device=x.device)
        return (x @ coef).to(returns.dtype)
