"""The paper's table, one command per cell: ``reptile reproduce CELL`` trains (resumably), evaluates on 10,000
test tasks and writes a small record into the repository; ``reptile reproduce --list`` shows every cell.

A cell is named as its preset (``conf/experiment/<cell>.yaml``). Cells whose presets differ only in how they
are evaluated share one training run (the paper's 1-shot and 5-shot cells of a given N train identically, with
``train_shots`` examples per class): ``omniglot_5w5s`` evaluates the checkpoint of ``omniglot_5w1s`` with
5 support images per class. One evaluation gives both protocols (the adaptation is the same; non-transductive
and transductive differ only in how the query images are classified), so a cell's ``eval.json`` holds both.

Runs go to ``RUNS/<training preset>-seed<S>/`` (default ``runs/reproduce``); the record of a cell goes to
``RECORDS/<cell>/`` (default: ``reproduce/`` of the checkout): ``record.json`` (commands, iterations, training
time, machine, the paper's numbers beside the measured ones, what the difference means), ``config.yaml`` (the
run's resolved config) and ``eval.json`` (the evaluation without its per-task lists, which stay in the run
directory). The README's table is generated from the records (:func:`readme_table`), so it never disagrees
with them. Cells that were not run keep a record saying so, with their expected cost; no number is invented.

Paper numbers: Nichol, Achiam & Schulman 2018, table 1 (Omniglot) and table 2 (Mini-ImageNet); REFERENCE.md.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from reptile_cli.errors import ConfigError, ReptileError


@dataclass(frozen=True)
class Cell:
    """One cell of the paper's table.

    Attributes:
        name: the cell and its preset, e.g. ``omniglot_5w1s``.
        train: the preset whose training run serves it (itself, or the 1-shot preset of the same N).
        paper: the paper's accuracy in %, (non-transductive, transductive).
        dataset: ``omniglot`` or ``miniimagenet`` (what must be prepared).
    """

    name: str
    train: str
    paper: tuple[float, float]
    dataset: str


CELLS = (
    Cell("omniglot_5w1s", "omniglot_5w1s", (95.39, 97.68), "omniglot"),
    Cell("omniglot_5w5s", "omniglot_5w1s", (98.90, 99.48), "omniglot"),
    Cell("omniglot_20w1s", "omniglot_20w1s", (88.14, 89.43), "omniglot"),
    Cell("omniglot_20w5s", "omniglot_20w1s", (96.65, 97.12), "omniglot"),
    Cell("miniimagenet_5w1s", "miniimagenet_5w1s", (47.07, 49.97), "miniimagenet"),
    Cell("miniimagenet_5w5s", "miniimagenet_5w1s", (62.74, 65.99), "miniimagenet"),
)
BY_NAME = {c.name: c for c in CELLS}
PAPER_SOURCE = "Nichol, Achiam & Schulman 2018 (arXiv:1803.02999), tables 1 and 2; REFERENCE.md"
EPISODES = 10_000

# Measured rates behind the expected costs of cells without a record: (training meta-iterations per second,
# evaluation tasks per second), with where they were measured. A cell's own record replaces them.
# Measured 2026-12-02 on the 2-core Xeon VM, 1 thread, the preset's path: training from a 240 s run
# (trainer.max_time=240: 730 iterations of omniglot_20w1s, 189 of miniimagenet_5w1s), evaluation from the wall
# time of `reptile eval` on 100 / 40 test tasks including start-up; 5w1s from its 100,000-iteration record.
MEASURED = {
    "omniglot_5w1s": (11.94, 9.0, "2-core Xeon, 1 thread"),
    "omniglot_20w1s": (3.0, 3.2, "2-core Xeon, 1 thread, 240 s sample"),
    "miniimagenet_5w1s": (0.79, 1.0, "2-core Xeon, 1 thread, 240 s sample"),
}
NO_GPU = "not measured: no GPU has been lent to this project yet (issue 17)"


def cell(name: str) -> Cell:
    """The cell named ``name``.

    Raises:
        ConfigError: no such cell (the message lists them).
    """
    if name not in BY_NAME:
        raise ConfigError(f"no cell {name!r}: the cells are {', '.join(BY_NAME)} (reptile reproduce --list)")
    return BY_NAME[name]


def compose(preset: str, overrides: list[str] = ()):
    """The composed ``train`` config of a preset (Hydra's compose API; no run)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from reptile_cli.confdir import config_dir
    from reptile_cli.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=[f"experiment={preset}", *overrides])
    GlobalHydra.instance().clear()
    return cfg


