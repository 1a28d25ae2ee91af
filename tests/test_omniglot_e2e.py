"""Omniglot end to end on the real small archives from the shared mirror: download, train, evaluate."""

import json
import subprocess
import sys
import zipfile

import pytest
import torch

from reptile_cli.checkpoint import load_checkpoint
from tests.conftest import REPO, SHARED_DATA

MIRROR = SHARED_DATA / "omniglot"
pytestmark = pytest.mark.skipif(not (MIRROR / "images_background_small1.zip").is_file(),
                                reason="shared Omniglot mirror not present")


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    r = subprocess.run([sys.executable, "-m", "reptile_cli", "data", "download", "omniglot", "--variant", "small",
                        "--root", str(root), "--mirror", str(MIRROR)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return root


def test_train_and_eval_small(cli, small_root, tmp_path):
    run = tmp_path / "run"
    r = cli("train", "experiment=omniglot_5w1s", "dataset=omniglot_small", f"dataset.root={small_root}",
            "trainer.meta_iters=20", "trainer.log_every=10", "eval.val_episodes=10", "trainer.progress=false",
            f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    val = json.loads((run / "eval.json").read_text())
    assert val["split"] == "val" and val["metric"] == "acc" and 0 <= val["mean"] <= 1
    trained = load_checkpoint(run / "last.pt")
    assert trained["task"] == {"kind": "classification", "ways": 5, "metric": "acc"}
    # the preset's fast path: every task starts from the shared state, which advances by one task's 5 steps
    assert trained["inner_state_semantics"] == "shared" and trained["inner_optimizer"]["step"] == 20 * 5

    results = {}
    for transductive in ("false", "true"):
        for state in ("checkpoint", "fresh"):
            out = tmp_path / f"eval-{transductive}-{state}.json"
            r = cli("eval", str(run), "eval.episodes=8", f"eval.transductive={transductive}",
                    f"eval.inner_state={state}", f"output={out}", "trainer.progress=false", cwd=tmp_path)
            assert r.returncode == 0, r.stderr
            results[transductive, state] = json.loads(out.read_text())
    a = results["false", "checkpoint"]
    assert a["protocol"] == "non_transductive" and a["episodes"] == 8 and a["settings"]["inner_steps"] == 50
    assert results["true", "checkpoint"]["protocol"] == "transductive"
    # the adaptation is the same; only the final classification differs between protocols
    assert results["true", "checkpoint"]["mean"] == pytest.approx(a["transductive"]["mean"])
    assert results["true", "checkpoint"]["non_transductive"]["mean"] == pytest.approx(a["mean"])
    # evaluation changed nothing in the checkpoint
    after = load_checkpoint(run / "last.pt")
    assert all(torch.equal(after["model"][k], trained["model"][k]) for k in trained["model"])


def test_eval_refuses_a_head_of_another_size(cli, small_root, tmp_path):
    run = tmp_path / "run"
    r = cli("train", "experiment=omniglot_5w1s", "dataset=omniglot_small", f"dataset.root={small_root}",
            "trainer.meta_iters=2", "eval.val_episodes=2", "trainer.progress=false", f"hydra.run.dir={run}",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli("eval", str(run / "last.pt"), "episode.ways=20", cwd=tmp_path)
    assert r.returncode == 2 and "5-way head" in r.stderr and "Traceback" not in r.stderr
    # 1-way tasks are refused first, not answered with advice (another head) that would be refused next
    r = cli("eval", str(run / "last.pt"), "episode.ways=1", cwd=tmp_path)
    assert r.returncode == 2 and "episode.ways=1: a 1-way task is solved without learning" in r.stderr
    assert "head" not in r.stderr


def test_wheel_ships_the_configs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path), str(REPO)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    names = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist()
    assert "reptile_cli/conf/train.yaml" in names and "reptile_cli/conf/experiment/omniglot_5w1s.yaml" in names


@pytest.fixture(scope="module")
def full_root(tmp_path_factory):
    """The full Omniglot imported from the mirror's repacked zips, plus the Vinyals split files."""
    root = tmp_path_factory.mktemp("full")
    for args in (["import", "omniglot", str(MIRROR / "images_background.repacked.zip"),
                  str(MIRROR / "images_evaluation.repacked.zip")],
                 ["download", "omniglot-splits", "--mirror", str(SHARED_DATA / "splits" / "omniglot_vinyals")]):
        r = subprocess.run([sys.executable, "-m", "reptile_cli", "data", *args, "--root", str(root)],
                           capture_output=True, text=True, cwd=REPO)
        assert r.returncode == 0, r.stderr
    return root


def split_counts(root, **data):
    from omegaconf import OmegaConf

    from reptile_cli.config import EpisodeConfig, ImageDataConfig
    from reptile_cli.families import build_task_family

    fam = build_task_family(OmegaConf.structured(ImageDataConfig(name="omniglot", root=str(root), **data)),
                            OmegaConf.structured(EpisodeConfig()))
    chars = {s: {n.split("/rot")[0] for n in p.names} for s, p in fam.pools.items()}
    for a in chars:
        for b in chars:
            assert a == b or not chars[a] & chars[b], (a, b)
    return {s: (len(p), len(chars[s])) for s, p in fam.pools.items()}, chars


@pytest.mark.skipif(not (MIRROR / "images_background.repacked.zip").is_file(), reason="no full set in mirror")
def test_split_counts_on_the_full_set(full_root):
    """(classes, distinct characters) per split; no character in two splits (checked inside)."""
    counts, chars = split_counts(full_root)
    assert counts == {"train": (4800, 1200), "test": (423, 423)}
    counts, with_val = split_counts(full_root, val_characters=100)
    assert counts == {"train": (4400, 1100), "val": (100, 100), "test": (423, 423)}
    assert with_val["test"] == chars["test"]  # carving validation never touches the test characters
    counts, vinyals = split_counts(full_root, split="vinyals")
    assert counts == {"train": (4112, 1028), "val": (688, 172), "test": (1692, 423)}
    assert "Gurmukhi/character42" in vinyals["test"] and "Gurmukhi/character01" in vinyals["train"]
    counts, other = split_counts(full_root, split_seed=1)  # split_seed moves characters between splits
    assert counts == {"train": (4800, 1200), "test": (423, 423)} and other["test"] != chars["test"]
