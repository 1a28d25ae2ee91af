"""The audit of every declared config key (issue 18): for each dataset, model and path, a key either changes
what is computed (pixels of the tasks, model shapes, weights after two meta-iterations, validation scores) or,
where it does not apply, is refused with a one-line error. No key is accepted and ignored.

``AUDIT`` is the table: (context, override, expected) with expected one of
- ``refused``: one-line ConfigError saying the key does not apply (or why the value cannot work);
- ``effective``: the run computes something else than with the context's own value;
- ``checked``: the key is read and its value checked against the data (an error names the mismatch).
Every key of the train schema appears in at least one row (``test_every_key_is_audited``).
"""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from reptile_cli import config as schema
from reptile_cli.confdir import config_dir
from reptile_cli.config import register_configs
from reptile_cli.errors import ReptileError
from reptile_cli.trainer import Trainer
from tests.conftest import write_store

SMALL = ["experiment=omniglot_5w1s", "dataset=omniglot_small", "trainer.meta_iters=2", "eval.val_episodes=2",
         "eval.inner_steps=2", "trainer.progress=false"]
SINE = ["experiment=sine", "trainer.meta_iters=2", "eval.val_episodes=3", "eval.inner_steps=3",
        "trainer.progress=false"]
FOLDER = ["dataset=folder", "model=conv4_omniglot", "episode.ways=3", "episode.train_shots=2",
          "trainer.meta_iters=2", "trainer.inner_batch_size=6", "eval.val_episodes=2", "eval.inner_steps=2",
          "eval.inner_batch_size=3", "trainer.progress=false"]
RL = ["experiment=rl_nav2d", "dataset.horizon=10", "dataset.rollouts=3", "trainer.meta_iters=2",
      "trainer.meta_batch_size=2", "eval.val_episodes=2", "eval.inner_steps=1", "trainer.progress=false"]
CART = ["experiment=rl_cartpole", "dataset.horizon=20", "dataset.rollouts=3", "trainer.meta_iters=2",
        "trainer.meta_batch_size=2", "eval.val_episodes=2", "eval.inner_steps=1", "trainer.progress=false"]
CONTEXTS = {"nav2d (policy, sgd)": RL, "cartpole (policy, sgd)": CART, "omniglot_small (conv4, batched)": SMALL,
            "omniglot_small (conv4, sequential)": SMALL + ["trainer.path=sequential"],
            "omniglot_small (resnet12)": SMALL + ["model=resnet12", "model.widths=[4,8,8,8]"],
            "omniglot_small (resnet12, dropout)": SMALL + ["model=resnet12", "model.widths=[4,8,8,8]",
                                                           "model.drop_rate=0.2", "model.dropblock_size=2"],
            "sine (mlp, sgd)": SINE, "folder, seeded split (conv4)": FOLDER,
            "omniglot full, reptile split (conv4)": ["experiment=omniglot_5w1s", "trainer.meta_iters=2",
                                                     "trainer.progress=false", "trainer.checkpoint_every=1"]}

