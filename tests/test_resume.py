"""Exact resume after SIGKILL, clean stops (SIGINT, max_time), divergence, and bad checkpoints."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from reptile_cli.checkpoint import load_checkpoint
from tests.conftest import SHARED_DATA, metrics_records

SINE = ["experiment=sine", "trainer.meta_iters=400", "trainer.checkpoint_every=25", "trainer.eval_every=0",
        "eval.val_episodes=5", "trainer.log_every=25", "trainer.progress=false"]


def start(args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "reptile_cli", "train", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(run, at_least, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run / "last.pt").is_file():
            try:
                if load_checkpoint(run / "last.pt")["iteration"] >= at_least:
                    return
            except Exception:  # noqa: BLE001 - being replaced right now; look again
                pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")


def equal_weights(a, b):
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return all(torch.equal(wa[k], wb[k]) for k in wa)


def kill_and_resume(cli, tmp_path, args, kill_at):
    ref, run = tmp_path / "ref", tmp_path / "run"
    r = cli("train", *args, f"hydra.run.dir={ref}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    proc = start([*args, f"hydra.run.dir={run}"], tmp_path)
    wait_for_checkpoint(run, kill_at, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(run / "last.pt")["iteration"]
    assert killed_at < load_checkpoint(ref / "last.pt")["iteration"]
    r = cli("train", f"trainer.resume={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert equal_weights(ref / "last.pt", run / "last.pt")
    a = load_checkpoint(ref / "last.pt")["inner_optimizer"]
    b = load_checkpoint(run / "last.pt")["inner_optimizer"]
    assert a["step"] == b["step"]
    if "exp_avg_sq" in a:
        assert all(torch.equal(a["exp_avg_sq"][k], b["exp_avg_sq"][k]) for k in a["exp_avg_sq"])
    iterations = [json.loads(line)["iteration"] for line in (run / "metrics.jsonl").read_text().splitlines()
                  if "train/loss" in line]
    assert iterations == sorted(set(iterations)), "metrics.jsonl repeats iterations after the resume"
    ref_its = [json.loads(line)["iteration"] for line in (ref / "metrics.jsonl").read_text().splitlines()
               if "train/loss" in line]
    assert iterations == ref_its
    # and the same values: a line after the resume averages the same iterations' losses (those since the last
    # line before the kill come from the checkpoint), validations are recomputed equal; only timings differ
    assert metrics_records(run) == metrics_records(ref)
    assert json.loads((run / "state.json").read_text())["state"] == "completed"
    return killed_at


@pytest.mark.slow  # the Omniglot case stays in the default run
def test_sigkill_then_resume_is_bit_identical_sine(cli, tmp_path):
    assert kill_and_resume(cli, tmp_path, SINE, 100) >= 100


MIRROR = SHARED_DATA / "omniglot"


@pytest.mark.skipif(not (MIRROR / "images_background_small1.zip").is_file(), reason="no shared mirror")
def test_sigkill_then_resume_is_bit_identical_omniglot(cli, tmp_path):
    root = tmp_path / "data"
    r = cli("data", "download", "omniglot", "--variant", "small", "--root", str(root), "--mirror", str(MIRROR))
    assert r.returncode == 0, r.stderr
    args = ["experiment=omniglot_5w1s", "dataset=omniglot_small", f"dataset.root={root}", "trainer.meta_iters=16",
            "trainer.checkpoint_every=2", "trainer.log_every=4", "eval.val_episodes=2", "trainer.progress=false"]
    assert kill_and_resume(cli, tmp_path, args, 4) >= 4


def test_sigint_stops_cleanly_and_resumes(cli, tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    args = [*SINE, "trainer.meta_iters=1500", "trainer.checkpoint_every=300"]
    assert cli("train", *args, f"hydra.run.dir={ref}", cwd=tmp_path).returncode == 0
    proc = start([*args, f"hydra.run.dir={run}"], tmp_path)
    wait_for_checkpoint(run, 300, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    message = [line for line in err.splitlines() if line.startswith("reptile: ")]
    assert len(message) == 1 and message[0].startswith("reptile: stopped:") and "trainer.resume=" in message[0]
    state = json.loads((run / "state.json").read_text())
    assert state["state"] == "stopped" and 300 <= state["iteration"] < 1500
    assert load_checkpoint(run / "last.pt")["iteration"] == state["iteration"]
    r = cli("train", f"trainer.resume={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert equal_weights(ref / "last.pt", run / "last.pt")


def test_max_time_stops_with_exit_3(cli, tmp_path):
    r = cli("train", *SINE, "trainer.meta_iters=1000000", "trainer.max_time=2", f"hydra.run.dir={tmp_path}/r",
            cwd=tmp_path)
    assert r.returncode == 3 and "trainer.max_time" in r.stderr
    assert "add trainer.max_time=null" in r.stderr  # the resume hint says the limit applies again
    assert json.loads((tmp_path / "r" / "state.json").read_text())["state"] == "stopped"
    last = (tmp_path / "r" / "train.log").read_text().splitlines()[-1]  # the log says why the run ended, too
    assert "[WARNING] - stopped: stopped by trainer.max_time=2s" in last
    assert "stopped by trainer.max_time" not in r.stdout  # printed once, on stderr


def test_resume_refuses_other_settings(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("train", *SINE, "trainer.meta_iters=50", f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    r = cli("train", f"trainer.resume={run}", "trainer.inner_lr=0.5", cwd=tmp_path)
    assert r.returncode == 2 and "trainer.inner_lr: 0.02 -> 0.5" in r.stderr


def test_divergence_keeps_last_good_checkpoint(cli, tmp_path):
    r = cli("train", *SINE, "trainer.inner_lr=1e6", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert r.returncode == 1 and "diverged" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert load_checkpoint(tmp_path / "r" / "init.pt")["iteration"] == 0
    assert json.loads((tmp_path / "r" / "state.json").read_text())["state"] == "failed"


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/reptile-pwned",))


@pytest.mark.parametrize("kind", ["truncated", "random", "pickle", "foreign"])
def test_bad_checkpoints_are_refused_in_one_line(cli, tmp_path, kind):
    good = tmp_path / "good"
    assert cli("train", *SINE, "trainer.meta_iters=5", f"hydra.run.dir={good}", cwd=tmp_path).returncode == 0
    bad = tmp_path / "bad.pt"
    if kind == "truncated":
        data = (good / "last.pt").read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        bad.write_bytes(os.urandom(4096))
    elif kind == "pickle":
        torch.save({"x": Evil()}, bad)
    else:
        torch.save({"weights": torch.zeros(3)}, bad)
    r = cli("eval", str(bad), cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "bad.pt" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists("/tmp/reptile-pwned")


def test_run_dir_that_cannot_be_created(cli, tmp_path):
    (tmp_path / "file").write_text("x")
    r = cli("train", *SINE, f"hydra.run.dir={tmp_path}/file/run", cwd=tmp_path)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_full_disk_during_save_keeps_the_previous_file(tmp_path, monkeypatch):
    import errno

    from reptile_cli import checkpoint
    from reptile_cli.errors import ReptileError

    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint(path, {"iteration": 1})

    def no_space(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", no_space)
    with pytest.raises(ReptileError, match="No space left on device.*previous file is kept"):
        checkpoint.save_checkpoint(path, {"iteration": 2})
    assert checkpoint.load_checkpoint(path)["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left


def test_pickle_fixture_really_runs_code_without_weights_only(tmp_path):
    """Guards the test above: the 'pickle' case would execute code under a plain pickle load."""
    payload = pickle.dumps(Evil())
    assert b"system" in payload


def test_random_bytes_never_escape_as_other_errors(tmp_path):
    """Random content raises anything inside torch.load (IndexError, RuntimeError, ...): always one ReptileError."""
    from reptile_cli.checkpoint import load_checkpoint
    from reptile_cli.errors import ReptileError

    for i in range(200):
        path = tmp_path / f"r{i}.pt"
        path.write_bytes(os.urandom(64 + 37 * i))
        with pytest.raises(ReptileError, match=path.name):
            load_checkpoint(path)


def test_existing_run_directory_is_never_overwritten(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("train", *SINE, "trainer.meta_iters=50", f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    files = [run / "last.pt", run / "metrics.jsonl", run / ".hydra" / "overrides.yaml"]
    before = [p.read_bytes() for p in files]
    r = cli("train", *SINE, "trainer.meta_iters=60", f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 2 and "already holds a run" in r.stderr and "trainer.resume=" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert [p.read_bytes() for p in files] == before


def test_resume_of_a_folder_without_a_run(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("train", f"trainer.resume={empty}", cwd=tmp_path)
    assert r.returncode == 1 and "holds no last.pt" in r.stderr
    assert list(empty.iterdir()) == []  # nothing written there


def test_rejected_resume_leaves_the_run_resumable(cli, tmp_path):
    run = tmp_path / "run"
    r = cli("train", *SINE, "trainer.meta_iters=2000", "trainer.max_time=1", f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    files = [run / ".hydra" / "overrides.yaml", run / "state.json", run / "last.pt"]
    before = [p.read_bytes() for p in files]
    r = cli("train", f"trainer.resume={run}", "trainer.inner_lr=0.05", cwd=tmp_path)
    assert r.returncode == 2 and "trainer.inner_lr: 0.02 -> 0.05" in r.stderr
    assert [p.read_bytes() for p in files] == before
    r = cli("train", f"trainer.resume={run}", "trainer.max_time=null", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "state.json").read_text())["state"] == "completed"


def test_plus_keys_are_refused(cli, tmp_path):
    r = cli("train", *SINE, "+trainer.meta_iter=5", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert r.returncode == 2 and "trainer.meta_iter" in r.stderr and not (tmp_path / "r").exists()
    r = cli("train", *SINE, "trainer.meta_iter=5", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert r.returncode == 2 and "+trainer" not in r.stderr


def test_ctrl_c_stops_the_whole_sweep(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "reptile_cli", "train", "-m", *SINE, "trainer.meta_iters=100000",
                             "seed=0,1,2", f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(tmp_path / "sweep" / "0", 25, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3 and "sweep interrupted" in err.strip().splitlines()[-1], err
    assert json.loads((tmp_path / "sweep" / "0" / "state.json").read_text())["state"] == "stopped"
    assert not (tmp_path / "sweep" / "1").exists()


@pytest.mark.parametrize("path,semantics", [("sequential", "carried"), ("batched", "shared")])
def test_resume_keeps_the_path_the_run_started_with(cli, tmp_path, small_store, path, semantics):
    """A preset's default ``trainer.path`` can change between versions: without ``trainer.path`` on the command
    line, a run resumes on the path its checkpoint records, not on today's default (one of the two cases here
    differs from the preset's default, whichever it is)."""
    run = tmp_path / "run"
    args = ["experiment=omniglot_5w1s", "dataset=omniglot_small", f"dataset.root={small_store}",
            "trainer.meta_iters=6", "trainer.checkpoint_every=1", "eval.val_episodes=2", "trainer.progress=false"]
    r = cli("train", *args, f"trainer.path={path}", "trainer.max_time=0.001", f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    record = run / ".hydra" / "overrides.yaml"  # as if the path had come from the preset's default
    record.write_text("".join(line for line in record.read_text().splitlines(keepends=True)
                              if "trainer.path" not in line))
    r = cli("train", f"trainer.resume={run}", "trainer.max_time=null", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["iteration"] == 6 and ckpt["inner_state_semantics"] == semantics
    assert ckpt["config"]["trainer"]["path"] == path


def test_checkpoint_from_before_the_loss_settings_keeps_the_mean(cli, tmp_path, small_store):
    """A run written before trainer.loss_reduction / adam_eps_convention existed trained with the mean and
    PyTorch's epsilon; under today's preset (sum, tensorflow) it resumes and evaluates as it was trained."""
    run = tmp_path / "run"
    args = ["experiment=omniglot_5w1s", "dataset=omniglot_small", f"dataset.root={small_store}",
            "trainer.meta_iters=6", "trainer.checkpoint_every=1", "eval.val_episodes=2", "trainer.progress=false",
            "trainer.loss_reduction=mean", "trainer.adam_eps_convention=pytorch"]
    r = cli("train", *args, "trainer.max_time=0.001", f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    # make it an old run: the keys gone from its checkpoints and from its record of overrides
    for name in ("last.pt", "init.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        for key in ("loss_reduction", "adam_eps_convention"):
            del ckpt["config"]["trainer"][key]
        torch.save(ckpt, run / name)
    record = run / ".hydra" / "overrides.yaml"
    record.write_text("".join(line for line in record.read_text().splitlines(keepends=True)
                              if "loss_reduction" not in line and "eps_convention" not in line))
    r = cli("train", f"trainer.resume={run}", "trainer.max_time=null", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    trainer_cfg = load_checkpoint(run / "last.pt")["config"]["trainer"]
    assert (trainer_cfg["loss_reduction"], trainer_cfg["adam_eps_convention"]) == ("mean", "pytorch")
    ckpt = torch.load(run / "last.pt", weights_only=True)
    for key in ("loss_reduction", "adam_eps_convention"):
        del ckpt["config"]["trainer"][key]
    torch.save(ckpt, run / "old.pt")
    r = cli("eval", str(run / "old.pt"), "eval.episodes=2", "eval.inner_steps=2", "output=old.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "old.json").read_text())["settings"]["loss_reduction"] == "mean"
