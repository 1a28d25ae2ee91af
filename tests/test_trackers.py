"""Experiment trackers (issue 16), read back with their own libraries: TensorBoard's event reader, the MLflow
client, the offline W&B run files (wandb's own record format). Scalars equal metrics.jsonl; a killed and resumed
run logs no step twice and misses none; sweeps are grouped; a tracker that fails costs one warning, not the run."""

import json
import signal
import socket
from pathlib import Path

import pytest

from reptile_cli.rundir import MetricsLog
from tests.test_resume import SINE, start, wait_for_checkpoint

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
pytest.importorskip("wandb")

ALL = "logger=[tensorboard,mlflow,wandb]"
RUN = [a for a in SINE if not a.startswith(("trainer.meta_iters", "trainer.eval_every"))] + [
    "trainer.meta_iters=200", "trainer.eval_every=100", "trainer.val_tasks=5"]


def metrics_by_step(run: Path) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for record in MetricsLog(run / "metrics.jsonl").read():
        out.setdefault(record["iteration"], {}).update({k: v for k, v in record.items() if k != "iteration"})
    return out


def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def mlflow_runs(store: Path):
    import os

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    return client, runs


def wandb_history(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every logged scalar of a run's offline W&B sessions, in the order they were logged."""
    from reptile_cli.trackers.wandb import history

    assert list(run.glob("wandb/offline-run-*/run-*.wandb")), "no offline W&B run"
    return history(run)


def wandb_run_records(run: Path, kind: str):
    from reptile_cli.trackers.wandb import run_records

    return [getattr(r, kind) for f in sorted(run.glob("wandb/offline-run-*/run-*.wandb")) for r in run_records(f)
            if r.WhichOneof("record_type") == kind]


def check_equal_to_metrics(run: Path, series: dict[str, list[tuple[int, float]]], skip_time: bool = False):
    expected = metrics_by_step(run)
    for key in ("train/loss", "train/meta_step_size", "val/mse", "val/mse_ci95", "time/elapsed_s"):
        if skip_time and key.startswith("time/"):
            continue
        want = [(s, v[key]) for s, v in sorted(expected.items()) if key in v]
        got = series[key]
        assert [s for s, _ in got] == [s for s, _ in want], key  # every step once, none missing, in order
        assert all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for (_, a), (_, b) in zip(got, want)), key
    low = dict(series["val/mse_ci95_low"])
    assert all(abs(low[s] - (v["val/mse"] - v["val/mse_ci95"])) < 1e-6 for s, v in expected.items() if "val/mse" in v)


def test_each_tracker_holds_the_metrics_of_a_run(cli, tmp_path):
    run = tmp_path / "runs" / "one"
    r = cli("train", *RUN, ALL, f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    tb = tensorboard_scalars(run / "tensorboard")
    check_equal_to_metrics(run, tb)
    assert "final/val_mse" in tb
    client, runs = mlflow_runs(run.parent / "mlruns")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    mf = {k: [(m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, k)]
          for k in runs[0].data.metrics}
    check_equal_to_metrics(run, mf)
    assert runs[0].data.params["trainer.inner_lr"] == "0.02"
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"last.pt", "eval.json", "curves.png"} <= artifacts
    check_equal_to_metrics(run, wandb_history(run))
    (record,) = wandb_run_records(run, "run")
    config = {u.key: json.loads(u.value_json) for u in record.config.update}
    assert config["trainer"]["inner_lr"] == 0.02 and record.display_name == "one"
    assert json.loads((run / "trackers.json").read_text())["mlflow"]["last_step"] == 200


