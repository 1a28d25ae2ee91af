"""Several processes (torchrun, gloo on the CPU) give the single-process result of the batched semantics."""

import json
import os
import subprocess
import sys

import pytest
import torch

from reptile_cli.checkpoint import load_checkpoint
from reptile_cli.distributed import block

COMMON = ["experiment=omniglot_5w1s", "dataset=omniglot_small", "dtype=float64", "trainer.meta_iters=6",
          "trainer.checkpoint_every=1", "eval.val_episodes=4", "trainer.progress=false"]


def torchrun(*args, cwd, procs=2):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
                           "-m", "reptile_cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def relative_gap(a: dict, b: dict) -> float:
    """||a - b|| / ||b|| over all tensors flattened together (per tensor, the conv biases before batch norm,
    ~1e-11 of pure rounding noise, differ at their own scale under any change of summation order; see
    tests/test_batched.py)."""
    va = torch.cat([a[k].flatten() for k in sorted(a)])
    vb = torch.cat([b[k].flatten() for k in sorted(a)])
    return float((va - vb).norm() / vb.norm())


def test_blocks_cover_every_task_once():
    assert [list(block(5, 2, r)) for r in range(2)] == [[0, 1, 2], [3, 4]]
    for n in range(1, 12):
        for world in range(1, n + 1):
            parts = [list(block(n, world, r)) for r in range(world)]
            assert sum(parts, []) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


DROPOUT = ["model=resnet12", "model.widths=[4,6,8,8]", "model.drop_rate=0.2", "model.dropblock_size=2"]


@pytest.mark.parametrize("meta_batch,extra", [
    (4, []), pytest.param(5, [], marks=pytest.mark.slow, id="5-uneven"),
    # dropout masks come from (seed, iteration, task index): each process draws its tasks' as one process would
    pytest.param(4, DROPOUT, marks=pytest.mark.slow, id="4-resnet12-dropout")])
def test_two_processes_equal_one_in_float64(cli, tmp_path, small_store, meta_batch, extra):
    args = [*COMMON, f"dataset.root={small_store}", f"trainer.meta_batch_size={meta_batch}", *extra]
    one = tmp_path / "one"
    r = cli("train", *args, "trainer.path=batched", f"hydra.run.dir={one}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ref = load_checkpoint(one / "last.pt")
    for path in ("batched", "sequential"):  # under torchrun both use the shared-state semantics
        two = tmp_path / f"two_{path}"
        r = torchrun("train", *args, f"trainer.path={path}", f"hydra.run.dir={two}", cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        got = load_checkpoint(two / "last.pt")
        assert got["iteration"] == 6
        assert relative_gap(got["model"], ref["model"]) < 1e-8
        for key in ("exp_avg", "exp_avg_sq"):
            assert relative_gap(got["inner_optimizer"][key], ref["inner_optimizer"][key]) < 1e-8
        assert got["inner_optimizer"]["step"] == ref["inner_optimizer"]["step"] == 6 * 5
        prov = json.loads((two / "provenance.json").read_text())
        assert prov["processes"] == 2 and "shared" in prov["inner_state_semantics"]
        assert not (tmp_path / "runs").exists()  # rank 1 worked in rank 0's directory, made none of its own
    # only rank 0 wrote: one metrics line per logged iteration, no duplicates
    its = [json.loads(line)["iteration"] for line in (two / "metrics.jsonl").read_text().splitlines()
           if "train/loss" in line]
    assert its == sorted(set(its))


def test_stop_and_resume_under_torchrun(cli, tmp_path, small_store):
    args = [*COMMON, f"dataset.root={small_store}", "trainer.meta_batch_size=5"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert torchrun("train", *args, f"hydra.run.dir={ref}", cwd=tmp_path).returncode == 0
    r = torchrun("train", *args, "trainer.max_time=0.001", f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode != 0 and "trainer.resume=" in r.stderr
    stopped = load_checkpoint(run / "last.pt")["iteration"]
    assert 1 <= stopped < 6
    r = torchrun("train", f"trainer.resume={run}", "trainer.max_time=null", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_checkpoint(ref / "last.pt"), load_checkpoint(run / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_eval_split_across_processes_matches_one(cli, tmp_path, small_store):
    run = tmp_path / "run"
    args = [*COMMON, f"dataset.root={small_store}"]
    assert cli("train", *args, "trainer.meta_iters=2", f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    r = cli("eval", str(run / "last.pt"), "eval.episodes=7", f"output={one}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = torchrun("eval", str(run / "last.pt"), "eval.episodes=7", f"output={two}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert len(b["per_task"]) == 7 and b["per_task"] == pytest.approx(a["per_task"], abs=1e-12)
    assert b["mean"] == pytest.approx(a["mean"]) and b["ci95"] == pytest.approx(a["ci95"])


def test_meta_batch_smaller_than_processes_is_refused(tmp_path, small_store):
    r = torchrun("train", *COMMON, f"dataset.root={small_store}", "trainer.meta_batch_size=1",
                 f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert r.returncode != 0 and "trainer.meta_batch_size=1 is smaller than the 2 processes" in r.stderr
