"""Sine-wave regression tasks (paper section 6; REFERENCE.md "Sine wave").

Task: y = a * sin(x + b), a ~ U[amplitude_min, amplitude_max], b ~ U[phase_min, phase_max], on the fixed grid
x = linspace(x_min, x_max, num_points). Training tasks hold the whole grid (``train_shots`` = 50 points);
an evaluation task's support set is K distinct grid points (drawn without replacement) and its query set is
the whole grid, so the reported MSE is over all 50 points, as the authors' demo. The train, val and test
"splits" are separate random streams of the counter-based generator.
"""

from __future__ import annotations

import torch

from reptile_cli import rng
from reptile_cli.data.episodes import EvalTask, Task
from reptile_cli.errors import ConfigError


class SineTasks:
    """Sine-wave task family; ``x`` is ``[points, 1]``, ``y`` is ``[points, 1]``.

    Raises:
        ConfigError: support points more than the grid holds, or an empty range.
    """

    kind = "regression"
    metric = "mse"
    train_metric = "loss"
    ways = 1
    splits = ("val", "test")
    checksum = "generated:sine"
    features = (1, 1)  # x and y per example

    def __init__(self, cfg, shots: int, train_shots: int):
        self.cfg = cfg
        self.grid = torch.linspace(cfg.x_min, cfg.x_max, cfg.num_points).unsqueeze(1)  # [P, 1]
        if not 1 <= shots <= cfg.num_points:
            raise ConfigError(f"episode.shots={shots}: sine support points must be 1..{cfg.num_points}")
        if train_shots != cfg.num_points:
            raise ConfigError(f"episode.train_shots={train_shots}: sine training tasks use the whole grid of "
                              f"dataset.num_points={cfg.num_points}; set them equal")
        if cfg.amplitude_max < cfg.amplitude_min or cfg.phase_max < cfg.phase_min:
            raise ConfigError("dataset amplitude/phase ranges must have min <= max")
        self.shots, self.train_shots = shots, train_shots

    def _curve(self, g: torch.Generator) -> torch.Tensor:
        u = torch.rand(2, generator=g, dtype=torch.float64)
        a = self.cfg.amplitude_min + (self.cfg.amplitude_max - self.cfg.amplitude_min) * float(u[0])
        b = self.cfg.phase_min + (self.cfg.phase_max - self.cfg.phase_min) * float(u[1])
        return (a * torch.sin(self.grid.double() + b)).float()  # [P, 1]

    def train_task(self, seed: int, iteration: int, index: int) -> Task:
        """The whole grid of one random curve: x ``[P, 1]``, y ``[P, 1]``."""
        return Task(self.grid, self._curve(rng.generator(seed, "train", iteration, index)))

    def eval_task(self, split: str, seed: int, index: int) -> EvalTask:
        """Support: ``shots`` distinct grid points; query: the whole grid.

        Raises:
            ConfigError: unknown stream name.
        """
        if split not in self.splits:
            raise ConfigError(f"eval.split={split!r}: sine has the streams {', '.join(self.splits)}")
        g = rng.generator(seed, f"eval/{split}", 0, index)
        y = self._curve(g)
        picks = torch.randperm(len(self.grid), generator=g)[: self.shots]
        return EvalTask(self.grid[picks], y[picks], self.grid, y)
