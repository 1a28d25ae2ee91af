"""Reports over finished runs: ``reptile sweep SWEEP_DIR`` (a table and CSV of every job of a Hydra multirun,
ranked by its validation metric) and the data behind ``reptile plot``.

A job is a directory holding ``.hydra/overrides.yaml`` (Hydra writes one per job, whatever the launcher);
the sweep's grid (``multirun.yaml``: its task overrides, expanded as Hydra's basic sweeper does) also names the
jobs that have not started. Its numbers come from the files the trainer writes: ``state.json`` (running,
completed, stopped, failed; ``died`` when a run claiming to be running has no live process, see
:func:`reptile_cli.rundir.read_state`),
``eval.json`` (the final validation: mean and 95% CI over validation tasks) and ``metrics.jsonl`` (curves).
Jobs are ranked by the validation metric only: test numbers are never used to choose between runs
(REFERENCE.md: selecting on test classes is a leak). Jobs whose overrides differ only by ``seed`` form a
group, summarised as the mean and the sample standard deviation across seeds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from reptile_cli.checkpoint import atomic_write_text
from reptile_cli.data.episodes import HIGHER_IS_BETTER, METRIC_NAMES
from reptile_cli.errors import ReptileError
from reptile_cli.overrides import override_key, quote
from reptile_cli.rundir import MetricsLog, read_state


@dataclass
class Job:
    """One job of a sweep: where it ran, its overrides, its state and its final validation (if any)."""

    path: Path
    overrides: list[str]
    state: str
    message: str = ""
    iteration: int | None = None
    metric: str | None = None
    mean: float | None = None
    ci95: float | None = None
    episodes: int | None = None
    elapsed_s: float | None = None
    # validation points (iteration, mean, ci95, tasks): periodic ones (trainer.val_tasks) and the final one
    # (eval.val_episodes), which may use more tasks
    curve: list[tuple[int, float, float | None, int | None]] = field(default_factory=list)
    dataset: str | None = None
    # the latest test evaluation of its checkpoint (reptile eval / reptile reproduce): its eval.json
    test: dict | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def ranked(self) -> bool:
        return self.state == "completed" and self.mean is not None and math.isfinite(self.mean)


def split_curve(curve: list[tuple]) -> tuple[list[tuple], list[tuple]]:
    """(periodic points, other points): the periodic validations all use ``trainer.val_tasks`` tasks; a final
    validation on another number of tasks (``eval.val_episodes``) is a separate estimate, not a curve point."""
    if not curve:
        return [], []
    periodic = curve[0][3] if len(curve) > 1 else None
    return [p for p in curve if p[3] == periodic], [p for p in curve if p[3] != periodic]


def load_job(path: Path) -> Job:
    """Read one job directory (see the module docstring); missing files leave fields empty. The iteration is
    the latest the job recorded (its state, written at each checkpoint, or its last metrics line)."""
    record = path / ".hydra" / "overrides.yaml"  # a run written without Hydra's record has none
    overrides = [str(o) for o in OmegaConf.load(record)] if record.is_file() else []
    state = read_state(path)
    job = Job(path, overrides, state.get("state", "not started"), state.get("message") or state.get("reason", ""),
              state.get("iteration"))
    eval_file = path / "eval.json"
    if eval_file.is_file():
        ev = json.loads(eval_file.read_text())
        if ev.get("split") == "val":
            job.metric, job.mean, job.ci95, job.episodes = ev["metric"], ev["mean"], ev["ci95"], ev["episodes"]
    if (path / "config.yaml").is_file():
        job.dataset = (OmegaConf.load(path / "config.yaml").get("dataset") or {}).get("name")
    job.test = latest_test(path)
    for record in MetricsLog(path / "metrics.jsonl").read():
        if "time/elapsed_s" in record:
            job.elapsed_s = record["time/elapsed_s"]
        if isinstance(record.get("iteration"), int):
            job.iteration = max(job.iteration or 0, record["iteration"])
        for metric in HIGHER_IS_BETTER:
            if f"val/{metric}" in record:
                job.metric = job.metric or metric
                job.curve.append((record["iteration"], record[f"val/{metric}"], record.get(f"val/{metric}_ci95"),
                                  record.get("val/episodes")))
    return job


def latest_test(run_dir: Path) -> dict | None:
    """The newest ``eval.json`` of the test split written for this run's checkpoints (``reptile eval`` under
    ``RUN/eval/*/``, ``reptile reproduce`` under ``RUN/reproduce/``), or None."""
    found = []
    for path in [*Path(run_dir).glob("eval/*/eval.json"), *Path(run_dir).glob("reproduce/*.json")]:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if doc.get("split") == "test" and "mean" in doc:
            found.append((path.stat().st_mtime, doc))
    return max(found, key=lambda f: f[0])[1] if found else None


def find_runs(folders: list[Path]) -> list[Job]:
    """Every training run under ``folders`` (any depth: a run directory holds ``state.json``, ``config.yaml``
    or ``last.pt``), single runs and sweep jobs alike, sorted by path. Evaluation directories are not runs.

    Raises:
        ReptileError: a folder does not exist, or none holds a run.
    """
    runs: dict[Path, None] = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.exists():
            raise ReptileError(f"{folder} does not exist: give folders holding runs (runs/, multirun/ ...)")
        candidates = [folder] + sorted(p for p in folder.rglob("*") if p.is_dir())
        for d in candidates:
            if d.name in ("eval", ".hydra", "tensorboard", "wandb", "mlruns", "reproduce") or d.parent.name == "eval":
                continue
            if any((d / f).is_file() for f in ("state.json", "last.pt")) and (d / "config.yaml").is_file():
                runs[d.resolve()] = None
    if not runs:
        raise ReptileError(f"no runs under {', '.join(map(str, folders))} (a run directory holds state.json and "
                           f"config.yaml, as reptile train writes them)")
    return [load_job(d) for d in sorted(runs)]


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every job under ``sweep_dir`` (any depth), in job-number order.

    Raises:
        ReptileError: the directory does not exist or holds no Hydra job.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ReptileError(f"{sweep_dir} is not a directory: give the sweep directory printed by `reptile train -m`"
                           f" (multirun/<name>/<time>)")
    if not (sweep_dir / "multirun.yaml").is_file():  # Hydra writes it at the root of every sweep
        if (sweep_dir / ".hydra").is_dir() or (sweep_dir / "last.pt").is_file():
            raise ReptileError(f"{sweep_dir} is a single run, not a sweep: use `reptile plot {sweep_dir}`")
        sweeps = sorted(p.parent for p in sweep_dir.rglob("multirun.yaml"))
        if sweeps:
            raise ReptileError(f"{sweep_dir} holds {len(sweeps)} sweeps: give one of them, e.g. {sweeps[-1]}")
        raise ReptileError(f"{sweep_dir} holds no sweep (no multirun.yaml): give the directory of a "
                           f"`reptile train -m` sweep")
    dirs = sorted({p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")},
                  key=lambda p: (int(p.name) if p.name.isdigit() else math.inf, str(p)))
    grid = sweep_grid(sweep_dir)
    if not dirs and not grid:
        raise ReptileError(f"{sweep_dir} holds no Hydra job (no */.hydra/overrides.yaml): give the directory of a "
                           f"`reptile train -m` sweep")
    jobs = [load_job(d) for d in dirs]
    if grid:
        started = {d.name for d in dirs}
        jobs += [Job(sweep_dir / str(i), combo, "not started") for i, combo in enumerate(grid)
                 if str(i) not in started]
        jobs.sort(key=lambda j: (int(j.name) if j.name.isdigit() else math.inf, j.name))
    return jobs


