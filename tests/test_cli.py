"""The real entry point on a tiny budget: train, eval, multirun, and one-line errors for bad input."""

import csv
import json

import pytest
import torch

from reptile_cli.checkpoint import load_checkpoint

SINE_SMALL = ["experiment=sine", "trainer.meta_iters=300", "trainer.eval_every=100", "trainer.val_tasks=10",
              "eval.val_episodes=20", "trainer.checkpoint_every=100", "trainer.log_every=50",
              "trainer.progress=false"]
# without periodic validation (its size, trainer.val_tasks, would then not apply and is refused)
SINE_NO_PERIODIC = [a for a in SINE_SMALL if not a.startswith(("trainer.eval_every", "trainer.val_tasks"))] + [
    "trainer.eval_every=0"]


def test_version_and_help(cli):
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip().startswith("reptile ")
    for cmd in (["--help"], ["train", "--help"], ["eval", "--help"], ["data", "--help"]):
        r = cli(*cmd)
        assert r.returncode == 0 and "Usage" in r.stdout, (cmd, r.stderr)
    # train --help lists every preset of conf/ by group (the configs are the source, not a copy in the help)
    from reptile_cli.confdir import config_dir

    text = " ".join(cli("train", "--help", env={"COLUMNS": "200"}).stdout.split())
    for group in ("experiment", "model", "dataset", "logger"):
        names = sorted(p.stem for p in (config_dir() / group).glob("*.yaml") if not p.stem.endswith("_schema"))
        assert f"{group}= {', '.join(names)}" in text, group
    assert "resnet12_narrow" in text and "cifarfs_5w1s" in text


def test_print_config_without_running(cli, tmp_path):
    r = cli("train", "--cfg", "job", "experiment=sine", cwd=tmp_path)
    assert r.returncode == 0 and "inner_lr: 0.02" in r.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override,needle", [
    ("trainer.inner_lrr=0.1", "inner_lrr"),
    ("trainer.inner_lr=abc", "inner_lr"),
    ("experiment=nope", "experiment/nope"),
    ("device=tpu", "tpu"),
    ("trainer.meta_iters=0", "trainer.meta_iters=0"),
    ("trainer.max_time=0", "trainer.max_time=0"),
    ("trainer.meta_step_size=-1", "trainer.meta_step_size=-1"),
    ("trainer.adam_beta2=1.0", "adam_beta2=1.0"),
    ("eval.chunk_size=-3", "eval.chunk_size=-3"),  # evaluation settings are checked before training
    ("eval.inner_steps=0", "eval.inner_steps=0"),
    ("eval.val_episodes=0", "eval.val_episodes=0"),
    # one task has no confidence interval (it printed "± nan")
    ("eval.val_episodes=1", "eval.val_episodes=1: must be at least 2 (the 95% confidence interval over tasks"),
    ("trainer.val_tasks=1", "trainer.val_tasks=1: must be at least 2"),
    ("model=null", "model=null: a config group takes a preset's name, not null (reptile train --help lists them)"),
    ("++trainer.meta_iters=2", "'++' would add trainer.meta_iters if it did not exist"),
    ("~trainer.inner_lr", "~trainer.inner_lr: '~' deletes a key"),
])
def test_bad_override_is_one_line(cli, tmp_path, override, needle):
    r = cli("train", "experiment=sine", override, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "init.pt").exists()


def test_unknown_group_option_lists_what_can_be_picked(cli, tmp_path):
    r = cli("train", "dataset=nav3d", cwd=tmp_path)
    options = ("Available options in 'dataset': cartpole cifarfs cub fc100 folder miniimagenet nav2d omniglot "
               "omniglot_small sine tieredimagenet")
    assert r.returncode == 2 and options in r.stderr
    assert "_schema" not in r.stderr  # the structured schemas behind the configs are not options