E, R, C = "effective", "refused", "checked"
AUDIT = [
    # ---------------------------------------------------------------------------------------- dataset
    ("omniglot_small (conv4, batched)", "dataset.root=ELSEWHERE", C),
    ("omniglot_small (conv4, batched)", "dataset.split=reptile", C),
    ("omniglot_small (conv4, batched)", "dataset.split_seed=1", E),
    ("omniglot_small (conv4, batched)", "dataset.val_characters=5", R),
    ("omniglot_small (conv4, batched)", "dataset.rotations=false", E),
    ("omniglot_small (conv4, batched)", "dataset.resize_filter=lanczos", C),
    ("omniglot_small (conv4, batched)", "dataset.image_size=32", C),
    ("omniglot_small (conv4, batched)", "dataset.channels=3", C),
    ("omniglot_small (conv4, batched)", "dataset.split_fractions=[0.5,0.25,0.25]", R),
    ("omniglot full, reptile split (conv4)", "dataset.val_characters=100 eval.val_episodes=2 eval.inner_steps=2", E),
    ("omniglot full, reptile split (conv4)", "dataset.split=vinyals", C),
    ("folder, seeded split (conv4)", "dataset.split_fractions=[0.4,0.3,0.3]", E),
    ("folder, seeded split (conv4)", "dataset.split_seed=1", E),
    ("folder, seeded split (conv4)", "dataset.resize_filter=nearest", E),
    ("folder, seeded split (conv4)", "dataset.image_size=20", C),
    ("folder, seeded split (conv4)", "dataset.channels=3", C),
    ("folder, seeded split (conv4)", "dataset.rotations=true", E),
    ("folder, seeded split (conv4)", "dataset.val_characters=2", R),
    ("sine (mlp, sgd)", "dataset.root=/data", R),
    ("sine (mlp, sgd)", "dataset.split=reptile", R),
    ("sine (mlp, sgd)", "dataset.split_seed=3", R),
    ("sine (mlp, sgd)", "dataset.val_characters=3", R),
    ("sine (mlp, sgd)", "dataset.amplitude_min=1.0", E),
    ("sine (mlp, sgd)", "dataset.amplitude_max=2.0", E),
    ("sine (mlp, sgd)", "dataset.phase_min=1.0", E),
    ("sine (mlp, sgd)", "dataset.phase_max=1.0", E),
    ("sine (mlp, sgd)", "dataset.x_min=-3.0", E),
    ("sine (mlp, sgd)", "dataset.x_max=3.0", E),
    ("sine (mlp, sgd)", "dataset.num_points=40", C),
    # ---------------------------------------------------------------------------------------- model
    ("omniglot_small (conv4, batched)", "model.name=mlp", R),
    ("omniglot_small (conv4, batched)", "model.in_channels=3", C),
    ("omniglot_small (conv4, batched)", "model.image_size=84", C),
    ("omniglot_small (conv4, batched)", "model.filters=32", E),
    ("omniglot_small (conv4, batched)", "model.stride=1", E),
    ("omniglot_small (conv4, batched)", "model.max_pool=true", E),
    ("omniglot_small (conv4, batched)", "model.bn_eps=1e-5", E),
    ("omniglot_small (conv4, batched)", "model.hidden=[32]", R),
    ("omniglot_small (conv4, batched)", "model.activation=relu", R),
    ("omniglot_small (conv4, batched)", "model.in_features=2", R),
    ("omniglot_small (conv4, batched)", "model.out_features=2", R),
    ("omniglot_small (conv4, batched)", "model.widths=[32,32,32,32]", R),
    ("omniglot_small (conv4, batched)", "model.leaky_slope=0.2", R),
    ("omniglot_small (resnet12)", "model.widths=[4,8,8,4]", E),
    ("omniglot_small (resnet12)", "model.leaky_slope=0.2", E),
    ("omniglot_small (resnet12)", "model.bn_eps=1e-5", E),
    ("omniglot_small (resnet12)", "model.image_size=84", C),
    ("omniglot_small (resnet12)", "model.filters=32", R),
    ("omniglot_small (resnet12)", "model.stride=1", R),
    ("omniglot_small (resnet12)", "model.max_pool=true", R),
    ("omniglot_small (resnet12)", "model.hidden=[32]", R),
    ("omniglot_small (resnet12)", "trainer.path=sequential", E),
    ("omniglot_small (resnet12)", "model.drop_rate=0.2 model.dropblock_size=2", E),
    ("omniglot_small (resnet12)", "model.drop_rate=0.2", C),  # the default block 5 exceeds block 3's 3x3 maps
    ("omniglot_small (resnet12)", "model.dropblock_size=2", R),  # model.drop_rate=0: no DropBlock
    ("omniglot_small (resnet12, dropout)", "model.dropblock_size=3", E),
    ("omniglot_small (resnet12, dropout)", "model.dropblock_size=4", C),  # block 3's maps are 3x3 at 28x28
    ("omniglot_small (resnet12, dropout)", "model.drop_rate=0.1", E),
    ("omniglot_small (conv4, batched)", "model.drop_rate=0.1", R),
    ("sine (mlp, sgd)", "model.dropblock_size=3", R),
    ("sine (mlp, sgd)", "model.name=conv4", R),
    ("sine (mlp, sgd)", "model.name=resnet12", R),
    ("sine (mlp, sgd)", "model.widths=[4,4,4,4]", R),
    ("sine (mlp, sgd)", "model.leaky_slope=0.2", R),
    ("sine (mlp, sgd)", "model.hidden=[32,32]", E),
    ("sine (mlp, sgd)", "model.activation=relu", E),
    ("sine (mlp, sgd)", "model.in_features=2", C),
    ("sine (mlp, sgd)", "model.out_features=2", C),
    ("sine (mlp, sgd)", "model.filters=32", R),
    ("sine (mlp, sgd)", "model.in_channels=3", R),
    ("sine (mlp, sgd)", "model.image_size=84", R),
    ("sine (mlp, sgd)", "model.stride=1", R),
    ("sine (mlp, sgd)", "model.max_pool=true", R),
    ("sine (mlp, sgd)", "model.bn_eps=1e-5", R),
    # ---------------------------------------------------------------------------------------- episode
    ("omniglot_small (conv4, batched)", "episode.ways=3", E),
    ("omniglot_small (conv4, batched)", "episode.ways=1", R),
    ("omniglot_small (conv4, batched)", "episode.shots=2", E),
    ("omniglot_small (conv4, batched)", "episode.query_shots=2", E),
    ("omniglot_small (conv4, batched)", "episode.train_shots=4", E),
    ("sine (mlp, sgd)", "episode.ways=5", R),
    ("sine (mlp, sgd)", "episode.shots=5", E),
    ("sine (mlp, sgd)", "episode.query_shots=100000", R),
    ("sine (mlp, sgd)", "episode.train_shots=20", C),
    # ---------------------------------------------------------------------------------------- trainer
    ("omniglot_small (conv4, batched)", "trainer.algorithm=fomaml", E),
    ("omniglot_small (conv4, batched)", "trainer.meta_iters=3", E),
    ("omniglot_small (conv4, batched)", "trainer.meta_batch_size=3", E),
    ("omniglot_small (conv4, batched)", "trainer.meta_step_size=0.5", E),
    ("omniglot_small (conv4, batched)", "trainer.meta_step_size_final=0.5", E),
    ("omniglot_small (conv4, batched)", "trainer.inner_optimizer=sgd", E),  # the preset's Adam epsilon: not typed
    ("omniglot_small (conv4, batched)", "trainer.adam_eps_convention=tensorflow trainer.inner_optimizer=sgd", R),
    ("omniglot_small (conv4, batched)", "trainer.inner_lr=0.01", E),
    ("omniglot_small (conv4, batched)", "trainer.adam_beta1=0.5", E),
    ("omniglot_small (conv4, batched)", "trainer.adam_beta2=0.9", E),
    ("omniglot_small (conv4, batched)", "trainer.adam_eps=0.01", E),
    ("omniglot_small (conv4, batched)", "trainer.adam_eps_convention=pytorch", E),
    ("omniglot_small (conv4, batched)", "trainer.loss_reduction=mean", E),
    ("omniglot_small (conv4, batched)", "trainer.inner_steps=3", E),
    ("omniglot_small (conv4, batched)", "trainer.inner_batch_size=5", E),
    ("omniglot_small (conv4, batched)", "trainer.eval_every=1", E),
    ("omniglot_small (conv4, batched)", "trainer.val_tasks=3", R),  # trainer.eval_every=0: no periodic validation
    ("omniglot_small (conv4, batched)", "trainer.val_tasks=3 trainer.eval_every=1", E),
    ("omniglot_small (conv4, batched)", "trainer.path=sequential", E),
    ("omniglot_small (conv4, sequential)", "trainer.loss_reduction=mean", E),
    ("omniglot_small (conv4, sequential)", "trainer.adam_eps_convention=pytorch", E),
    ("omniglot full, reptile split (conv4)", "trainer.eval_every=1000", R),
    ("omniglot full, reptile split (conv4)", "trainer.val_tasks=50", R),
    ("omniglot full, reptile split (conv4)", "eval.val_episodes=100", R),
    ("omniglot full, reptile split (conv4)", "eval.seed=1", R),
    ("sine (mlp, sgd)", "trainer.adam_beta1=0.5", R),
    ("sine (mlp, sgd)", "trainer.adam_beta2=0.9", R),
    ("sine (mlp, sgd)", "trainer.adam_eps=0.01", R),
    ("sine (mlp, sgd)", "trainer.adam_eps_convention=tensorflow", R),
    ("sine (mlp, sgd)", "trainer.loss_reduction=sum", E),
    ("sine (mlp, sgd)", "trainer.path=batched", C),
    # ---------------------------------------------------------------------------------------- eval
    ("omniglot_small (conv4, batched)", "eval.split=val", R),
    ("omniglot_small (conv4, batched)", "eval.episodes=100", R),
    ("omniglot_small (conv4, batched)", "eval.val_episodes=3", E),
    ("omniglot_small (conv4, batched)", "eval.seed=1", E),
    ("omniglot_small (conv4, batched)", "eval.transductive=true", E),
    ("omniglot_small (conv4, batched)", "eval.inner_steps=3", E),
    ("omniglot_small (conv4, batched)", "eval.inner_batch_size=2", E),
    ("omniglot_small (conv4, batched)", "eval.inner_state=fresh", E),
    ("omniglot_small (conv4, batched)", "eval.path=sequential", C),
    ("omniglot_small (conv4, batched)", "eval.chunk_size=1", C),
    ("omniglot_small (conv4, sequential)", "eval.path=sequential", C),
    ("omniglot_small (conv4, sequential)", "eval.new_head=zeros", R),
    ("omniglot_small (conv4, sequential)", "eval.episodes_file=f.json", R),
    ("omniglot_small (conv4, sequential)", "eval.save_episodes=f.json", R),
    ("sine (mlp, sgd)", "eval.transductive=true", R),
    ("sine (mlp, sgd)", "eval.inner_state=fresh", R),
    ("sine (mlp, sgd)", "eval.inner_steps=5", E),
    ("sine (mlp, sgd)", "eval.inner_batch_size=5", E),
    # ---------------------------------------------------------------------------------------- RL
    ("nav2d (policy, sgd)", "dataset.horizon=5", E),
    ("nav2d (policy, sgd)", "dataset.rollouts=2", E),
    ("nav2d (policy, sgd)", "dataset.discount=0.5", E),
    ("nav2d (policy, sgd)", "dataset.goal_low=-0.2", E),
    ("nav2d (policy, sgd)", "dataset.goal_high=0.2", E),
    ("nav2d (policy, sgd)", "dataset.action_limit=0.3", E),
    ("nav2d (policy, sgd)", "model.init_log_std=-1.0", E),
    ("nav2d (policy, sgd)", "model.hidden=[16]", E),
    ("nav2d (policy, sgd)", "model.distribution=categorical", R),
    ("nav2d (policy, sgd)", "model.filters=32", R),
    ("nav2d (policy, sgd)", "model.in_features=4", C),
    ("nav2d (policy, sgd)", "episode.ways=3", R),
    ("nav2d (policy, sgd)", "episode.train_shots=4", R),
    ("nav2d (policy, sgd)", "trainer.loss_reduction=sum", R),
    ("nav2d (policy, sgd)", "trainer.inner_batch_size=5", R),
    ("nav2d (policy, sgd)", "trainer.inner_lr=0.05", E),
    ("nav2d (policy, sgd)", "trainer.inner_steps=2", E),
    ("nav2d (policy, sgd)", "trainer.path=batched", C),
    ("nav2d (policy, sgd)", "eval.transductive=true", R),
    ("nav2d (policy, sgd)", "eval.chunk_size=4", R),
    ("nav2d (policy, sgd)", "eval.path=sequential", R),
    ("nav2d (policy, sgd)", "eval.inner_steps=2", E),
    ("nav2d (policy, sgd)", "eval.inner_batch_size=3", R),
    ("nav2d (policy, sgd)", "eval.seed=1", E),
    ("cartpole (policy, sgd)", "dataset.length_min=0.8", E),
    ("cartpole (policy, sgd)", "dataset.length_max=0.2", C),
    ("cartpole (policy, sgd)", "dataset.masspole_min=0.4", E),
    ("cartpole (policy, sgd)", "dataset.masspole_max=0.04", C),
    ("cartpole (policy, sgd)", "dataset.force_min=12.0", E),
    ("cartpole (policy, sgd)", "dataset.force_max=4.0", C),
    ("cartpole (policy, sgd)", "model.distribution=gaussian", R),
    ("sine (mlp, sgd)", "model.distribution=categorical", R),
    ("sine (mlp, sgd)", "model.init_log_std=-1.0", R),
    # ---------------------------------------------------------------------------------------- top level
    ("omniglot_small (conv4, batched)", "seed=1", E),
    ("omniglot_small (conv4, batched)", "dtype=float64", E),
    ("omniglot_small (conv4, batched)", "dtype=bfloat16", E),
    ("sine (mlp, sgd)", "seed=1", E),
]
# eval.path=sequential and eval.chunk_size change how the scores are computed, not the scores: they are
# checked ("checked") to equal the batched path's, which tests/test_batched.py asserts; trainer.path=batched on
# sine (vmap over the MLP) likewise computes the sequential path's numbers (SGD, one task per iteration).
# Keys that cannot change what is computed by design (logging, checkpoint cadence, progress, resume, max_time,
# name, device, threads) are listed in NOT_COMPUTATIONAL.
NOT_COMPUTATIONAL = {"trainer.checkpoint_every", "trainer.log_every", "trainer.resume", "trainer.max_time",
                     "trainer.progress", "name", "device", "threads", "logger", "dataset.name", "model.name",
                     "trainer.path",
                     "eval.path", "eval.chunk_size"}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """Data roots: a synthetic omniglot_small, a synthetic full Omniglot (1623 characters, 4 drawers), and a
    folder of 15 class folders (grey, non-binary 40x40 images)."""
    import numpy as np
    from PIL import Image

    base = tmp_path_factory.mktemp("audit")
    small = [f"Alpha{a}/character{c:02d}" for a in range(8) for c in range(1, 7)]
    write_store(base / "small" / "omniglot" / "omniglot_small.h5", small, 20)
    full = [f"Alpha{i // 40}/character{i % 40 + 1:02d}" for i in range(1623)]
    write_store(base / "full" / "omniglot" / "omniglot.h5", full, 4)
    rs = np.random.RandomState(0)
    for c in range(15):
        d = base / "tree" / f"class{c:02d}"
        d.mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rs.randint(0, 256, (40, 40), dtype=np.uint8), "L").save(d / f"{i}.png")
    return base


