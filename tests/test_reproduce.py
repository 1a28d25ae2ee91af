"""`reptile reproduce`: the cells of the paper's table, their shared trainings, the records and the README
table generated from them."""

import json

import pytest
from omegaconf import OmegaConf

from reptile_cli import reproduce
from reptile_cli.confdir import config_dir
from reptile_cli.trainer import RESUME_MAY_CHANGE
from tests.conftest import REPO


def test_cells_are_the_papers_table():
    assert [c.name for c in reproduce.CELLS] == ["omniglot_5w1s", "omniglot_5w5s", "omniglot_20w1s",
                                                 "omniglot_20w5s", "miniimagenet_5w1s", "miniimagenet_5w5s"]
    assert reproduce.cell("omniglot_5w5s").paper == (98.90, 99.48)
    assert all((config_dir() / "experiment" / f"{c.name}.yaml").is_file() for c in reproduce.CELLS)
    with pytest.raises(Exception, match="no cell 'omniglot_5w2s'"):
        reproduce.cell("omniglot_5w2s")


@pytest.mark.parametrize("c", [c for c in reproduce.CELLS if c.train != c.name], ids=lambda c: c.name)
def test_cells_sharing_a_training_train_identically(c):
    """A cell may use another preset's training only when the two train the same thing: their configs differ
    in the run name and in evaluation settings only (episode.shots / query_shots, eval.*)."""
    a, b = (OmegaConf.to_container(reproduce.compose(p), resolve=True) for p in (c.name, c.train))
    differ = []
    for section in a:
        if isinstance(a[section], dict):
            differ += [f"{section}.{k}" for k in a[section] if a[section][k] != b[section].get(k)]
        elif a[section] != b[section]:
            differ.append(section)
    allowed = ("name", "episode.shots", "episode.query_shots", "eval.") + RESUME_MAY_CHANGE
    assert differ and all(d.startswith(allowed) for d in differ), differ


def test_eval_settings_are_the_cells_preset():
    assert reproduce.eval_settings(reproduce.cell("omniglot_5w5s")) == [
        "episode.ways=5", "episode.shots=5", "episode.query_shots=1", "eval.inner_steps=50",
        "eval.inner_batch_size=5"]
    assert "eval.inner_batch_size=15" in reproduce.eval_settings(reproduce.cell("miniimagenet_5w5s"))


def test_verdict():
    assert reproduce.verdict(95.39, 95.2, 0.4) == "the paper's mean is inside the 95% CI"
    assert reproduce.verdict(95.39, 94.0, 0.4) == "the paper's mean is 0.99 points above the 95% CI"


def test_readme_table_is_generated_from_the_records():
    """The README never disagrees with reproduce/*/record.json: its table is the one the records give."""
    text = (REPO / "README.md").read_text()
    assert reproduce.BEGIN in text and reproduce.END in text
    table = text.split(reproduce.BEGIN, 1)[1].split(reproduce.END, 1)[0].strip()
    assert table == reproduce.readme_table(reproduce.load_records(REPO / "reproduce"))


def test_every_cell_has_a_record_in_the_repository():
    for c in reproduce.CELLS:
        doc = json.loads((REPO / "reproduce" / c.name / "record.json").read_text())
        assert doc["cell"] == c.name and doc["state"] in ("done", "not run yet")
        if doc["state"] == "done":
            assert doc["evaluation"]["episodes"] == reproduce.EPISODES and doc["paper_settings"]
            assert set(doc["measured"]) == {"non_transductive", "transductive"}
            assert (REPO / "reproduce" / c.name / "eval.json").is_file()
        else:
            assert "expected_cost" in doc and "measured" not in doc


@pytest.mark.slow
def test_reproduce_a_cell_end_to_end_small(cli, tmp_path, small_store):
    """The real command on a tiny budget: trains (resumable), evaluates both protocols, writes the record; a
    second call reuses both; --list shows the state."""
    runs, records = tmp_path / "runs", tmp_path / "records"
    args = ["reproduce", "omniglot_5w5s", "--runs", str(runs), "--records", str(records), "--episodes", "4",
            "dataset=omniglot_small", f"dataset.root={small_store}", "trainer.meta_iters=3", "eval.val_episodes=2"]
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads((records / "omniglot_5w5s" / "record.json").read_text())
    assert doc["state"] == "done" and doc["training"]["iterations"] == 3 and not doc["paper_settings"]
    assert doc["shares_training_with"] == "omniglot_5w1s"
    assert doc["evaluation"]["settings"]["shots"] == 5 and doc["evaluation"]["episodes"] == 4
    assert (runs / "omniglot_5w1s-seed0" / "last.pt").is_file()
    ev = json.loads((records / "omniglot_5w5s" / "eval.json").read_text())
    assert "per_task" not in ev and "transductive" in ev
    mtime = (runs / "omniglot_5w1s-seed0" / "reproduce" / "omniglot_5w5s.json").stat().st_mtime
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (runs / "omniglot_5w1s-seed0" / "reproduce" / "omniglot_5w5s.json").stat().st_mtime == mtime
    r = cli("reproduce", "--list", "--runs", str(runs), "--records", str(records), cwd=tmp_path)
    assert r.returncode == 0 and "omniglot_5w5s" in r.stdout and "recorded" in r.stdout, r.stdout
