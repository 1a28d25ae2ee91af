"""Sweeps: the report (ranking by validation only, seed groups, failed jobs), plots, and Hydra launchers."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reptile_cli.report import find_jobs, rank, seed_groups, sweep_csv, varying_keys
from tests.test_cli import SINE_NO_PERIODIC

PNG = b"\x89PNG\r\n\x1a\n"


def fake_job(root: Path, num: int, overrides: list[str], state: str, val: float | None = None,
             metric: str = "acc", test: float | None = None) -> Path:
    """A job directory as the trainer leaves it: overrides, state, metrics with a validation curve, eval.json."""
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / "state.json").write_text(json.dumps({"state": state, "message": "boom" if state == "failed" else ""}))
    lines = [{"iteration": 10, "train/loss": 1.0, "time/elapsed_s": 3.0}]
    if val is not None:
        lines.append({"iteration": 10, f"val/{metric}": val, f"val/{metric}_ci95": 0.01})
        (job / "eval.json").write_text(json.dumps({"split": "val", "metric": metric, "mean": val, "ci95": 0.01,
                                                   "episodes": 100}))
    if test is not None:  # a test evaluation written elsewhere must never be used for ranking
        (job / "eval").mkdir()
        (job / "eval" / "eval.json").write_text(json.dumps({"split": "test", "metric": metric, "mean": test}))
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return job


def test_ranking_uses_validation_and_lists_failures(tmp_path):
    fake_job(tmp_path, 0, ["trainer.inner_lr=0.1", "seed=0"], "completed", 0.80, test=0.99)
    fake_job(tmp_path, 1, ["trainer.inner_lr=0.2", "seed=0"], "completed", 0.90, test=0.10)
    fake_job(tmp_path, 2, ["trainer.inner_lr=0.3", "seed=0"], "failed")
    fake_job(tmp_path, 3, ["trainer.inner_lr=0.4", "seed=0"], "stopped", 0.95)
    jobs = find_jobs(tmp_path)
    assert [j.name for j in rank(jobs)] == ["1", "0", "2", "3"]  # stopped: not ranked, listed with its state
    assert varying_keys(jobs) == ["trainer.inner_lr"]
    rows = list(csv.DictReader(sweep_csv(jobs).splitlines()))
    assert [(r["rank"], r["job"], r["state"], r["trainer.inner_lr"]) for r in rows] == [
        ("1", "1", "completed", "0.2"), ("2", "0", "completed", "0.1"), ("", "2", "failed", "0.3"),
        ("", "3", "stopped", "0.4")]
    assert rows[2]["message"] == "boom"


def test_mse_ranks_lowest_first_and_seeds_group(tmp_path):
    for num, (lr, seed, mse) in enumerate([(0.01, 0, 0.30), (0.01, 1, 0.50), (0.02, 0, 0.10), (0.02, 1, 0.20),
                                           (0.02, 2, 0.30)]):
        fake_job(tmp_path, num, [f"trainer.inner_lr={lr}", f"seed={seed}"], "completed", mse, metric="mse")
    jobs = find_jobs(tmp_path)
    assert [j.name for j in rank(jobs)] == ["2", "3", "0", "4", "1"]
    groups = seed_groups(jobs)
    assert [g.overrides for g in groups] == [["trainer.inner_lr=0.02"], ["trainer.inner_lr=0.01"]]
    assert groups[0].mean == pytest.approx(0.2) and groups[0].spread == pytest.approx(0.1)  # std of .1 .2 .3
    assert groups[1].mean == pytest.approx(0.4) and groups[1].spread == pytest.approx(0.141421356)


@pytest.mark.slow  # test_cli.py::test_multirun_2x2 keeps a sweep in the default run
def test_sweep_command_and_plots(cli, tmp_path):
    fake_job(tmp_path / "s", 0, ["trainer.inner_lr=0.1"], "completed", 0.8)
    fake_job(tmp_path / "s", 1, ["trainer.inner_lr=0.2"], "failed")
    r = cli("sweep", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    assert "failed" in r.stdout and "80.00 ± 1.00%" in r.stdout
    assert (tmp_path / "s" / "sweep.csv").is_file()
    assert (tmp_path / "s" / "val_curves.png").read_bytes()[:8] == PNG
    r = cli("plot", str(tmp_path / "s" / "0"))
    assert r.returncode == 0 and (tmp_path / "s" / "0" / "curves.png").read_bytes()[:8] == PNG
    fake_job(tmp_path / "s2", 0, ["seed=1"], "completed", 0.5)
    for bad, needle in ((tmp_path / "nothing", "not a directory"), (tmp_path / "s" / "0", "single run"),
                        (tmp_path, "holds 2 sweeps"), (tmp_path / "s" / "0" / ".hydra", "holds no sweep")):
        r = cli("sweep", str(bad))
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr
    for bad, needle in ((tmp_path / "nothing", "does not exist"), (tmp_path / "s", "is a sweep"),
                        (tmp_path / "s" / "0" / "state.json", "is a file"), (tmp_path, "no metrics.jsonl")):
        r = cli("plot", str(bad))
        assert r.returncode == 1 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def sweep(tmp_path, *extra):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen([sys.executable, "-m", "reptile_cli", "train", "-m", *SINE_NO_PERIODIC,
                             "trainer.meta_iters=20", "eval.val_episodes=5", "name=same", *extra], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_joblib_launcher_runs_jobs_in_parallel_with_divided_threads(tmp_path):
    proc = sweep(tmp_path, "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "trainer.inner_lr=0.01,0.02",
                 f"hydra.sweep.dir={tmp_path}/sweep")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    jobs = find_jobs(tmp_path / "sweep")
    assert [j.state for j in jobs] == ["completed", "completed"]
    cores = len(os.sched_getaffinity(0))
    for job in jobs:
        prov = json.loads((job.path / "provenance.json").read_text())
        assert prov["device"]["torch_threads"] == max(1, cores // min(2, cores))
    assert (tmp_path / "sweep" / "sweep.csv").is_file()


def test_two_sweeps_in_the_same_second_get_their_own_directories(tmp_path):
    procs = [sweep(tmp_path, "seed=0,1") for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    dirs = sorted((tmp_path / "multirun" / "same").iterdir())
    assert len(dirs) == 2
    for d in dirs:
        assert sorted(j.name for j in find_jobs(d)) == ["0", "1"]


def test_a_sweep_whose_jobs_stopped_exits_3_like_a_run(cli, tmp_path):
    """Jobs stopped on their time budget (none failed): exit code 3 (stopped, resumable), one line saying how
    many and how to continue, as a single run stopped so."""
    sweep = tmp_path / "sweep"
    r = cli("train", "-m", *SINE_NO_PERIODIC, "trainer.meta_iters=100000", "trainer.max_time=0.001", "seed=0,1",
            f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (f"reptile: stopped: 2 of 2 jobs stopped before their last iteration, "
                                                 f"none failed; continue them with: reptile sweep --resume {sweep}")
    assert [json.loads((sweep / j / "state.json").read_text())["state"] for j in ("0", "1")] == ["stopped"] * 2


def test_runs_names_a_run_given_directly_by_its_folder(tmp_path):
    """``reptile runs RUN_DIR A_SWEEP``: a run folder given itself is named by its folder (it was "."), a
    sweep's jobs by their path under the sweep."""
    from reptile_cli.report import find_runs, run_rows

    jobs = [fake_job(tmp_path / "sweep", 0, ["seed=0"], "completed", val=0.5),
            fake_job(tmp_path / "sweep", 1, ["seed=1"], "completed", val=0.6),
            fake_job(tmp_path / "other", 0, ["seed=2"], "completed", val=0.7)]
    for job in jobs:  # what makes a folder a run for reptile runs
        (job / "config.yaml").write_text("dataset:\n  name: sine\n")
    alone = jobs[2].rename(tmp_path / "my_run")
    folders = [alone, tmp_path / "sweep"]
    assert sorted(row["name"] for row in run_rows(find_runs(folders), folders)) == ["0", "1", "my_run"]
