"""The tests' CLI server (tests/cli_server.py) behaves as ``python -m reptile_cli`` in a fresh process."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, SERVER, run_cli


def plain(*args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("REPTILE_TRACE", None)
    return subprocess.run([sys.executable, "-m", "reptile_cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args", [["--version"], ["train", "experiment=nope"], ["eval", "missing.pt"],
                                  ["train", "--help"], ["data", "download", "tieredimagenet"]])
def test_same_exit_code_and_output_as_a_fresh_interpreter(tmp_path, args):
    served = run_cli(*args, cwd=tmp_path)
    assert SERVER.failed is None and SERVER.proc is not None  # it did go through the server
    fresh = plain(*args, cwd=tmp_path)
    assert (served.returncode, served.stdout, served.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)


def test_each_call_is_its_own_process_with_its_own_directory(tmp_path):
    """Nothing a call does (its working directory, files, module state) reaches the next: a run made in one
    working directory by a relative hydra.run.dir appears there, and the same call elsewhere starts afresh."""
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        r = run_cli("train", "experiment=sine", "trainer.meta_iters=3", "eval.val_episodes=2", "trainer.eval_every=0",
                    "trainer.progress=false", "threads=1", "hydra.run.dir=run", cwd=tmp_path / where)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / where / "run" / "last.pt").is_file()
    assert not (REPO / "run").exists()


def test_a_call_past_its_timeout_is_killed(tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli("train", "experiment=sine", "trainer.meta_iters=10000000", "trainer.progress=false", "threads=1",
                "hydra.run.dir=run", cwd=tmp_path, timeout=4)
    # the run had locked its directory; killed, it holds it no more
    from reptile_cli.locks import is_held

    assert (tmp_path / "run").is_dir() and is_held(tmp_path / "run") is False