def sweep_grid(sweep_dir: Path) -> list[list[str]] | None:
    """Every job of a sweep in Hydra's job order (job ``n`` runs in ``SWEEP_DIR/n``): the task overrides that
    ``multirun.yaml`` records, with their comma-separated values expanded as Hydra's basic sweeper does (the
    cartesian product). None for other sweepers (Optuna draws its trials as it goes) or a record without
    overrides."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        record = OmegaConf.load(Path(sweep_dir) / "multirun.yaml")
    except (OSError, ValueError):
        return None
    target = str(OmegaConf.select(record, "hydra.sweeper._target_", default="") or "")
    task = OmegaConf.select(record, "hydra.overrides.task", default=None)
    if task is None or (target and not target.endswith("BasicSweeper")):
        return None
    params = OmegaConf.select(record, "hydra.sweeper.params", default=None) or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + [str(o) for o in task]
    try:
        return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)[0]
    except HydraException:  # a record edited by hand: report the jobs that have directories
        return None


def sweep_command(sweep_dir: Path) -> list[str]:
    """The ``reptile train -m`` arguments that run the sweep again into its own directory (job ``n`` in
    ``SWEEP_DIR/n`` again), from its ``multirun.yaml``: the task overrides and the Hydra ones (launcher ...).

    Raises:
        ReptileError: no ``multirun.yaml`` with its overrides.
    """
    sweep_dir = Path(sweep_dir)
    try:
        record = OmegaConf.load(sweep_dir / "multirun.yaml")
        task = [str(o) for o in OmegaConf.select(record, "hydra.overrides.task")]
        hydra = [str(o) for o in OmegaConf.select(record, "hydra.overrides.hydra", default=[])]
    except (OSError, ValueError, TypeError):
        raise ReptileError(f"{sweep_dir} has no multirun.yaml with the sweep's overrides: give the directory of a "
                           f"`reptile train -m` sweep") from None
    hydra = [o for o in hydra if override_key(o) not in ("hydra.sweep.dir", "hydra.mode")]
    return ["-m", *task, *hydra, f"hydra.sweep.dir={quote(str(sweep_dir.resolve()))}"]


def varying_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value is not the same in every job, in first-seen order."""
    values: dict[str, set] = {}
    for job in jobs:
        seen = {override_key(o): o.split("=", 1)[-1] for o in job.overrides}
        for key in {k for j in jobs for k in map(override_key, j.overrides)}:
            values.setdefault(key, set()).add(seen.get(key))
    order = [k for j in jobs for k in map(override_key, j.overrides)]
    return [k for k in dict.fromkeys(order) if len(values[k]) > 1]


