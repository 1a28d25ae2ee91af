"""Policy-gradient maths for the inner loop: discounted returns-to-go, advantages with a baseline, the REINFORCE
surrogate (Williams 1992; with a baseline and normalised advantages as in MAML's RL experiments, Finn et al.
2017, section 5.3). Episodes are stacked ``[E, T]`` with a mask of the valid steps (an episode that ended
before the horizon has mask 0 after its last step)."""

from __future__ import annotations

import torch


def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor, discount: float) -> torch.Tensor:
    """``G_t = sum_{k >= t} discount^(k - t) r_k`` over the valid steps; rewards, mask ``[E, T]`` -> ``[E, T]``.

    Example: rewards ``[[1, 1, 1]]``, discount 0.5 -> ``[[1.75, 1.5, 1.0]]``.
    """
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = (rewards[:, t] + discount * running) * mask[:, t]
        out[:, t] = running
    return out


def advantages(returns: torch.Tensor, baseline: torch.Tensor, mask: torch.Tensor,
               normalize: bool = True) -> torch.Tensor:
    """``A_t = G_t - b(s_t)`` on the valid steps (0 elsewhere), normalised to mean 0 and standard deviation 1
    over the valid steps when ``normalize`` (as MAML's and rllab's vanilla policy gradient)."""
    adv = (returns - baseline) * mask
    if normalize:
        valid = mask.bool()
        mean, std = adv[valid].mean(), adv[valid].std(unbiased=False)
        adv = (adv - mean) / (std + 1e-8) * mask
    return adv


def surrogate(log_probs: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The REINFORCE loss ``-sum(log pi(a_t|s_t) A_t) / (valid steps)``; its gradient is the policy gradient
    estimate. log_probs, adv, mask ``[E, T]`` -> a scalar."""
    return -(log_probs * adv.detach() * mask).sum() / mask.sum().clamp(min=1)


def episode_returns(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Undiscounted return of each episode ``[E]`` (what the evaluation reports)."""
    return (rewards * mask).sum(1)
