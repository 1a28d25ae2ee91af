"""The model zoo through the whole tool: a sweep over models, exact resume and evaluation with a CI, for
ResNet-12 as for Conv4 (tiny widths, synthetic omniglot_small images)."""

import json

import pytest
import torch

from reptile_cli.checkpoint import load_checkpoint
from tests.conftest import metrics_records

BASE = ["experiment=omniglot_5w1s", "dataset=omniglot_small", "trainer.meta_iters=4", "trainer.checkpoint_every=1",
        "eval.val_episodes=2", "eval.inner_steps=2", "trainer.progress=false", "threads=1"]
TINY = ["model=resnet12", "model.widths=[4,6,8,8]"]


@pytest.mark.slow
def test_sweep_over_models_then_eval(cli, tmp_path, small_store):
    r = cli("train", "-m", *BASE, f"dataset.root={small_store}", "model=conv4_omniglot,resnet12",
            "model.filters=8", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    # model.filters is conv4's: refused in the resnet12 job, which the sweep reports; the conv4 job runs
    assert r.returncode != 0 and "1 of 2 jobs failed" in r.stderr, r.stderr
    states = {j: json.loads((tmp_path / "sweep" / j / "state.json").read_text()) for j in ("0", "1")}
    assert states["0"]["state"] == "completed"
    assert states["1"]["state"] == "failed" and states["1"]["message"].startswith("model.filters=8 does not apply")
    r = cli("train", "-m", *BASE, f"dataset.root={small_store}", "model=resnet12,resnet12_narrow",
            "model.widths=[4,6,8,8],[4,4,4,4]", f"hydra.sweep.dir={tmp_path / 'sweep2'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    jobs = sorted(p for p in (tmp_path / "sweep2").iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 4
    widths = {tuple(load_checkpoint(j / "last.pt")["config"]["model"]["widths"]) for j in jobs}
    assert widths == {(4, 6, 8, 8), (4, 4, 4, 4)}
    for job in jobs:
        ckpt = load_checkpoint(job / "last.pt")
        assert ckpt["iteration"] == 4 and ckpt["config"]["model"]["name"] == "resnet12"
    out = tmp_path / "eval.json"
    for path in ("batched", "sequential"):  # the same tasks, the same numbers, by either path
        r = cli("eval", str(jobs[0] / "last.pt"), "eval.episodes=6", "eval.inner_steps=2", f"eval.path={path}",
                f"output={out}", "trainer.progress=false", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        result = json.loads(out.read_text())
        assert result["episodes"] == 6 and len(result["per_task"]) == 6 and result["evaluation"]["path"] == path
        assert result["ci95"] > 0
        if path == "batched":
            batched = result["per_task"]
    assert result["per_task"] == batched


def test_resnet12_resume_is_exact(cli, tmp_path, small_store):
    """Stopped after its first meta-iteration (trainer.max_time) and resumed, a ResNet-12 run on the batched
    path with dropout and DropBlock on ends with the weights and Adam state of the same run left alone (the
    masks are drawn by (seed, iteration, task), not from a state the checkpoint would have to keep)."""
    args = [*BASE, *TINY, f"dataset.root={small_store}", "trainer.path=batched", "model.drop_rate=0.2",
            "model.dropblock_size=2", "trainer.log_every=2"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    r = cli("train", *args, f"hydra.run.dir={ref}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli("train", *args, "trainer.max_time=0.001", f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    assert load_checkpoint(run / "last.pt")["iteration"] < 4
    r = cli("train", f"trainer.resume={run}", "trainer.max_time=null", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    a, b = load_checkpoint(ref / "last.pt"), load_checkpoint(run / "last.pt")
    assert b["iteration"] == 4
    # the metrics too: the line at iteration 2 averages iterations 1 (before the stop) and 2 (after it)
    assert [r["iteration"] for r in metrics_records(ref) if "train/loss" in r] == [2, 4]
    assert metrics_records(run) == metrics_records(ref)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for key in ("exp_avg", "exp_avg_sq"):
        sa, sb = a["inner_optimizer"][key], b["inner_optimizer"][key]
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