def test_trace_switch_shows_the_traceback(cli, tmp_path):
    r = cli("--trace", "train", "experiment=sine", "trainer.inner_lrr=1", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_train_then_eval_sine(cli, tmp_path):
    run = tmp_path / "run"
    r = cli("train", *SINE_SMALL, f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("config.yaml", "provenance.json", "metrics.jsonl", "init.pt", "last.pt", "best.pt", "eval.json",
                 "state.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "state.json").read_text())["state"] == "completed"
    val = json.loads((run / "eval.json").read_text())
    assert val["split"] == "val" and val["metric"] == "mse" and val["episodes"] == 20
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics if "train/loss" in m] == [50, 100, 150, 200, 250, 300]
    assert [m["iteration"] for m in metrics if "val/mse" in m] == [100, 200, 300]
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["versions"]["torch"] and prov["device"]["type"] == "cpu" and prov["dataset_checksum"]
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["iteration"] == 300 and ckpt["config"]["trainer"]["meta_iters"] == 300
    assert load_checkpoint(run / "init.pt")["iteration"] == 0

    out = tmp_path / "eval.json"
    r = cli("eval", str(run / "last.pt"), "eval.episodes=50", f"output={out}", "trainer.progress=false",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert result["split"] == "test" and result["episodes"] == 50 and len(result["per_task"]) == 50
    assert result["mean"] < result["before_adaptation"]["mean"]
    assert result["settings"]["inner_steps"] == 32 and result["iteration"] == 300
    # how it was computed: the sine preset's automatic chunk is 32 tasks, 50 tasks run in chunks of 32 and 18
    assert result["evaluation"] == {"path": "batched", "processes": 1, "chunk_size": 32, "dtype": "float32",
                                    "autocast": None}
    r = cli("eval", str(run / "last.pt"), "eval.episodes=5", "eval.chunk_size=1000", f"output={out}",
            "trainer.progress=false", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(out.read_text())["evaluation"]["chunk_size"] == 5  # as run, not as asked
    # evaluation leaves the checkpoint untouched
    assert torch.equal(load_checkpoint(run / "last.pt")["model"]["net.0.weight"], ckpt["model"]["net.0.weight"])


def test_same_seed_same_weights(cli, tmp_path):
    runs = []
    for name in ("a", "b"):
        r = cli("train", *SINE_SMALL, "trainer.meta_iters=50", "eval.val_episodes=5",
                f"hydra.run.dir={tmp_path / name}",
                cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        runs.append(load_checkpoint(tmp_path / name / "last.pt")["model"])
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_multirun_2x2(cli, tmp_path):
    r = cli("train", "-m", *SINE_NO_PERIODIC, "trainer.meta_iters=40", "eval.val_episodes=5",
            "trainer.inner_lr=0.01,0.02", "seed=0,1", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 4
    seen = set()
    for job in jobs:
        assert (job / "last.pt").is_file() and (job / "metrics.jsonl").is_file()
        assert json.loads((job / "state.json").read_text())["state"] == "completed"
        cfg = load_checkpoint(job / "last.pt")["config"]
        assert isinstance(cfg["trainer"]["inner_lr"], float) and isinstance(cfg["seed"], int)
        seen.add((cfg["trainer"]["inner_lr"], cfg["seed"]))
    assert seen == {(0.01, 0), (0.01, 1), (0.02, 0), (0.02, 1)}


def test_multirun_failed_job_is_recorded(cli, tmp_path):
    """A job that fails records state failed and the sweep goes on to the next job."""
    r = cli("train", "-m", *SINE_NO_PERIODIC, "trainer.meta_iters=20", "eval.val_episodes=5",
            "episode.shots=10,99", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert r.returncode == 1 and "1 of 2 jobs failed" in r.stderr.splitlines()[-1], r.stderr
    states = {json.loads((tmp_path / "sweep" / n / "state.json").read_text())["state"] for n in ("0", "1")}
    assert states == {"completed", "failed"}
    rows = list(csv.DictReader((tmp_path / "sweep" / "sweep.csv").open()))
    assert [(row["rank"], row["job"], row["state"], row["episode.shots"]) for row in rows] == [
        ("1", "0", "completed", "10"), ("", "1", "failed", "99")]
    assert float(rows[0]["val_mean"]) > 0 and rows[1]["val_mean"] == "" and "99" in rows[1]["message"]
    assert "failed" in r.stdout  # the report printed at the end of the sweep lists it


def test_eval_bad_inputs(cli, tmp_path):
    r = cli("eval", str(tmp_path / "missing.pt"), cwd=tmp_path)
    assert r.returncode == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 100)
    # a training setting: the message names what eval takes, not the schema class
    r = cli("eval", str(junk), "trainer.path=batched", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert ("trainer.path is not a setting of reptile eval (of trainer.*, it takes trainer.progress, "
            "trainer.loss_reduction; the checkpoint gives the rest)") in r.stderr
    r = cli("eval", str(junk), cwd=tmp_path)
    assert r.returncode == 1 and "junk.pt" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,needle", [
    (["data", "download", "cifarfs", "--variant", "small"], "--variant does not apply to cifarfs"),
    (["data", "download", "fc100", "--resize-filter", "lanczos"], "--resize-filter does not apply to fc100"),
    (["data", "import", "cifarfs", "X", "--resize-filter", "lanczos"], "--resize-filter does not apply to cifarfs"),
    (["data", "import", "cub", "X", "--splits-dir", "S"], "--splits-dir does not apply to cub"),
    (["data", "import", "omniglot", "X", "--allow-partial"], "--allow-partial does not apply to omniglot"),
    (["data", "download", "tieredimagenet"], "tieredimagenet has no official download"),
])
def test_data_options_that_do_not_apply_are_refused(tmp_path, args, needle):
    """An option of another dataset is refused before any work, as a config key is (nothing is read or made).
    In process (typer's runner): the refusal comes before any import of the data modules' work."""
    from typer.testing import CliRunner

    from reptile_cli.cli import app

    r = CliRunner().invoke(app, [*args, "--root", str(tmp_path / "root")])
    assert r.exit_code == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("override,needle", [
    ("model.drop_rate=0.1", "model.drop_rate is not a setting of reptile eval: the model and its settings are "
                            "the checkpoint's"),
    ("model=resnet12", "model=resnet12 is not a setting of reptile eval: the model and its settings are"),
    ("dataset=cifarfs", "dataset=cifarfs is not a setting of reptile eval: the dataset is the checkpoint's "
                        "(dataset.root=PATH reads another copy of it)"),
    ("experiment=sine", "experiment=sine is not a setting of reptile eval: the training settings are"),
    ("+eval.foo=1", "+eval.foo=1: '+' adds a key that reptile does not read"),
    ("++eval.episodes=3", "++eval.episodes=3: '++' would add eval.episodes if it did not exist, and reptile reads "
                          "only its own keys; set it without the '++' (eval.episodes=3)"),
    ("model=null", "model=null: a config group takes a preset's name, not null"),
    ("~eval.seed", "~eval.seed: '~' deletes a key, and every key of reptile has a value; set eval.seed=VALUE"),
])
def test_eval_refuses_what_the_checkpoint_gives(tmp_path, monkeypatch, override, needle):
    """A model, dataset or preset choice at reptile eval: one line naming why (the checkpoint gives them),
    not Hydra's text about defaults lists; a '+' key is refused, not ignored. In process (typer's runner)."""
    from typer.testing import CliRunner

    from reptile_cli.cli import app

    monkeypatch.chdir(tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage")
    r = CliRunner().invoke(app, ["eval", str(junk), override])
    assert r.exit_code == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "outputs").exists()
    assert "--trace" not in r.stderr  # the tool's own refusal, not a crash with a traceback to look at


def test_data_list_wraps_paths_instead_of_cutting_them(small_store):
    """On a narrow terminal the file column folds: the whole name is there, no ellipsis."""
    from typer.testing import CliRunner

    from reptile_cli.cli import app

    r = CliRunner().invoke(app, ["data", "list", "--root", str(small_store)], env={"COLUMNS": "60"})
    assert r.exit_code == 0, r.output
    rows = [line.split("│")[1].strip() for line in r.output.splitlines() if line.startswith("│")]
    assert "".join(rows) == "omniglot/omniglot_small.h5" and "…" not in r.output
