"""Config composition: every preset composes with the typed schemas; bad keys and types fail up front."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from reptile_cli.confdir import config_dir
from reptile_cli.config import register_configs

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


def compose_train(overrides):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_presets_exist():
    assert {"sine", "omniglot_5w1s", "omniglot_5w5s", "omniglot_20w1s", "omniglot_20w5s"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = compose_train([f"experiment={experiment}"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert cfg.name == experiment


@pytest.mark.parametrize("name,ways,shots,steps,batch,lr,iters,eval_batch", [
    ("omniglot_5w1s", 5, 1, 5, 10, 0.001, 100_000, 5),
    ("omniglot_5w5s", 5, 5, 5, 10, 0.001, 100_000, 5),
    ("omniglot_20w1s", 20, 1, 10, 20, 0.0005, 200_000, 10),
    ("omniglot_20w5s", 20, 5, 10, 20, 0.0005, 200_000, 10),
])
def test_paper_hyperparameters(name, ways, shots, steps, batch, lr, iters, eval_batch):
    """The appendix table of the paper (REFERENCE.md), cell by cell."""
    c = compose_train([f"experiment={name}"])
    assert (c.episode.ways, c.episode.shots, c.episode.train_shots, c.episode.query_shots) == (ways, shots, 10, 1)
    t = c.trainer
    assert (t.inner_steps, t.inner_batch_size, t.inner_lr, t.meta_iters) == (steps, batch, lr, iters)
    assert (t.meta_batch_size, t.meta_step_size, t.meta_step_size_final, t.adam_beta1) == (5, 1.0, 0.0, 0.0)
    assert (c.eval.inner_steps, c.eval.inner_batch_size, c.eval.episodes) == (50, eval_batch, 10_000)
    assert c.model.name == "conv4" and c.model.filters == 64 and c.model.stride == 2
    assert c.trainer.path == "batched"  # made the default after the paired comparison (README "Fast path")


@pytest.mark.parametrize("name", ["miniimagenet_5w1s", "miniimagenet_5w5s", "sine"])
def test_presets_not_compared_keep_the_reference_path(name):
    assert compose_train([f"experiment={name}"]).trainer.path == "sequential"


def test_sine_preset_is_the_papers_recipe():
    c = compose_train(["experiment=sine"])
    t = c.trainer
    assert (t.inner_optimizer, t.inner_lr, t.inner_steps, t.inner_batch_size) == ("sgd", 0.02, 5, 10)
    assert (t.meta_step_size, t.meta_step_size_final, t.meta_iters, t.meta_batch_size) == (0.1, 0.0, 30_000, 1)
    assert (c.eval.inner_steps, c.episode.shots, c.dataset.num_points) == (32, 10, 50)
    assert list(c.model.hidden) == [64, 64] and c.model.activation == "tanh"


def test_typed_values():
    c = compose_train(["trainer.inner_lr=1", "seed=3"])
    assert isinstance(c.trainer.inner_lr, float) and c.trainer.inner_lr == 1.0


@pytest.mark.parametrize("override", ["trainer.inner_lrr=0.1", "trainer.inner_lr=abc", "device=tpu",
                                      "experiment=nope", "trainer.inner_optimizer=adamw"])
def test_bad_override_fails_at_compose(override):
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    with pytest.raises((HydraException, OmegaConfBaseException)):
        compose_train([override])


def test_configs_ship_inside_the_package():
    """The wheel maps conf/ to reptile_cli/conf (pyproject); config_dir() finds the checkout copy first."""
    assert config_dir() == Path(__file__).resolve().parents[1] / "conf"


def test_wheel_lists_every_subpackage_and_the_class_lists():
    """A package left out of pyproject's list is missing from a (non-editable) install: every folder of
    reptile_cli with an __init__.py is listed, and the shipped class lists are package data."""
    import tomllib

    repo = Path(__file__).resolve().parents[1]
    setup = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(repo).parts) for p in (repo / "reptile_cli").rglob("__init__.py")}
    assert found <= set(setup["packages"])
    lists = sorted(p.relative_to(repo / "reptile_cli" / "data").as_posix()
                   for p in (repo / "reptile_cli" / "data" / "class_lists").rglob("*.txt"))
    patterns = setup["package-data"]["reptile_cli.data"]
    assert lists and all(any(Path(f).match(pat) for pat in patterns) for f in lists)


def test_cli_names_every_listed_dataset():
    """The CLI names the class-list datasets itself (so that --help imports no data module): the same ones, with
    a download command exactly for those that have an official archive."""
    from reptile_cli import cli
    from reptile_cli.data.datasets import LISTED

    assert cli.LISTED == tuple(LISTED)
    assert {n for n in cli.DOWNLOADS if n in LISTED} == {n for n, spec in LISTED.items() if spec.download}
    assert set(LISTED) <= set(cli.IMPORTS)
    for name in LISTED:
        assert (config_dir() / "dataset" / f"{name}.yaml").is_file()
        for shots in (1, 5):
            assert (config_dir() / "experiment" / f"{name}_5w{shots}s.yaml").is_file()
