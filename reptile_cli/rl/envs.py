"""Environments of the RL task families, on the Gymnasium API, each stepping many episodes at once.

- :class:`Nav2D` (the 2D navigation benchmark of MAML, Finn et al. 2017, section 5.3): a point starts at the
  origin; an action is a velocity, clipped to ``[-action_limit, action_limit]`` per coordinate; the position
  moves by it; the reward is minus the distance to the task's goal after the move; episodes last ``horizon``
  steps. The goal is drawn per task, uniformly in ``[goal_low, goal_high]^2``. :class:`Nav2D` is a
  ``gymnasium.Env`` for one episode; :func:`nav2d_rollout_step` is the same step for ``[E, 2]`` positions in
  torch (tests check both against hand-computed steps and against each other).
- :class:`CartPoles`: Gymnasium's own vectorised CartPole (``CartPoleVectorEnv``, the classic Barto, Sutton &
  Anderson 1983 dynamics) with its physics set per episode, so that every task has its own pole length, pole
  mass and push force; reward 1 per step until the pole falls or the cart leaves the track.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import torch
from gymnasium import spaces


def nav2d_rollout_step(pos: torch.Tensor, action: torch.Tensor, goal: torch.Tensor,
                       action_limit: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of 2D navigation for many episodes: positions ``[E, 2]``, actions ``[E, 2]``, goal ``[2]`` ->
    (new positions ``[E, 2]``, rewards ``[E]``): ``p' = p + clip(a)``, ``r = -||p' - goal||``."""
    new = pos + action.clamp(-action_limit, action_limit)
    return new, -torch.linalg.vector_norm(new - goal, dim=-1)


class Nav2D(gymnasium.Env):
    """One 2D-navigation task as a Gymnasium environment (observation: the position; action: a velocity).

    Args:
        goal: the task's goal ``(x, y)``.
        horizon: steps per episode (truncation).
        action_limit: the clip of each action coordinate.
    """

    def __init__(self, goal, horizon: int = 100, action_limit: float = 0.1):
        self.goal = np.asarray(goal, dtype=np.float64)
        self.horizon, self.action_limit = horizon, action_limit
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = spaces.Box(-action_limit, action_limit, (2,), np.float64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = np.zeros(2), 0
        return self.pos.copy(), {}

    def step(self, action):
        self.pos = self.pos + np.clip(action, -self.action_limit, self.action_limit)
        self.t += 1
        reward = -float(np.linalg.norm(self.pos - self.goal))
        return self.pos.copy(), reward, False, self.t >= self.horizon, {}


class CartPoles:
    """``episodes`` CartPole episodes stepped together by Gymnasium's ``CartPoleVectorEnv``, each with its own
    physics (arrays of ``[episodes]`` replace the environment's scalar constants).

    Args:
        length: half pole lengths ``[E]`` (m; Gymnasium's default 0.5).
        masspole: pole masses ``[E]`` (kg; default 0.1).
        force_mag: push forces ``[E]`` (N; default 10).
        horizon: steps per episode at most.
    """

    def __init__(self, length: np.ndarray, masspole: np.ndarray, force_mag: np.ndarray, horizon: int):
        from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

        self.env = CartPoleVectorEnv(num_envs=len(length), max_episode_steps=horizon)
        e = self.env
        e.length, e.masspole, e.force_mag = (np.asarray(v, dtype=np.float64) for v in (length, masspole, force_mag))
        e.total_mass = e.masspole + e.masscart
        e.polemass_length = e.masspole * e.length

    def reset(self, seed: int) -> np.ndarray:
        return self.env.reset(seed=seed)[0]

    def step(self, actions: np.ndarray):
        obs, reward, terminated, truncated, _ = self.env.step(actions.astype(np.int64))
        return obs, reward, terminated | truncated
