"""RL task families, their tasks, and the evaluation of adaptation.

A task is one environment of the family (a goal, a physics) drawn from the counter-based stream
(seed, "train", iteration, index) or, for evaluation, (eval.seed, "eval/<split>", 0, index): the validation
and test tasks are other draws than any training task (streams of their own, as sine's). One inner step
collects ``rollouts`` episodes of ``horizon`` steps with the current policy (actions drawn from a generator
seeded from the task's inner stream, so a run resumes exactly) and takes one step of the inner optimizer on the
REINFORCE surrogate with a linear feature baseline and normalised advantages (:mod:`reptile_cli.rl.pg`).

Evaluation (:class:`AdaptationEvaluator`): on each test task, the mean return of ``rollouts`` episodes with the
trained policy (before adaptation), then after each of ``eval.inner_steps`` adaptation steps (each step uses the
episodes just collected); the headline is the return after the last step, and ``eval.json`` holds the whole
curve with 95% CIs over tasks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from reptile_cli import rng
from reptile_cli.errors import ConfigError
from reptile_cli.evaluate import EvalResult, check_eval
from reptile_cli.inner_optim import InnerOptimizer
from reptile_cli.models.policy import LinearFeatureBaseline
from reptile_cli.progress import progress_bar
from reptile_cli.reptile import set_params
from reptile_cli.rl import pg
from reptile_cli.rl.envs import CartPoles, nav2d_rollout_step


@dataclass
class Rollouts:
    """``E`` episodes of ``T`` steps: observations ``[E, T, D]``, actions ``[E, T, A]`` (or ``[E, T]``), rewards
    and the mask of valid steps ``[E, T]``."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor


class RLTask:
    """One task of an RL family, as the inner loop sees it (``to``, ``plan``, ``step_loss``: the interface of
    :class:`reptile_cli.data.episodes.Task`)."""

    def __init__(self, family, params: dict):
        self.family, self.params = family, params
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def to(self, device, dtype) -> RLTask:
        self.device, self.dtype = torch.device(device), dtype
        return self

    def plan(self, batch_size, steps: int, generator: torch.Generator) -> list[int]:
        """One rollout seed per inner step (``batch_size`` does not apply: a step uses ``rollouts`` episodes)."""
        return torch.randint(0, 2**62, (steps,), generator=generator).tolist()

    def rollout(self, policy: nn.Module, seed: int) -> Rollouts:
        return self.family.rollout(policy, self.params, seed, self.device, self.dtype)

    def loss(self, policy: nn.Module, batch: Rollouts) -> torch.Tensor:
        """The REINFORCE surrogate of ``batch`` under ``policy`` (its gradient: the policy gradient estimate)."""
        f = self.family
        returns = pg.returns_to_go(batch.rewards, batch.mask, f.discount)
        base = LinearFeatureBaseline().fit_predict(batch.obs, returns, batch.mask)
        adv = pg.advantages(returns, base, batch.mask)
        e, t = batch.mask.shape
        flat_actions = batch.actions.reshape(e * t, *batch.actions.shape[2:])
        log_probs = policy.log_prob(batch.obs.reshape(e * t, -1), flat_actions).reshape(e, t)
        return pg.surrogate(log_probs, adv, batch.mask)

    def step_loss(self, policy: nn.Module, seed: int, kind: str = "rl", reduction: str = "mean", autocast=None):
        """(the surrogate on episodes collected with the current policy, their mean return)."""
        batch = self.rollout(policy, seed)
        return self.loss(policy, batch), pg.episode_returns(batch.rewards, batch.mask).mean()


