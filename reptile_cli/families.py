"""Task families: the one place that maps a ``dataset`` config to the family the trainer and evaluator use.

A family is what the outer loop draws tasks from; it sits above the two kinds that provide them:

- data families (:mod:`reptile_cli.data.datasets`): sine regression and image classification, whose tasks are
  episodes of examples (support and query sets);
- reinforcement-learning families (:mod:`reptile_cli.rl.tasks`): environments whose tasks are a goal or a
  physics, adapted to by policy-gradient steps on episodes the policy collects.

Both give the same interface (``train_task`` / ``eval_task`` or the episode sampler, ``kind``, ``metric``,
``evaluator``), so the trainer and the evaluator never ask which kind they have.
"""

from __future__ import annotations

from reptile_cli.data.datasets import build_data_family
from reptile_cli.rl.tasks import build_rl_family, is_rl_config


def build_task_family(dataset_cfg, episode_cfg, root: str | None = None, checked: tuple[str, ...] | None = None):
    """The task family ``dataset_cfg`` describes (arguments as :func:`reptile_cli.data.datasets.build_data_family`;
    an RL family takes only ``dataset_cfg``).

    Raises:
        ConfigError: unknown dataset, environment or split, or bad settings; DataError: missing or broken data.
    """
    if is_rl_config(dataset_cfg):
        return build_rl_family(dataset_cfg)
    return build_data_family(dataset_cfg, episode_cfg, root=root, checked=checked)
