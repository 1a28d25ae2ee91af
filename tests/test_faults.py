"""Faults that used to leak (issue 20): a full disk, read-only data roots, runs killed with -9, interrupted
sweeps, overrides that do not apply, stub directories and empty logs."""

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reptile_cli import locks
from reptile_cli.checkpoint import load_checkpoint
from reptile_cli.rundir import read_state
from tests.conftest import SHARED_DATA
from tests.test_cli import SINE_NO_PERIODIC
from tests.test_resume import SINE, start, wait_for_checkpoint

MIRROR = SHARED_DATA / "omniglot"


def one_line_error(r, code=1) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("reptile: error: "), r.stderr
    return last


@pytest.fixture
def mounted(tmp_path):
    """mount(size, read_only) -> a fresh tmpfs (root only; skipped where mounting is not allowed)."""
    points = []

    def mount(size="2m", read_only=False):
        point = tmp_path / f"mnt{len(points)}"
        point.mkdir()
        opts = f"size={size}" + (",ro" if read_only else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()[:80]})")
        points.append(point)
        return point

    yield mount
    for p in points:
        subprocess.run(["umount", str(p)], capture_output=True)


def small_args(small_store):
    return ["experiment=omniglot_5w1s", "dataset=omniglot_small", f"dataset.root={small_store}",
            "trainer.meta_iters=6", "trainer.checkpoint_every=2", "eval.val_episodes=2", "eval.inner_steps=2",
            "trainer.progress=false"]


def test_full_disk_is_one_line_and_the_state_is_recorded(cli, tmp_path, small_store, mounted):
    """Case 1 on a 2 MB tmpfs: init.pt (1.4 MB) fits, the first last.pt does not."""
    disk = mounted("2m")
    run = disk / "run"
    r = cli("train", *small_args(small_store), f"hydra.run.dir={run}", cwd=tmp_path)
    error = one_line_error(r)
    assert f"cannot write {run / 'last.pt'}: no space left on device" in error
    state = json.loads((run / "state.json").read_text())
    assert state["state"] == "failed" and "no space left on device" in state["message"]
    assert load_checkpoint(run / "init.pt")["iteration"] == 0  # the last good file is intact
    assert not list(run.glob(".*.tmp"))
    # a second attempt on the full disk: the same one line, and no stub directory
    r = cli("train", *small_args(small_store), f"hydra.run.dir={disk / 'again'}", cwd=tmp_path)
    assert "no space left on device" in one_line_error(r)
    assert not (disk / "again").exists()


def test_file_size_limit_is_one_line(tmp_path, small_store):
    """The equivalent of a full disk that needs no mount: writes beyond RLIMIT_FSIZE fail (EFBIG)."""
    run = tmp_path / "run"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, "-m", "reptile_cli", "train", *small_args(small_store),
                        f"hydra.run.dir={run}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       preexec_fn=limit, timeout=300)
    error = one_line_error(r)
    assert "init.pt: the write stopped short" in error and "ulimit -f" in error
    assert not run.exists()  # it failed before it started: no stub


def read_only_root(tmp_path, mounted):
    if os.geteuid() == 0:
        return mounted("1m", read_only=True)
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o555)
    return root


@pytest.mark.skipif(not (MIRROR / "images_background_small1.zip").is_file(), reason="no mirror")
def test_read_only_data_root_is_one_line(cli, tmp_path, mounted):
    """Case 2: download and import into a read-only root."""
    root = read_only_root(tmp_path, mounted)
    r = cli("data", "download", "omniglot", "--variant", "small", "--mirror", str(MIRROR), "--root", str(root))
    assert "Read-only file system" in one_line_error(r) or "Permission denied" in r.stderr
    r = cli("data", "import", "omniglot", str(MIRROR / "images_background_small1.zip"),
            str(MIRROR / "images_background_small2.zip"), "--root", str(root))
    assert "Read-only file system" in one_line_error(r) or "Permission denied" in r.stderr
    r = cli("data", "download", "omniglot-splits", "--mirror", str(SHARED_DATA / "splits" / "omniglot_vinyals"),
            "--root", str(root))
    assert "Read-only file system" in one_line_error(r) or "Permission denied" in r.stderr


