"""One writer per run directory (issue 19): two trainings into one directory, a resume of a live run, two
evaluations into one output, two sweeps into one directory, two preparations of one dataset; locks left by
killed processes never block."""

import json
import os
import signal
import subprocess
import sys
import time

import torch

from reptile_cli import locks
from reptile_cli.checkpoint import load_checkpoint
from tests.test_resume import SINE, start, wait_for_checkpoint

QUICK = [a for a in SINE if not a.startswith("trainer.meta_iters")] + ["trainer.meta_iters=150"]


def files(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_two_trainings_into_one_directory_one_runs(cli, tmp_path):
    run, ref = tmp_path / "run", tmp_path / "ref"
    procs = [start([*QUICK, f"hydra.run.dir={run}"], tmp_path) for _ in range(2)]
    outcomes = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        outcomes.append((p.returncode, err))
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 2], outcomes
    loser = next(err for code, err in outcomes if code == 2)
    assert len(loser.strip().splitlines()) == 1 and f"run directory {run} is in use by process" in loser
    # the directory holds one run: metrics strictly increasing, weights those of an uninterrupted run
    iterations = [json.loads(line)["iteration"] for line in (run / "metrics.jsonl").read_text().splitlines()
                  if "train/loss" in line]
    assert iterations == sorted(set(iterations)) and iterations[-1] == 150
    r = cli("train", *QUICK, f"hydra.run.dir={ref}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    a, b = load_checkpoint(run / "last.pt")["model"], load_checkpoint(ref / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run / "state.json").read_text())["state"] == "completed"


def test_resume_of_a_live_run_is_refused_and_changes_nothing(cli, tmp_path):
    run = tmp_path / "run"
    proc = start([*SINE, "trainer.meta_iters=100000", f"hydra.run.dir={run}"], tmp_path)
    try:
        wait_for_checkpoint(run, 25, proc)
        os.kill(proc.pid, signal.SIGSTOP)  # hold the run still while the files are compared
        before = files(run)
        r = cli("train", f"trainer.resume={run}", cwd=tmp_path)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert f"run directory {run} is in use by process {proc.pid}" in r.stderr
        r = cli("train", *SINE, "trainer.resume=auto", f"hydra.run.dir={run}", cwd=tmp_path)
        assert r.returncode == 2 and "is in use" in r.stderr
        assert files(run) == before
        os.kill(proc.pid, signal.SIGCONT)
    finally:
        proc.kill()
        proc.wait()


def test_kill_9_leaves_no_live_lock_and_stale_temporaries_go(cli, tmp_path):
    run = tmp_path / "run"
    proc = start([*SINE, f"hydra.run.dir={run}"], tmp_path)
    wait_for_checkpoint(run, 50, proc)
    assert locks.is_held(run) is True
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert locks.is_held(run) is False  # the kernel dropped it with the process
    stale = [run / ".last.pt.abc123.tmp", run / ".state.json.def456.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    r = cli("train", f"trainer.resume={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not any(p.exists() for p in stale)
    assert load_checkpoint(run / "last.pt")["iteration"] == 400


def test_two_evaluations_into_one_output(cli, tmp_path):
    run = tmp_path / "run"
    r = cli("train", *SINE, "trainer.meta_iters=20", f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "same.json"
    hold = locks.lock_beside(out, "evaluation output")  # an evaluation writing there right now
    try:
        r = cli("eval", str(run), "eval.episodes=5", f"output={out}", cwd=tmp_path)
        assert r.returncode == 2 and f"evaluation output {out} is in use by process {os.getpid()}" in r.stderr
        assert not out.exists()
    finally:
        hold.release()
    r = cli("eval", str(run), "eval.episodes=5", f"output={out}", cwd=tmp_path)
    assert r.returncode == 0 and out.is_file(), r.stderr


def test_a_sweep_directory_in_use_is_refused(cli, tmp_path):
    from tests.test_cli import SINE_NO_PERIODIC

    sweep = tmp_path / "sweep"
    hold = locks.lock_dir(sweep, "sweep directory")
    try:
        r = cli("train", "-m", *SINE_NO_PERIODIC, "trainer.meta_iters=10", "seed=0,1", f"hydra.sweep.dir={sweep}",
                cwd=tmp_path)
        assert r.returncode == 2 and f"sweep directory {sweep} is in use" in r.stderr.strip().splitlines()[-1]
        assert not (sweep / "0").exists()
    finally:
        hold.release()


def test_two_preparations_of_one_folder(tmp_path):
    """Both processes get the same prepared file; one prepares it, the other waits and reuses it."""
    import numpy as np
    from PIL import Image

    rs = np.random.RandomState(0)
    for c in range(6):
        (tmp_path / "tree" / f"c{c}").mkdir(parents=True)
        for i in range(40):
            Image.fromarray(rs.randint(0, 256, (56, 56), dtype=np.uint8), "L").save(tmp_path / "tree" / f"c{c}" /
                                                                                      f"{i}.png")
    code = ("import sys; from reptile_cli.data.folder import prepare_folder; "
            "print(prepare_folder(sys.argv[1], sys.argv[2], image_size=28, channels=1, split_seed=0))")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "cache"), str(tmp_path / "tree")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    paths = {out.strip().splitlines()[-1] for out, _ in results}
    assert len(paths) == 1
    said = " ".join(err for _, err in results)
    assert said.count("prepared ") == 1 and "unchanged since it was prepared" in said


def test_lock_is_reentrant_in_a_process_and_exclusive_across(tmp_path):
    a = locks.lock_dir(tmp_path / "d")
    b = locks.lock_dir(tmp_path / "d")  # the CLI holds it, then the job: a second hold, not a deadlock
    assert a is b and a.count == 2
    code = ("import sys; from reptile_cli import locks\n"
            "try:\n    locks.lock_dir(sys.argv[1])\nexcept locks.Locked as e:\n    print(e); sys.exit(2)")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], capture_output=True, text=True)
    assert r.returncode == 2 and f"process {os.getpid()}" in r.stdout and time.monotonic() - t0 < 10
    b.release()
    assert locks.is_held(tmp_path / "d") is True  # one hold left
    a.release()
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    assert locks.is_held(tmp_path / "nothing") is None