class RLTasks:
    """Common part of the RL task families (see the module docstring).

    Args:
        cfg: the ``dataset`` node of an RL family (``horizon``, ``rollouts``, ``discount`` and its own keys).

    Raises:
        ConfigError: a horizon or rollout count below 1, a discount outside [0, 1].
    """

    kind = "rl"
    metric = "return"
    train_metric = "return"
    splits = ("val", "test")
    batched = False  # the inner loop collects episodes task by task (trainer.path=sequential)

    def __init__(self, cfg):
        if cfg.horizon < 1:
            raise ConfigError(f"dataset.horizon={cfg.horizon}: episodes need at least 1 step")
        if cfg.rollouts < 1:
            raise ConfigError(f"dataset.rollouts={cfg.rollouts}: an inner step needs at least 1 episode")
        if not 0.0 <= cfg.discount <= 1.0:
            raise ConfigError(f"dataset.discount={cfg.discount}: must be in [0, 1] (0.99 is usual)")
        self.cfg, self.horizon, self.rollouts, self.discount = cfg, int(cfg.horizon), int(cfg.rollouts), cfg.discount
        self.checksum = f"generated:{cfg.name}"
        self.ways = self.features[1]

    @property
    def evaluator(self):
        return AdaptationEvaluator

    def task_settings(self, cfg) -> dict:
        """What defines this family's evaluation tasks and their adaptation, for ``eval.json`` (the whole
        ``dataset`` node: environment, horizon, rollouts, discount and its task ranges)."""
        e, t = cfg.eval, cfg.trainer
        return {"dataset": cfg.dataset.name, **{k: v for k, v in OmegaConf.to_container(cfg.dataset).items()
                                                 if k != "name"},
                "inner_steps": e.inner_steps, "inner_state": str(getattr(e.inner_state, "value", e.inner_state)),
                "inner_optimizer": str(getattr(t.inner_optimizer, "value", t.inner_optimizer)),
                "inner_lr": t.inner_lr, "seed": e.seed}

    def draw(self, generator: torch.Generator) -> dict:
        raise NotImplementedError

    def train_task(self, seed: int, iteration: int, index: int) -> RLTask:
        return RLTask(self, self.draw(rng.generator(seed, "train", iteration, index)))

    def eval_task(self, split: str, seed: int, index: int) -> RLTask:
        """Task ``index`` of the validation or test stream.

        Raises:
            ConfigError: another split name.
        """
        if split not in self.splits:
            raise ConfigError(f"eval.split={split!r}: {self.cfg.name} has the task streams {', '.join(self.splits)}")
        return RLTask(self, self.draw(rng.generator(seed, f"eval/{split}", 0, index)))


class Nav2DTasks(RLTasks):
    """2D navigation (:mod:`reptile_cli.rl.envs`): the goal of a task is uniform in ``[goal_low, goal_high]^2``."""

    features = (2, 2)  # observation: the position; action: a velocity
    distribution = "gaussian"

    def __init__(self, cfg):
        super().__init__(cfg)
        if not cfg.goal_low < cfg.goal_high:
            raise ConfigError(f"dataset.goal_low={cfg.goal_low} dataset.goal_high={cfg.goal_high}: give low < high")
        if not cfg.action_limit > 0:
            raise ConfigError(f"dataset.action_limit={cfg.action_limit}: must be positive")

    def draw(self, generator: torch.Generator) -> dict:
        u = torch.rand(2, generator=generator, dtype=torch.float64)
        return {"goal": (self.cfg.goal_low + (self.cfg.goal_high - self.cfg.goal_low) * u).tolist()}

    @torch.no_grad()
    def rollout(self, policy, params: dict, seed: int, device, dtype) -> Rollouts:
        g = torch.Generator(device=device).manual_seed(int(seed))
        e, t = self.rollouts, self.horizon
        goal = torch.tensor(params["goal"], dtype=dtype, device=device)
        pos = torch.zeros(e, 2, dtype=dtype, device=device)
        obs, actions, rewards = [], [], []
        for _ in range(t):
            action = policy.sample(pos, g)
            obs.append(pos)
            actions.append(action)
            pos, reward = nav2d_rollout_step(pos, action, goal, self.cfg.action_limit)
            rewards.append(reward)
        return Rollouts(torch.stack(obs, 1), torch.stack(actions, 1), torch.stack(rewards, 1),
                        torch.ones(e, t, dtype=dtype, device=device))


class CartPoleTasks(RLTasks):
    """CartPole with physics drawn per task (Gymnasium's vectorised CartPole, :class:`CartPoles`): half pole length
    uniform in ``[length_min, length_max]``, pole mass in ``[masspole_min, masspole_max]``, push force in
    ``[force_min, force_max]``. Reward 1 per step until the episode ends (pole past 12 degrees, cart past 2.4 m)."""

    features = (4, 2)  # observation: x, x_dot, theta, theta_dot; actions: push left, push right
    distribution = "categorical"

    def __init__(self, cfg):
        super().__init__(cfg)
        for key in ("length", "masspole", "force"):
            low, high = cfg[f"{key}_min"], cfg[f"{key}_max"]
            if not 0 < low <= high:
                raise ConfigError(f"dataset.{key}_min={low} dataset.{key}_max={high}: give 0 < min <= max")

    def draw(self, generator: torch.Generator) -> dict:
        u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        c = self.cfg
        return {"length": c.length_min + (c.length_max - c.length_min) * u[0],
                "masspole": c.masspole_min + (c.masspole_max - c.masspole_min) * u[1],
                "force_mag": c.force_min + (c.force_max - c.force_min) * u[2]}

    @torch.no_grad()
    def rollout(self, policy, params: dict, seed: int, device, dtype) -> Rollouts:
        g = torch.Generator(device=device).manual_seed(int(seed))
        e, t = self.rollouts, self.horizon
        env = CartPoles(*(np.full(e, params[k]) for k in ("length", "masspole", "force_mag")), horizon=t)
        state = env.reset(seed=int(seed % 2**31))
        alive = np.ones(e, dtype=bool)
        obs, actions, rewards, mask = [], [], [], []
        for _ in range(t):
            o = torch.as_tensor(state, dtype=dtype, device=device)
            action = policy.sample(o, g)
            obs.append(o)
            actions.append(action)
            mask.append(torch.as_tensor(alive, dtype=dtype, device=device))
            state, reward, done = env.step(action.cpu().numpy())
            rewards.append(torch.as_tensor(reward * alive, dtype=dtype, device=device))
            alive = alive & ~done
            if not alive.any():
                break
        return Rollouts(torch.stack(obs, 1), torch.stack(actions, 1), torch.stack(rewards, 1), torch.stack(mask, 1))