def override_value(job: Job, key: str) -> str:
    for o in job.overrides:
        if override_key(o) == key:
            return o.split("=", 1)[1] if "=" in o else ""
    return ""


def rank(jobs: list[Job]) -> list[Job]:
    """Completed jobs with a validation metric, best first; then every other job, in job order."""
    done = [j for j in jobs if j.ranked]
    if done:
        higher = HIGHER_IS_BETTER[done[0].metric]
        done.sort(key=lambda j: -j.mean if higher else j.mean)
    return done + [j for j in jobs if not j.ranked]


@dataclass
class Group:
    """Jobs whose overrides are equal except ``seed``: mean and sample std of their validation means."""

    overrides: list[str]
    jobs: list[Job]

    @property
    def values(self) -> list[float]:
        return [j.mean for j in self.jobs if j.ranked]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def spread(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else math.nan


def seed_groups(jobs: list[Job]) -> list[Group]:
    """Groups of at least two jobs that differ only by ``seed``, best mean first."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        key = tuple(sorted(o for o in job.overrides if override_key(o) != "seed"))
        groups.setdefault(key, []).append(job)
    out = [Group(list(k), v) for k, v in groups.items() if len(v) > 1 and any(override_key(o) == "seed"
                                                                             for j in v for o in j.overrides)]
    metric = next((j.metric for j in jobs if j.ranked), "acc")
    higher = HIGHER_IS_BETTER[metric]
    out.sort(key=lambda g: (not g.values, -g.mean if higher else g.mean))
    return out


def fmt(metric: str | None, mean: float | None, ci: float | None) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    scale, digits = (100, 2) if metric == "acc" else (1, 4)
    text = f"{mean * scale:.{digits}f}"
    if ci is not None and math.isfinite(ci):
        text += f" ± {ci * scale:.{digits}f}"
    return text + ("%" if metric == "acc" else "")


def sweep_csv(jobs: list[Job]) -> str:
    """CSV text, one row per job in :func:`rank` order: rank, job, state, each varying override, metric,
    mean, ci95 (raw units: accuracy in [0, 1] or MSE), validation tasks, iteration, elapsed seconds, message."""
    keys = varying_keys(jobs)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["rank", "job", "state", *keys, "metric", "val_mean", "val_ci95", "val_episodes", "iteration",
                     "elapsed_s", "overrides", "message"])
    for i, job in enumerate(rank(jobs)):
        writer.writerow([i + 1 if job.ranked else "", job.name, job.state, *(override_value(job, k) for k in keys),
                         job.metric or "", job.mean if job.ranked else "", job.ci95 if job.ranked else "",
                         job.episodes or "", job.iteration if job.iteration is not None else "",
                         job.elapsed_s if job.elapsed_s is not None else "", " ".join(job.overrides), job.message])
    return buf.getvalue()


def write_sweep_csv(path: Path, jobs: list[Job]) -> None:
    atomic_write_text(path, sweep_csv(jobs))


def sweep_tables(jobs: list[Job]) -> list:
    """Rich tables: every job ranked by validation metric, and (when seeds were swept) the seed groups."""
    from rich.table import Table

    keys = varying_keys(jobs)
    metric = next((j.metric for j in jobs if j.metric), None)
    name = f"val {METRIC_NAMES[metric]}" if metric in METRIC_NAMES else "validation"
    counts = ", ".join(f"{n} {state}" for state, n in Counter(j.state for j in jobs).most_common())
    table = Table(title=f"{len(jobs)} jobs ({counts}), ranked by {name} (never by test numbers)",
                  caption="± is the 95% CI over validation tasks: 1.96 x sample std / sqrt(tasks)")
    short = [k.rsplit(".", 1)[-1] for k in keys]
    for col in ("rank", "job", "state", *(short if len(set(short)) == len(short) else keys)):
        table.add_column(col)
    table.add_column(f"{name} ± 95% CI", justify="right")
    table.add_column("iteration", justify="right")
    table.add_column("note")
    for i, job in enumerate(rank(jobs)):
        note = job.message if job.state != "completed" else ("" if job.ranked else "no validation split")
        table.add_row(str(i + 1) if job.ranked else "-", job.name, job.state,
                      *(override_value(job, k) for k in keys), fmt(job.metric, job.mean, job.ci95),
                      "" if job.iteration is None else str(job.iteration), note[:90])
    tables = [table]
    groups = seed_groups(jobs)
    if groups:
        g_table = Table(title="across seeds: mean ± sample std of the jobs' validation means")
        for col in ("settings", "seeds", f"{name} mean ± std", "jobs"):
            g_table.add_column(col)
        for g in groups:
            settings = " ".join(o for o in g.overrides if override_key(o) in keys) or "(common settings)"
            g_table.add_row(settings, f"{len(g.values)}/{len(g.jobs)}", fmt(metric, g.mean, g.spread),
                            ",".join(j.name for j in g.jobs))
        tables.append(g_table)
    return tables


RUN_SORTS = ("name", "val", "test", "iteration", "time", "state")


def run_rows(jobs: list[Job], roots: list[Path]) -> list[dict]:
    """One plain dict per run for ``reptile runs``: its name (path under the folder given), dataset, the
    overrides that differ between the runs, iteration, state, final validation and latest test evaluation (mean
    and 95% CI, raw units; the test's other protocol too), training seconds."""
    keys = varying_keys(jobs)
    rows = []
    for job in jobs:
        name = str(job.path)
        for root in roots:
            try:
                rel = job.path.relative_to(Path(root).resolve())
                name = str(rel) if rel != Path(".") else Path(root).resolve().name  # the folder given is the run
                break
            except ValueError:
                continue
        test = job.test or {}
        other = "transductive" if test.get("protocol") == "non_transductive" else "non_transductive"
        rows.append({"name": name, "path": str(job.path), "dataset": job.dataset,
                     "overrides": {k: override_value(job, k) for k in keys}, "iteration": job.iteration,
                     "state": job.state, "metric": job.metric or test.get("metric"),
                     "val": {"mean": job.mean, "ci95": job.ci95, "episodes": job.episodes} if job.mean is not None
                     else None,
                     "test": {"mean": test["mean"], "ci95": test.get("ci95"), "episodes": test.get("episodes"),
                              "protocol": test.get("protocol"), other: test.get(other)} if test else None,
                     "train_seconds": job.elapsed_s, "message": job.message})
    return rows


def sort_rows(rows: list[dict], by: str) -> list[dict]:
    """Rows sorted by ``by`` (:data:`RUN_SORTS`): metrics best first (accuracy down, MSE up), runs without
    the value last; name, iteration, time, state ascending.

    Raises:
        ReptileError: an unknown column.
    """
    if by not in RUN_SORTS:
        raise ReptileError(f"--sort {by}: choose one of {', '.join(RUN_SORTS)}")
    if by in ("val", "test"):
        def key(r):
            entry = r[by]
            if not entry or entry["mean"] is None:
                return (1, 0.0)
            return (0, -entry["mean"] if HIGHER_IS_BETTER.get(r["metric"], True) else entry["mean"])
        return sorted(rows, key=key)
    field_of = {"time": "train_seconds"}.get(by, by)
    return sorted(rows, key=lambda r: (r[field_of] is None, r[field_of] if r[field_of] is not None else 0))


def group_rows(rows: list[dict], by: str) -> list[dict]:
    """Rows that differ only by ``by`` (e.g. ``seed``) grouped: count, mean and sample std of their final
    validation and test means (nan for fewer than 2 values)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        settings = tuple(sorted((k, v) for k, v in r["overrides"].items() if k != by))
        groups.setdefault((r["dataset"], settings), []).append(r)
    out = []
    for (dataset, settings), members in groups.items():
        entry = {"dataset": dataset, "settings": dict(settings), "runs": [m["name"] for m in members],
                 by: [m["overrides"].get(by) for m in members], "metric": members[0]["metric"]}
        for part in ("val", "test"):
            values = [m[part]["mean"] for m in members if m[part] and m[part]["mean"] is not None]
            entry[part] = {"n": len(values), "mean": statistics.fmean(values) if values else math.nan,
                           "std": statistics.stdev(values) if len(values) > 1 else math.nan}
        out.append(entry)
    return out


def runs_table(rows: list[dict]):
    """A rich table of :func:`run_rows`."""
    from rich.table import Table

    keys = list(rows[0]["overrides"]) if rows else []
    table = Table(title=f"{len(rows)} runs", caption="± is the 95% CI over tasks; test: the latest reptile eval / "
                                                      "reproduce of the run's checkpoint (+T: the other protocol)")
    for col in ("run", "dataset", *keys, "iteration", "state", "val ± 95% CI", "test ± 95% CI", "+T", "time"):
        table.add_column(col, justify="right" if col in ("iteration", "time") else "left")
    for r in rows:
        test = r["test"] or {}
        other = test.get("transductive") or test.get("non_transductive") or {}
        table.add_row(r["name"], r["dataset"] or "-", *(r["overrides"][k] for k in keys),
                      "" if r["iteration"] is None else str(r["iteration"]), r["state"],
                      fmt(r["metric"], *(r["val"]["mean"], r["val"]["ci95"]) if r["val"] else (None, None)),
                      fmt(r["metric"], test.get("mean"), test.get("ci95")),
                      fmt(r["metric"], other.get("mean"), other.get("ci95")),
                      "" if r["train_seconds"] is None else f"{r['train_seconds'] / 60:.1f} min")
    return table


def groups_table(groups: list[dict], by: str):
    from rich.table import Table

    table = Table(title=f"runs grouped over {by}: mean ± sample std of their means")
    for col in ("dataset", "settings", by, "val mean ± std", "test mean ± std"):
        table.add_column(col)
    for g in groups:
        settings = " ".join(f"{k}={v}" for k, v in g["settings"].items()) or "(same settings)"
        table.add_row(g["dataset"] or "-", settings, ",".join(str(s) for s in g[by]),
                      fmt(g["metric"], g["val"]["mean"], g["val"]["std"]),
                      fmt(g["metric"], g["test"]["mean"], g["test"]["std"]))
    return table