def compose_train(overrides):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def context_overrides(context: str, roots: Path) -> list[str]:
    extra = {"nav2d": [], "cartpole": [], "omniglot_small": [f"dataset.root={roots / 'small'}"],
             "folder": [f"dataset.root={roots / 'tree'}"],
             "omniglot full": [f"dataset.root={roots / 'full'}", "episode.train_shots=2", "episode.query_shots=1"],
             "sine": []}
    return CONTEXTS[context] + next(v for k, v in extra.items() if context.startswith(k))


def computed(overrides: list[str], run_dir: Path) -> dict:
    """What a run computes: the first training task's images and labels, the model's parameter shapes, the
    weights at the end of the run (at most a few meta-iterations), the validation records and the final
    validation summary, and, when there is a val split, the first validation task adapted by the evaluator:
    its adapted weights and query outputs under the configured protocol."""
    from reptile_cli.evaluate import Evaluator, predict
    from reptile_cli.reptile import get_params
    from reptile_cli.rundir import MetricsLog

    cfg = compose_train(overrides)
    trainer = Trainer(cfg, run_dir, given={o.split("=")[0] for o in overrides})
    task = trainer.family.train_task(cfg.seed, 0, 0)
    first = (task.x, task.y) if hasattr(task, "x") else (task.params, task.rollout(trainer.model, 0).rewards)
    out = {"task_x": first[0], "task_y": first[1],
           "shapes": {n: tuple(p.shape) for n, p in trainer.model.named_parameters()}}
    summary = trainer.run()
    out["weights"] = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    out["summary"] = {k: v for k, v in summary.items() if k != "ci95"}
    out["val_records"] = [r for r in MetricsLog(run_dir / "metrics.jsonl").read() if any("val/" in k for k in r)]
    if trainer.family.kind == "rl":  # the first validation task's adaptation curve
        from reptile_cli.evaluate import make_evaluator

        ev = make_evaluator(trainer.family, trainer.model, cfg.trainer, cfg.eval, trainer.device, trainer.dtype)
        out["adapted"] = ev.run_task(get_params(trainer.model), trainer.optimizer.state_dict(), "val", cfg.eval.seed, 0)
    elif "val" in trainer.family.splits:
        seq = OmegaConf.merge(cfg.eval, {"path": "sequential"})
        ev = Evaluator(trainer.family, trainer.model, cfg.trainer, seq, trainer.device, trainer.dtype,
                       trainer.autocast)
        ev.run_task(get_params(trainer.model), trainer.optimizer.state_dict(), "val", cfg.eval.seed, 0)
        out["adapted"] = get_params(ev.work)
        val_task = trainer.family.eval_task("val", cfg.eval.seed, 0)
        transductive = bool(cfg.eval.transductive) or trainer.family.kind != "classification"
        out["outputs"] = predict(ev.work, val_task.__class__(*(t.to(trainer.dtype) if t.is_floating_point() else t
                                                              for t in vars(val_task).values())), transductive)
    return out


