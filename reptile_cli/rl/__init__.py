"""Reptile for reinforcement learning: task families of environments (Gymnasium API), a policy-gradient inner
loop, and the evaluation of adaptation (return before and after each adaptation step).

An RL task family enters the trainer and the evaluator through the same small interface as the supervised
ones (:class:`reptile_cli.data.episodes.TaskFamily`): ``train_task`` gives a task whose ``plan`` and
``step_loss`` drive the inner loop (here: collect episodes with the current policy, REINFORCE with a baseline),
and the family names its evaluator (:class:`reptile_cli.rl.tasks.AdaptationEvaluator`). The outer loop is the
tool's Reptile / FOMAML update, unchanged.

- :mod:`reptile_cli.rl.envs`: the environments (2D navigation; CartPole with physics drawn per task, from
  Gymnasium's own vectorised CartPole), each stepping many episodes at once.
- :mod:`reptile_cli.rl.pg`: returns, advantages and the policy-gradient surrogate (pure tensor maths).
- :mod:`reptile_cli.rl.tasks`: the task families, their tasks, and the adaptation evaluator.
"""