FAMILIES = {"nav2d": Nav2DTasks, "cartpole": CartPoleTasks}


def is_rl_config(dataset_cfg) -> bool:
    """Whether a ``dataset`` node describes an RL task family (its schema has a ``horizon``: environments, not
    data)."""
    return "horizon" in dataset_cfg


def build_rl_family(dataset_cfg) -> RLTasks:
    """The RL task family named by ``dataset.name``.

    Raises:
        ConfigError: an unknown environment, or bad settings.
    """
    if dataset_cfg.name not in FAMILIES:
        raise ConfigError(f"dataset={dataset_cfg.name!r} is not an RL task family: use {' or '.join(FAMILIES)}")
    return FAMILIES[dataset_cfg.name](dataset_cfg)


class AdaptationEvaluator:
    """Evaluation of RL adaptation: for each task, the return before adaptation and after each of
    ``eval.inner_steps`` policy-gradient steps (see the module docstring). Same interface as
    :class:`reptile_cli.evaluate.Evaluator`; tasks run one at a time (``path`` sequential).

    Args:
        family: an :class:`RLTasks`.
        model: the policy (copied, never modified).
        trainer_cfg: the inner optimizer's settings.
        eval_cfg: ``inner_steps`` (k), ``inner_state`` (checkpoint, fresh).
    """

    path = "sequential"
    tasks_at_once = 1

    def __init__(self, family, model, trainer_cfg, eval_cfg, device, dtype, autocast=None):
        check_eval(eval_cfg)
        self.family, self.trainer_cfg, self.cfg = family, trainer_cfg, eval_cfg
        self.work = copy.deepcopy(model)
        self.device, self.dtype = device, dtype

    def run_task(self, params, optimizer_state, split: str, seed: int, index: int) -> list[float]:
        """The mean return after 0, 1, ..., k adaptation steps on task ``index`` of ``split``."""
        task = self.family.eval_task(split, seed, index).to(self.device, self.dtype)
        set_params(self.work, params)
        optimizer = InnerOptimizer(self.work, self.trainer_cfg)
        if self.cfg.inner_state == "checkpoint" and optimizer_state:
            optimizer.load_state_dict(optimizer_state)
        k = int(self.cfg.inner_steps)
        seeds = task.plan(None, k + 1, rng.generator(seed, f"eval/{split}/inner", 0, index))
        curve = []
        for j, rollout_seed in enumerate(seeds):
            batch = task.rollout(self.work, rollout_seed)
            curve.append(float(pg.episode_returns(batch.rewards, batch.mask).mean()))
            if j < k:
                optimizer.zero_grad()
                task.loss(self.work, batch).backward()
                optimizer.step()
        return curve

    def evaluate(self, params, optimizer_state, split: str, episodes: int, seed: int, progress: bool = True,
                 label: str = "eval", dist=None) -> EvalResult:
        """Evaluate tasks 0..episodes-1 of ``split``; with ``dist``, each process runs a contiguous block."""
        if episodes < 1:
            raise ConfigError(f"eval.episodes={episodes}: must be at least 1")
        mine = dist.tasks(episodes) if dist is not None else range(episodes)
        curves = []
        with progress_bar(len(mine), f"{label} {split}", enabled=progress) as bar:
            for i in mine:
                curves.append(self.run_task(params, optimizer_state, split, seed, i))
                bar.advance(f"return {sum(c[-1] for c in curves) / len(curves):.2f}")
        if dist is not None:
            curves = [c for part in dist.gather(curves) for c in part]
        result = EvalResult(metric="return", protocol=f"after_{int(self.cfg.inner_steps)}_steps")
        result.curve = curves
        result.before = [c[0] for c in curves]
        result.after = [c[-1] for c in curves]
        return result