def test_killed_run_reads_as_died_and_its_temporaries_go(tmp_path):
    """Case 3: after kill -9, the first reader records the run as died and removes the dead writer's
    temporary files; a live run reads as running."""
    run = tmp_path / "run"
    proc = start([*SINE, "trainer.meta_iters=100000", f"hydra.run.dir={run}"], tmp_path)
    wait_for_checkpoint(run, 25, proc)
    assert read_state(run)["state"] == "running"  # alive: untouched
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stale = [run / ".last.pt.x1y2z3.tmp", run / ".state.json.a1b2c3.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    state = read_state(run)
    assert state["state"] == "died" and "trainer.resume=" in state["message"]
    assert json.loads((run / "state.json").read_text())["state"] == "died"
    assert not any(p.exists() for p in stale) and not (run / locks.LOCK_NAME).exists()


def sweep_args(sweep):
    return ["-m", *SINE_NO_PERIODIC, "trainer.meta_iters=120", "trainer.checkpoint_every=20", "eval.val_episodes=5",
            "trainer.inner_lr=0.01,0.02", "seed=0,1", f"hydra.sweep.dir={sweep}"]


@pytest.mark.slow
def test_interrupted_sweep_lists_every_job_and_resumes(cli, tmp_path):
    """Case 4: a 2x2 sweep stopped by Ctrl-C in its second job lists all four jobs with their states, and
    `reptile sweep --resume` completes it with the results of an uninterrupted sweep."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    r = cli("train", *sweep_args(whole), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "reptile_cli", "train", *sweep_args(cut)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(cut / "1", 40, proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 3
    r = cli("sweep", str(cut), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    states = {row.split(",")[1]: row.split(",")[2] for row in (cut / "sweep.csv").read_text().splitlines()[1:]}
    assert states == {"0": "completed", "1": "stopped", "2": "not started", "3": "not started"}
    assert "reptile sweep --resume" in r.stdout
    r = cli("sweep", "--resume", str(cut), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for job in ("0", "1", "2", "3"):
        assert json.loads((cut / job / "state.json").read_text())["state"] == "completed"
        a, b = load_checkpoint(cut / job / "last.pt")["model"], load_checkpoint(whole / job / "last.pt")["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), job
        ea, eb = (json.loads((d / job / "eval.json").read_text()) for d in (cut, whole))
        assert ea["mean"] == eb["mean"] and ea["ci95"] == eb["ci95"]
    iterations = [json.loads(x)["iteration"] for x in (cut / "1" / "metrics.jsonl").read_text().splitlines()
                  if "train/loss" in x]
    assert iterations == sorted(set(iterations))


def test_running_job_shows_its_real_iteration(tmp_path):
    """A running job whose state.json was written at its last checkpoint shows the iteration of its metrics."""
    from reptile_cli.report import find_jobs

    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (tmp_path / "multirun.yaml").write_text("hydra:\n  overrides:\n    task: ['seed=0,1']\n")
    (job / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (job / "state.json").write_text(json.dumps({"state": "running", "iteration": 0}))
    (job / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i, "train/loss": 1.0}) + "\n"
                                               for i in (1000, 2000, 3100)))
    hold = locks.lock_dir(job)
    try:
        jobs = find_jobs(tmp_path)
    finally:
        hold.release()
    assert [(j.name, j.state, j.iteration) for j in jobs] == [("0", "running", 3100), ("1", "not started", None)]


def test_overrides_that_do_not_apply_to_a_sine_checkpoint_are_refused(cli, tmp_path, small_store):
    """Case 5."""
    run = tmp_path / "run"
    r = cli("train", *SINE, "trainer.meta_iters=20", f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for override, needle in (("episode.ways=5", "episode.ways=5 does not apply"),
                             ("episode.query_shots=100000", "query set is the whole grid"),
                             ("eval.transductive=true", "eval.transductive=true does not apply")):
        r = cli("eval", str(run), "eval.episodes=5", override, cwd=tmp_path)
        assert needle in one_line_error(r, 2), override
    assert not (run / "eval").exists()  # and no stub evaluation directories
    r = cli("train", *small_args(small_store), "episode.ways=1", f"hydra.run.dir={tmp_path / 'one'}", cwd=tmp_path)
    assert "1-way task" in one_line_error(r, 2)


def test_failed_calls_leave_no_stub_directories_and_logs_are_not_empty(cli, tmp_path, small_store):
    """Case 6: a train or eval that fails before starting leaves no directory; an evaluation's log is either
    absent or holds lines."""
    r = cli("train", *small_args(small_store), "dataset.root=/nonexistent/data", "name=stub", cwd=tmp_path)
    one_line_error(r)
    assert not (tmp_path / "runs" / "stub").exists() or not any((tmp_path / "runs" / "stub").iterdir())
    r = cli("train", *small_args(small_store), f"hydra.run.dir={tmp_path / 'given'}", "trainer.inner_lr=-1",
            cwd=tmp_path)
    one_line_error(r, 2)
    assert not (tmp_path / "given").exists()
    run = tmp_path / "run"
    r = cli("train", *SINE, "trainer.meta_iters=20", f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (run / "train.log").stat().st_size > 0
    r = cli("eval", str(run), "eval.episodes=5", "eval.seed=1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for log in Path(run / "eval").rglob("*.log"):
        assert log.stat().st_size > 0, log
    r = cli("eval", str(run), "eval.episodes=5", "eval.inner_steps=0", cwd=tmp_path)
    one_line_error(r, 2)
    assert len(list((run / "eval").iterdir())) == 1  # the successful evaluation's directory only