def eval_settings(c: Cell, overrides: list[str] = ()) -> list[str]:
    """The ``reptile eval`` overrides that make a training run's checkpoint serve cell ``c``: its preset's
    episode and evaluation settings (shots, query images, inner steps and batch)."""
    cfg = compose(c.name, [o for o in overrides if not o.startswith(("hydra.", "trainer."))])
    return [f"episode.ways={cfg.episode.ways}", f"episode.shots={cfg.episode.shots}",
            f"episode.query_shots={cfg.episode.query_shots}", f"eval.inner_steps={cfg.eval.inner_steps}",
            f"eval.inner_batch_size={cfg.eval.inner_batch_size}"]


def run_dir(runs: Path, c: Cell, seed: int) -> Path:
    return Path(runs) / f"{c.train}-seed{seed}"


def default_records() -> Path:
    """``reproduce/`` of the checkout this package runs from, else ``./reproduce``."""
    from reptile_cli.confdir import config_dir

    conf = config_dir()
    return conf.parent / "reproduce" if conf.name == "conf" and (conf.parent / ".git").exists() else Path("reproduce")


def _cli(args: list[str]) -> int:
    return subprocess.call([sys.executable, "-m", "reptile_cli", *args])


def train_command(c: Cell, runs: Path, seed: int, overrides: list[str]) -> list[str]:
    """The ``reptile train`` arguments of a cell's training (``trainer.resume=auto``: a second call resumes)."""
    return ["train", f"experiment={c.train}", f"seed={seed}", f"hydra.run.dir={run_dir(runs, c, seed)}",
            "trainer.resume=auto", "trainer.progress=false", *overrides]


def reproduce(name: str, runs: Path, records: Path, seed: int = 0, overrides: list[str] = (),
              episodes: int = EPISODES, threads: int = 0) -> Path:
    """Train (or resume) the cell's run, evaluate it on ``episodes`` test tasks, write its record.

    Args:
        name: the cell.
        runs: where the training runs live (``RUNS/<training preset>-seed<S>``).
        records: where the records go (``RECORDS/<cell>/``).
        seed: the training seed.
        overrides: extra ``reptile train`` overrides (``dataset.root=...``, ``trainer.max_time=...``; a record
            made with overrides that change what is trained says so, and is not the paper's setting).
        episodes: test tasks (the paper: 10,000).
        threads: torch threads (0: automatic).

    Returns:
        The record's folder.

    Raises:
        ReptileError: the training or the evaluation failed or stopped (exit code 3 on a stop: run the same
            command again to resume).
    """
    c = cell(name)
    overrides = list(overrides) + ([f"threads={threads}"] if threads else [])
    from reptile_cli.rundir import read_state

    run = run_dir(runs, c, seed)
    args = train_command(c, runs, seed, overrides)
    code = 0 if read_state(run).get("state") == "completed" else _cli(args)  # a finished training is reused
    if code == 3:
        raise ReptileError(f"the training of {name} stopped; run the same command again to resume it", 3)
    if code != 0:
        raise ReptileError(f"the training of {name} failed (exit {code}); see {run / 'train.log'}")
    out = run / "reproduce" / f"{name}.json"
    eval_args = ["eval", str(run / "last.pt"), *eval_settings(c, overrides), f"eval.episodes={episodes}",
                 "trainer.progress=false", f"output={out}"] + ([f"threads={threads}"] if threads else [])
    if not _evaluated(out, run, episodes):
        started = time.time()
        code = _cli(eval_args)
        if code != 0:
            raise ReptileError(f"the evaluation of {name} failed (exit {code})", code if code in (2, 3) else 1)
        _note_wall(out, time.time() - started)
    return write_record(c, run, out, records, args, eval_args, overrides)


def _evaluated(out: Path, run: Path, episodes: int) -> bool:
    """Whether ``out`` already holds this run's final checkpoint evaluated on ``episodes`` tasks."""
    if not out.is_file():
        return False
    from reptile_cli.checkpoint import load_checkpoint

    doc = json.loads(out.read_text())
    return doc.get("episodes") == episodes and doc.get("iteration") == load_checkpoint(run / "last.pt")["iteration"]


def _note_wall(out: Path, seconds: float) -> None:
    from reptile_cli.rundir import write_json

    doc = json.loads(out.read_text())
    doc["wall_seconds"] = round(seconds, 1)
    write_json(out, doc)


def _pct(entry: dict) -> dict:
    return {"mean": round(100 * entry["mean"], 2), "ci95": round(100 * entry["ci95"], 2)}