def differs(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() != b.keys() or any(differs(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return len(a) != len(b) or any(differs(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return False
    return a != b


@pytest.fixture(scope="module")
def baselines(roots, tmp_path_factory):
    cache = {}

    def get(context):
        if context not in cache:
            cache[context] = computed(context_overrides(context, roots), tmp_path_factory.mktemp("base"))
        return cache[context]

    return get


@pytest.mark.parametrize("context,override,expected", AUDIT, ids=[f"{c}: {o}" for c, o, _ in AUDIT])
def test_audit(context, override, expected, roots, baselines, tmp_path, monkeypatch):
    monkeypatch.setenv("REPTILE_DATA", str(tmp_path / "cache"))
    overrides = context_overrides(context, roots) + override.replace("ELSEWHERE", str(tmp_path / "none")).split()
    if expected == E:
        assert differs(computed(overrides, tmp_path), baselines(context)), f"{override} changed nothing"
        return
    if override in ("eval.path=sequential", "eval.chunk_size=1", "trainer.path=batched") and not context.startswith(
            ("nav2d", "cartpole")):
        # the same numbers by another path (tests/test_batched.py asserts equality; here: nothing else moves)
        got, base = computed(overrides, tmp_path), baselines(context)
        for key in ("task_x", "shapes"):
            assert not differs(got[key], base[key])
        return
    with pytest.raises(ReptileError) as err:
        computed(overrides, tmp_path)
    message = str(err.value)
    assert "\n" not in message
    key = override.split("=")[0]  # the audited key: the first of the row's overrides
    if expected == R:
        assert "does not apply" in message or "1-way task" in message or "classifies images" in message or \
            "takes vectors" in message, message
    assert key in message or key.split(".")[-1] in message or "dataset" in message, message


def schema_keys() -> set[str]:
    keys = set()
    for section, cls in (("dataset", schema.ImageDataConfig), ("dataset", schema.SineDataConfig),
                         ("dataset", schema.Nav2DConfig), ("dataset", schema.CartPoleConfig),
                         ("model", schema.ModelConfig), ("episode", schema.EpisodeConfig),
                         ("trainer", schema.TrainerConfig), ("eval", schema.EvalConfig)):
        keys |= {f"{section}.{f.name}" for f in dataclasses.fields(cls)}
    keys |= {f.name for f in dataclasses.fields(schema.TrainCommand)} - {"dataset", "model", "episode", "trainer",
                                                                        "eval"}
    return keys


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml")))
def test_presets_set_no_key_that_does_not_apply(experiment):
    """Every key of every preset is checked (given=None): the presets' own values all apply."""
    from types import SimpleNamespace

    from reptile_cli.applicability import inapplicable
    from reptile_cli.data.datasets import LISTED

    cfg = compose_train([f"experiment={experiment}"])
    regression, rl = cfg.dataset.name == "sine", cfg.dataset.name in ("nav2d", "cartpole")
    fixed = cfg.dataset.name == "miniimagenet" or cfg.dataset.name in LISTED  # published splits with val classes
    splits = ("val", "test") if regression or rl or fixed else ("test",)
    kind = "regression" if regression else "rl" if rl else "classification"
    family = SimpleNamespace(kind=kind, splits=splits, seeded_split=not fixed,
                             distribution={"nav2d": "gaussian", "cartpole": "categorical"}.get(cfg.dataset.name))
    assert inapplicable(cfg, family, "train") == []


def test_every_key_is_audited():
    audited = {o.split("=")[0] for _, o, _ in AUDIT} | NOT_COMPUTATIONAL
    assert schema_keys() - audited == set()