def test_kill_and_resume_logs_no_step_twice(tmp_path, cli):
    run = tmp_path / "runs" / "killed"
    args = [*[a for a in SINE if not a.startswith("trainer.meta_iters")], "trainer.meta_iters=300", ALL,
            f"hydra.run.dir={run}"]
    proc = start(args, tmp_path)
    wait_for_checkpoint(run, 100, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = cli("train", f"trainer.resume={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # the resumed session recomputes the steps after the checkpoint exactly; trackers keep the first session's
    # values there (the same, but for wall time) and log each step once
    check_equal_to_metrics(run, tensorboard_scalars(run / "tensorboard"), skip_time=True)
    client, runs = mlflow_runs(run.parent / "mlruns")
    assert len(runs) == 1, "the resume must continue the same MLflow run"
    mf = {k: [(m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, k)]
          for k in runs[0].data.metrics}
    check_equal_to_metrics(run, mf, skip_time=True)
    history = wandb_history(run)
    check_equal_to_metrics(run, history, skip_time=True)
    assert len(list(run.glob("wandb/offline-run-*"))) == 2
    ids = {r.run_id for r in wandb_run_records(run, "run")}
    assert len(ids) == 1, "both W&B sessions are one run"


@pytest.mark.slow
def test_a_sweep_is_one_tracker_run_per_job_grouped(cli, tmp_path):
    from tests.test_cli import SINE_NO_PERIODIC

    sweep = tmp_path / "sweep"
    r = cli("train", "-m", *SINE_NO_PERIODIC, "trainer.meta_iters=50", "eval.val_episodes=3",
            "trainer.inner_lr=0.01,0.02", "seed=0,1", "logger=[tensorboard,mlflow]", f"hydra.sweep.dir={sweep}",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    _, runs = mlflow_runs(sweep / "mlruns")
    assert len(runs) == 4 and len({r.data.tags["reptile.sweep"] for r in runs}) == 1
    assert sorted(r.data.tags["reptile.job"] for r in runs) == ["0", "1", "2", "3"]
    assert all((sweep / str(j) / "tensorboard").is_dir() for j in range(4))
    r = cli("runs", str(sweep), "--json", "--group-by", "seed", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [row["name"] for row in doc["runs"]] == ["0", "1", "2", "3"]
    assert {row["overrides"]["trainer.inner_lr"] for row in doc["runs"]} == {"0.01", "0.02"}
    assert sorted(len(g["runs"]) for g in doc["groups"]) == [2, 2]
    group = doc["groups"][0]
    vals = [row["val"]["mean"] for row in doc["runs"] if row["name"] in group["runs"]]
    assert group["val"]["mean"] == pytest.approx(sum(vals) / 2)
    r = cli("runs", str(sweep), "--sort", "val", cwd=tmp_path)
    assert r.returncode == 0 and "4 runs" in r.stdout, r.stdout


def test_unreachable_mlflow_and_read_only_tensorboard_cost_one_warning(cli, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    run = tmp_path / "run"
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the TensorBoard folder should be")
    r = cli("train", *RUN, "logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri=http://127.0.0.1:{port}",
            f"logger.tensorboard.log_dir={blocked / 'tb'}", f"hydra.run.dir={run}", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    log = (run / "train.log").read_text()
    warnings = [line for line in log.splitlines() if "WARNING" in line and "logger " in line]
    assert len(warnings) == 2, warnings
    assert any("logger mlflow failed" in w for w in warnings) and any("logger tensorboard failed" in w
                                                                       for w in warnings)
    assert json.loads((run / "state.json").read_text())["state"] == "completed"
    assert max(metrics_by_step(run)) == 200


def test_missing_package_names_its_extra(monkeypatch):
    from reptile_cli import trackers
    from reptile_cli.errors import ConfigError

    monkeypatch.setitem(trackers.BACKENDS, "mlflow", ("reptile_cli.trackers.mlflow", "MLflowTracker",
                                                      "mlflow_not_installed_here", "mlflow"))
    with pytest.raises(ConfigError, match=r"logger=mlflow needs the mlflow_not_installed_here package: pip install "
                                          r"'reptile-cli\[mlflow\]'"):
        trackers.tracker_classes({"mlflow": {}})