def verdict(paper: float, mean: float, ci: float) -> str:
    """Where the paper's mean falls against the measured 95% interval (REFERENCE.md: judge by the means)."""
    low, high = mean - ci, mean + ci
    if low <= paper <= high:
        return "the paper's mean is inside the 95% CI"
    side = "above" if paper > high else "below"
    gap = paper - high if paper > high else low - paper
    return f"the paper's mean is {gap:.2f} points {side} the 95% CI"


def log_summary(run: Path) -> list[str]:
    """The lines of a run's ``train.log`` that tell its story: start, path, resumes, stops, every 10,000th
    iteration, the end."""
    log = run / "train.log"
    if not log.is_file():
        return []
    keep = []
    for line in log.read_text().splitlines():
        m = re.search(r"iteration (\d+)/(\d+)", line)
        if m and int(m.group(1)) % 10_000 and m.group(1) != m.group(2):
            continue
        if m or any(w in line for w in ("run directory", "trainer.path", "resumed", "stopped", "done:", "WARNING")):
            keep.append(re.sub(r"^\[[^]]*\]\[reptile\]", "", line).strip())
    return keep


def write_record(c: Cell, run: Path, out: Path, records: Path, train_args: list[str], eval_args: list[str],
                 overrides: list[str]) -> Path:
    """Write ``RECORDS/<cell>/record.json``, ``config.yaml`` and ``eval.json`` from a finished run."""
    from reptile_cli.checkpoint import load_checkpoint
    from reptile_cli.rundir import write_json

    ckpt = load_checkpoint(run / "last.pt")
    ev = json.loads(out.read_text())
    prov = json.loads((run / "provenance.json").read_text())
    protocols = {ev["protocol"]: _pct(ev)}
    other = "transductive" if ev["protocol"] == "non_transductive" else "non_transductive"
    protocols[other] = _pct(ev[other])
    seconds = float(ckpt.get("train_seconds") or 0.0)
    record = {
        "cell": c.name, "state": "done", "seed": int(ckpt["seed"]), "shares_training_with": c.train,
        "paper": {"non_transductive": c.paper[0], "transductive": c.paper[1], "source": PAPER_SOURCE},
        "measured": {p: protocols[p] for p in ("non_transductive", "transductive")},
        "before_adaptation": _pct(ev["before_adaptation"]),
        "verdict": {p: verdict(c.paper[i], protocols[p]["mean"], protocols[p]["ci95"])
                    for i, p in enumerate(("non_transductive", "transductive"))},
        "paper_settings": not overrides_change_training(overrides),
        "training": {
            "command": "reptile " + shlex.join(train_args), "run_dir": str(run.resolve()),
            "started_with": shlex.join(prov.get("command", [])),
            "iterations": int(ckpt["iteration"]), "train_seconds": round(seconds, 1),
            "meta_iterations_per_second": round(ckpt["iteration"] / seconds, 2) if seconds else None,
            "sessions": 1 + len(prov.get("resumed", [])), "path": ckpt["config"]["trainer"]["path"],
            "loss_reduction": ckpt["config"]["trainer"].get("loss_reduction", "mean"),
            "machine": {**prov.get("device", {}), "host": prov.get("host"), "torch": prov["versions"].get("torch")},
            "git_commit": prov.get("git_commit"), "dataset_checksum": ckpt.get("dataset_checksum"),
            "log_summary": log_summary(run)},
        "evaluation": {"command": "reptile " + shlex.join(eval_args), "episodes": ev["episodes"],
                       "wall_seconds": ev.get("wall_seconds"), "settings": ev["settings"],
                       "evaluation": ev.get("evaluation")},
        "ci_method": ev.get("ci_method"),
    }
    folder = Path(records) / c.name
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "record.json", record)
    (folder / "config.yaml").write_text((run / "config.yaml").read_text())
    write_json(folder / "eval.json", {k: v for k, v in ev.items() if not k.startswith("per_task")})
    return folder


def overrides_change_training(overrides: list[str]) -> bool:
    """Whether extra overrides change what is trained (anything but paths, threads, time budget, progress)."""
    harmless = ("dataset.root=", "threads=", "trainer.max_time=", "trainer.progress=", "trainer.checkpoint_every=",
                "trainer.log_every=", "device=")
    return any(not o.startswith(harmless) for o in overrides)


def not_run_record(c: Cell) -> dict:
    """The record of a cell nobody has run yet: what it would take."""
    return {"cell": c.name, "state": "not run yet", "shares_training_with": c.train,
            "paper": {"non_transductive": c.paper[0], "transductive": c.paper[1], "source": PAPER_SOURCE},
            "command": f"reptile reproduce {c.name}", "expected_cost": expected_cost(c)}


def load_records(records: Path) -> dict[str, dict]:
    """Every cell's record (``not run yet`` where none was written)."""
    out = {}
    for c in CELLS:
        path = Path(records) / c.name / "record.json"
        out[c.name] = json.loads(path.read_text()) if path.is_file() else not_run_record(c)
    return out


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def expected_cost(c: Cell, records: Path | None = None) -> dict:
    """Expected wall time on this project's 2-core CPU (from the measured rates: the training run's own record
    when one exists, else :data:`MEASURED`) and on a GPU (not measured yet)."""
    iters = int(compose(c.train).trainer.meta_iters)
    rate, eval_rate, where = MEASURED.get(c.train, (None, None, ""))
    if records is not None:
        for other in CELLS:
            rec = Path(records) / other.name / "record.json"
            if other.train != c.train or not rec.is_file():
                continue
            measured = json.loads(rec.read_text()).get("training", {}).get("meta_iterations_per_second")
            if measured:  # a record of a cell that was run (a not-run record has no training)
                rate, where = measured, f"measured in the {c.train} training"
                break
    if rate is None:
        cpu = "not measured"
    else:
        cpu = f"{_hours(iters / rate)} training ({rate:g} it/s"
        cpu += f", {where})" if where else ")"
        if eval_rate:
            cpu += f" + {_hours(EPISODES / eval_rate)} evaluation"
    return {"meta_iters": iters, "cpu": cpu, "gpu": NO_GPU}


def cell_state(c: Cell, runs: Path, records: Path, seed: int = 0) -> str:
    """``recorded`` / ``evaluated`` / ``training i/N (state)`` / ``not run yet`` for ``--list``."""
    path = Path(records) / c.name / "record.json"
    if path.is_file():
        doc = json.loads(path.read_text())
        if doc.get("state") == "done":
            return "recorded" + ("" if doc.get("paper_settings", True) else " (NOT the paper's settings)")
    run = run_dir(runs, c, seed)
    if (run / "reproduce" / f"{c.name}.json").is_file():
        return "evaluated, no record"
    if (run / "last.pt").is_file():
        from reptile_cli.rundir import read_state

        state = read_state(run)
        return f"training {state.get('iteration', '?')}/{compose(c.train).trainer.meta_iters} ({state.get('state')})"
    return "not run yet"


def readme_table(records: dict[str, dict]) -> str:
    """The README's markdown table of the cells, from their records (tests/test_reproduce.py keeps the README
    equal to it)."""
    rows = ["| cell | paper (+T) | measured non-transductive | measured transductive | iterations | training time |"
            " state |", "|---|---|---|---|---|---|---|"]
    for c in CELLS:
        r = records[c.name]
        paper = f"{c.paper[0]:.2f} / {c.paper[1]:.2f}"
        if r["state"] == "done":
            m = r["measured"]
            nt = f"{m['non_transductive']['mean']:.2f} ± {m['non_transductive']['ci95']:.2f}"
            t = f"{m['transductive']['mean']:.2f} ± {m['transductive']['ci95']:.2f}"
            tr = r["training"]
            machine = tr["machine"]
            time_ = f"{_hours(tr['train_seconds'])} ({machine.get('name')}, {machine.get('torch_threads')} thread(s))"
            state = "recorded" + ("" if r.get("paper_settings", True) else ", NOT the paper's settings")
            rows.append(f"| `{c.name}` | {paper} | {nt} | {t} | {tr['iterations']:,} | {time_} | {state} |")
        else:
            cost = r.get("expected_cost", {})
            rows.append(f"| `{c.name}` | {paper} | - | - | - | expected: CPU {cost.get('cpu')}; GPU {cost.get('gpu')}"
                        f" | not run yet |")
    return "\n".join(rows)


BEGIN, END = "<!-- reproduce-table: generated by `reptile reproduce --readme` -->", "<!-- reproduce-table end -->"


def update_readme(readme: Path, records: Path) -> bool:
    """Replace the README's table between the markers by :func:`readme_table`; True when it changed.

    Raises:
        ReptileError: the README lacks the markers.
    """
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ReptileError(f"{readme} has no reproduce table markers ({BEGIN} ... {END})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{readme_table(load_records(records))}\n{END}{tail}"
    if new != text:
        readme.write_text(new)
    return new != text
