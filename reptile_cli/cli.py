"""The ``reptile`` command line: thin Typer commands that hand over to Hydra or the data layer.

``reptile train`` and ``reptile eval`` run Hydra's own application runner (``hydra.main``), so overrides,
``-m`` multirun sweeps, launcher and sweeper plugins and ``--cfg job`` all behave as Hydra documents.
Errors become one line on stderr and an exit code (``reptile_cli.errors``); ``--trace`` (or
``REPTILE_TRACE=1``) shows the full traceback instead.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from reptile_cli import __version__
from reptile_cli.errors import EXIT_ERROR, EXIT_STOPPED, EXIT_USAGE, ReptileError
from reptile_cli.overrides import override_key, quote

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Few-shot meta-learning with Reptile (Nichol, Achiam & Schulman 2018).")
data_app = typer.Typer(no_args_is_help=True, help="Get datasets: download, import a copy you have, list.")
app.add_typer(data_app, name="data")

_SCRATCH: list[str] = []  # throw-away directories of torchrun ranks > 0
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}
_trace = False


def _fail(code: int, message: str):
    # exit 3 is a clean, resumable stop (a time budget, Ctrl-C), not an error
    typer.echo(f"reptile: {'stopped' if code == 3 else 'error'}: {message}", err=True)
    raise typer.Exit(code)


def one_line(err: BaseException) -> str:
    """A Hydra/OmegaConf error (and its cause) as one line: drop key-path noise, collapse whitespace."""
    parts = []
    for e in (err, err.__cause__):
        if e is None:
            continue
        text = "\n".join(line for line in str(e).splitlines()
                         if not re.match(r"\s*(full_key|object_type|reference_type|msg)\s*[:=]", line)
                         and not re.fullmatch(r"\s*\w+_schema\s*", line))  # schemas are not options to pick
        text = text.split("Config search path:")[0]
        text = re.sub(r"\s*To append to your config use \+\S+", "", text)
        if text.strip() and text.strip() not in " ".join(parts):
            parts.append(text.strip())
    line = re.sub(r"\s+", " ", " ".join(parts))
    return line[:600]


# what reptile eval says of a config group or section it does not take (the checkpoint gives them)
FROM_CHECKPOINT = {
    "model": "the model and its settings are the checkpoint's, as trained (train another run to change them)",
    "dataset": "the dataset is the checkpoint's (dataset.root=PATH reads another copy of it)",
    "experiment": "the training settings are the checkpoint's; set eval.* and episode.* keys instead",
}


def _not_an_eval_setting(line: str) -> str | None:
    """For ``reptile eval``, whose schema takes a few keys of some sections (``TrainerOverrides`` ...), name
    the keys it takes instead of the schema class: the others come from the checkpoint."""
    import dataclasses

    from reptile_cli import config

    group = re.search(r"Could not override '(\w+)'\. No match in the defaults list.*?use \+(\w+=\S+)", line)
    top = re.search(r"Could not override '([\w.]+)'.*Key '(\w+)' not in 'EvalCommand'", line)
    section = group.group(1) if group else top.group(2) if top else None
    if section in FROM_CHECKPOINT:
        what = group.group(2) if group else top.group(1)
        return f"{what} is not a setting of reptile eval: {FROM_CHECKPOINT[section]}"
    if top:
        from reptile_cli.config import EvalCommand

        takes = ", ".join(f.name for f in dataclasses.fields(EvalCommand) if not f.name.startswith("checkpoint")
                          and f.name not in ("eval", "episode", "dataset", "trainer"))
        return (f"{top.group(1)} is not a setting of reptile eval (it takes {takes}, and eval.*, episode.*, "
                f"dataset.root, trainer.progress / loss_reduction; the training seed is the checkpoint's, "
                f"eval.seed draws the evaluation tasks)")
    m = re.search(r"Could not override '([\w.]+)'.*Key '\w+' not in '(\w+Overrides)'", line)
    schema = getattr(config, m.group(2), None) if m else None
    if schema is None or not dataclasses.is_dataclass(schema):
        return None
    key, section = m.group(1), m.group(1).split(".")[0]
    allowed = ", ".join(f"{section}.{f.name}" for f in dataclasses.fields(schema))
    return f"{key} is not a setting of reptile eval (of {section}.*, it takes {allowed}; the checkpoint gives the rest)"


def _classify(err: BaseException) -> int:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return EXIT_USAGE if isinstance(err, (HydraException, OmegaConfBaseException)) else EXIT_ERROR


def run_hydra(config_name: str, task_function, hydra_args: list[str]) -> None:
    """Run ``task_function`` under ``hydra.main`` for ``conf/<config_name>.yaml`` with ``hydra_args``."""
    import hydra
    from omegaconf import OmegaConf

    from reptile_cli.confdir import config_dir
    from reptile_cli.config import register_configs

    register_configs()
    if not OmegaConf.has_resolver("reptile_eval_dir"):
        OmegaConf.register_new_resolver("reptile_eval_dir", _eval_dir)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us; we print them as one line
    from reptile_cli.device import keep_freed_memory

    keep_freed_memory()
    from reptile_cli import rundir

    argv = sys.argv
    rundir.COMMAND = ["reptile", *argv[1:]]
    sys.argv = [f"reptile-{config_name}", *hydra_args]
    from reptile_cli.jobs import SWEEP_FAILURES, SWEEP_STOPS, Refused, pop_error

    try:
        hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(task_function)()
        err = pop_error()
        if err is not None:
            raise err
        if SWEEP_FAILURES:
            where, failed, total = SWEEP_FAILURES.pop()
            raise ReptileError(f"{failed} of {total} jobs failed (their state.json says why; table in "
                               f"{where / 'sweep.csv'})")
        if SWEEP_STOPS:
            where, stopped, total = SWEEP_STOPS.pop()
            raise ReptileError(f"{stopped} of {total} jobs stopped before their last iteration, none failed; "
                               f"continue them with: reptile sweep --resume {where}", EXIT_STOPPED)
    except (ReptileError, Refused) as err:
        if _trace:
            raise
        err = getattr(err, "error", err)
        _fail(err.exit_code, str(err))
    except KeyboardInterrupt as err:
        _fail(3, str(err) or "interrupted")
    except Exception as err:  # Hydra's and OmegaConf's own errors, an OS error, or a bug
        if _trace:
            raise
        code = _classify(err)
        if isinstance(err, ValueError) and "Config group override must be" in str(err):  # group=null
            from reptile_cli.confdir import presets

            nulls = [a for a in hydra_args if "=" in a and a.split("=", 1)[1].strip("'\"").lower() in ("null", "none")]
            named = " ".join(a for a in nulls if presets(a.split("=")[0].lstrip("+"))) or "a config group"
            _fail(EXIT_USAGE, f"{named}: a config group takes a preset's name, not null (reptile train --help "
                              f"lists them)")
        if code != EXIT_USAGE and isinstance(err, OSError):  # e.g. hydra.run.dir under a file, a full disk
            where = f": {err.filename}" if err.filename else ""
            _fail(EXIT_ERROR, f"{err.strerror or err}{where} (check hydra.run.dir and the paths given)")
        prefix = "config: " if code == EXIT_USAGE else f"{type(err).__name__}: "
        line = one_line(err)
        # a key reptile eval does not take: the tool's own one-line refusal, no traceback to offer
        ours = _not_an_eval_setting(line) if config_name == "eval" else None
        _fail(code, prefix + (ours or line + "  (add --trace for the full traceback)"))
    finally:
        sys.argv = argv


def _eval_dir(checkpoint: str) -> str:
    path = Path(checkpoint).expanduser().resolve()
    return str((path if path.is_dir() else path.parent) / "eval")


def _version(value: bool):
    if value:
        typer.echo(f"reptile {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    trace: Annotated[bool, typer.Option("--trace", envvar="REPTILE_TRACE",
                                        help="Show full tracebacks instead of one-line errors.")] = False,
):
    """Few-shot meta-learning with Reptile. Exit codes: 0 done, 1 error, 2 bad usage or config, 3 stopped
    (resumable)."""
    global _trace
    _trace = trace


def _hydra_flags(multirun: bool, cfg: str | None) -> list[str]:
    return (["--multirun"] if multirun else []) + (["--cfg", cfg] if cfg else [])


def process_overrides(multirun: bool) -> list[str]:
    """Under ``torchrun`` all processes share rank 0's run directory: the other ranks get a throw-away Hydra
    directory, no log files, and learn rank 0's directory when the job starts (``reptile_cli.jobs``)."""
    from reptile_cli.distributed import rank_from_env, world_size_from_env

    if world_size_from_env() <= 1:
        return []
    if multirun:
        _fail(EXIT_USAGE, "-m cannot run under torchrun: start the sweep without torchrun (each job is one run), "
                          "or run torchrun once per setting")
    rank = rank_from_env()
    if rank == 0:
        return []
    scratch = tempfile.mkdtemp(prefix=f"reptile-rank{rank}-")
    _SCRATCH.append(scratch)  # removed by main()
    return [f"hydra.run.dir={quote(scratch)}", "hydra.output_subdir=null", "hydra/job_logging=disabled",
            "hydra/hydra_logging=disabled"]


MULTIRUN = typer.Option("--multirun", "-m", help="Hydra multirun: sweep comma-separated values, one job each.")
CFG = typer.Option("--cfg", help="Print the composed config (job, hydra or all) and exit without running.")


def _presets_help() -> str:
    """The presets ``reptile train`` can pick, one line per config group, for its ``--help``."""
    from reptile_cli.confdir import presets

    lines = [f"{group}= {', '.join(names)}" for group in ("experiment", "model", "dataset", "logger")
             if (names := presets(group))]
    head = "Presets, one per group (e.g. experiment=omniglot_5w1s model=resnet12):"
    return "\n\n".join([head, *lines]) if lines else ""


@app.command(context_settings=PASS_THROUGH, epilog=_presets_help())
def train(
    ctx: typer.Context,
    multirun: Annotated[bool, MULTIRUN] = False,
    cfg: Annotated[str | None, CFG] = None,
):
    """Meta-train a model. OVERRIDES use Hydra syntax, e.g. experiment=sine trainer.meta_iters=1000.

    Other Hydra flags pass through (--info, --config-dir, --hydra-help); `--cfg job` prints every key.
    Several processes: torchrun --nproc_per_node=P -m reptile_cli train OVERRIDES (README "Several processes").
    """
    from reptile_cli.jobs import train_main

    refuse_new_keys(list(ctx.args))
    args = resume_overrides(list(ctx.args))
    hold = None
    if not cfg:
        hold = lock_run_dir(args, "hydra.sweep.dir" if multirun else "hydra.run.dir")
    try:
        run_hydra("train", train_main, _hydra_flags(multirun, cfg) + args + process_overrides(multirun))
    finally:
        if hold is not None:
            hold.release()


def lock_run_dir(args: list[str], key: str = "hydra.run.dir"):
    """Lock a single run's directory (``key`` = ``hydra.run.dir``, also set by ``trainer.resume``) or a sweep's
    (``hydra.sweep.dir``) before Hydra writes into it (its ``.hydra/`` record, the log), when the command names
    it. A second process aimed at the same directory then fails here, at once, having written nothing; a run or
    sweep in the default directory (a new one named by the time) is locked by the job or the sweep itself.
    Under torchrun, rank 0 alone locks (the other ranks work in scratch directories). Returns the lock, or None.

    Marks a directory that this call creates (:data:`reptile_cli.jobs.NEW_RUN_DIR`), so that a run failing
    before it starts removes it instead of leaving a stub.
    """
    from reptile_cli import jobs, locks
    from reptile_cli.distributed import rank_from_env, world_size_from_env

    if world_size_from_env() > 1 and rank_from_env() != 0:
        return None
    given = _last_value(args, key)
    if not given:
        jobs.NEW_RUN_DIR = True  # Hydra's default run directory is new: runs/<name>/<time with microseconds>
        return None
    run_dir = Path(given).expanduser()
    created = not run_dir.exists()
    try:
        hold = locks.lock_dir(run_dir, "sweep directory" if key == "hydra.sweep.dir" else "run directory")
    except ReptileError as err:
        _fail(err.exit_code, str(err))
    if key == "hydra.run.dir":
        jobs.NEW_RUN_DIR = created
    return hold


def _last_value(args: list[str], key: str) -> str:
    """The value of the last ``key=VALUE`` among ``args`` (quotes stripped), or ``""``."""
    values = [a.split("=", 1)[1].strip("'\"") for a in args if "=" in a and override_key(a) == key]
    return values[-1] if values else ""


def refuse_new_keys(args: list[str]) -> None:
    """``+key=value`` adds a key that no schema declares, which the tool would silently ignore: refuse it
    (``hydra.*`` keys excepted, such as ``+hydra.callbacks...``)."""
    for a in args:
        if a.startswith("~") and not a.startswith("~/") and not override_key(a).startswith("hydra."):  # ~/: a path
            _fail(EXIT_USAGE, f"{a}: '~' deletes a key, and every key of reptile has a value; set "
                              f"{override_key(a).split('=')[0]}=VALUE instead (`reptile train --cfg job` lists them)")
        if a.startswith("++") and "=" in a and not override_key(a).startswith("hydra."):
            _fail(EXIT_USAGE, f"{a}: '++' would add {override_key(a)} if it did not exist, and reptile reads only its "
                              f"own keys; set it without the '++' ({a[2:]})")
        if a.startswith("+") and "=" in a and not override_key(a).startswith("hydra."):
            _fail(EXIT_USAGE, f"{a}: '+' adds a key that reptile does not read; check the spelling of "
                              f"{override_key(a)} (every key is listed with `reptile train --cfg job`)")


RECORDED_PATHS = ("dataset.root",)  # recorded resolved in checkpoints; a resume reads them from there


def _checkpoint_settings(checkpoint: Path) -> dict[str, str]:
    """The settings of ``trainer.KEPT_FROM_CHECKPOINT`` and :data:`RECORDED_PATHS` as a checkpoint records them
    (schema defaults for keys added after it was written), or ``{}`` when it cannot be read (the trainer then
    reports it)."""
    from reptile_cli.checkpoint import load_checkpoint
    from reptile_cli.trainer import KEPT_FROM_CHECKPOINT, with_defaults

    try:
        config = with_defaults(load_checkpoint(checkpoint)["config"])
    except (ReptileError, KeyError, TypeError):
        return {}
    out = {}
    for key in (*KEPT_FROM_CHECKPOINT, *RECORDED_PATHS):
        node = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            out[key] = str(node)
    return out


def resume_overrides(args: list[str]) -> list[str]:
    """``trainer.resume=PATH`` continues that run in its own directory with its own settings: the run's
    original overrides (``.hydra/overrides.yaml``) come first, then the ones given now, and
    ``hydra.run.dir`` is set to the run's directory. ``auto`` and other arguments pass unchanged."""
    value = _last_value(args, "trainer.resume")
    if value in ("", "null", "None", "auto"):
        given_dir = _last_value(args, "hydra.run.dir")
        if not given_dir or not (Path(given_dir).expanduser() / "last.pt").is_file():
            return args
        if value != "auto":
            _fail(EXIT_USAGE, f"hydra.run.dir={given_dir} already holds a run (last.pt): continue it with "
                              f"trainer.resume={given_dir}, or give another hydra.run.dir")
        given = {override_key(a) for a in args if "=" in a}
        recorded = _checkpoint_settings(Path(given_dir).expanduser() / "last.pt")
        kept = [f"{key}={quote(value)}" for key, value in recorded.items() if key not in given]
        return args + kept + ["hydra.output_subdir=null"]  # resume=auto of an existing run: keep its .hydra/ record
    path = Path(value).expanduser()
    if not path.exists():
        _fail(EXIT_ERROR, f"trainer.resume={value}: no such run directory or checkpoint")
    if path.is_dir() and not (path / "last.pt").is_file():
        if (path / "state.json").is_file() or (path / "config.yaml").is_file():
            _fail(EXIT_ERROR, f"trainer.resume={value}: this run stopped before its first checkpoint "
                              f"(trainer.checkpoint_every), so there is nothing to resume: start it again")
        _fail(EXIT_ERROR, f"trainer.resume={value}: {path} holds no last.pt; give a run directory of `reptile "
                          f"train` (runs/<name>/<time>) or a checkpoint file")
    run_dir = (path if path.is_dir() else path.parent).resolve()
    # recorded resolved, so that config.yaml names the same run from any directory
    args = [f"trainer.resume={quote(str(path.resolve()))}" if "=" in a and override_key(a) == "trainer.resume" else a
            for a in args]
    saved = run_dir / ".hydra" / "overrides.yaml"
    given = {override_key(a) for a in args if "=" in a}
    recorded = _checkpoint_settings(path if path.is_file() else run_dir / "last.pt")
    original = []
    if saved.is_file():
        from omegaconf import OmegaConf

        # the run's paths as the checkpoint recorded them, resolved, replace the overrides as typed (a relative
        # dataset.root names another folder from another directory)
        skip = given | {"hydra.run.dir"} | (set(recorded) & set(RECORDED_PATHS))
        original = [str(o) for o in OmegaConf.load(saved) if override_key(str(o)) not in skip]
    extra = [] if "hydra.run.dir" in given else [f"hydra.run.dir={quote(str(run_dir))}"]
    # what a preset chose when the run started (trainer.path, the loss reduction ...): presets' values can
    # change between versions, and a run's trajectory must not
    named = given | {override_key(o) for o in original}
    extra += [f"{key}={quote(value)}" for key, value in recorded.items() if key not in named]
    # Hydra would rewrite the run's .hydra/overrides.yaml, which is the record this resume reads: keep it
    return original + args + extra + ["hydra.output_subdir=null"]


@app.command("eval", context_settings=PASS_THROUGH)
def evaluate(
    ctx: typer.Context,
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint (.pt) or run directory (uses its last.pt).",
                                              metavar="CHECKPOINT [CHECKPOINT_B] [OVERRIDES]...")],
    multirun: Annotated[bool, MULTIRUN] = False,
    cfg: Annotated[str | None, CFG] = None,
):
    """Evaluate CHECKPOINT [CHECKPOINT_B] on N-way K-shot tasks: mean and 95% CI over tasks.

    With CHECKPOINT_B both are evaluated on identical tasks, with the paired difference. OVERRIDES such as
    eval.episodes=1000 eval.transductive=true eval.inner_state=fresh episode.shots=5; unset values come from
    the checkpoint's training config.
    """
    from reptile_cli.jobs import eval_main

    args = list(ctx.args)
    refuse_new_keys(args)
    paths = [checkpoint]
    if args and "=" not in args[0] and not args[0].startswith("-"):
        paths.append(args.pop(0))
    for p in paths:
        if not Path(p).exists():
            _fail(EXIT_ERROR, f"checkpoint {p} does not exist: give a .pt file or a run directory holding last.pt")
    overrides = [f"checkpoint={quote(paths[0])}"] + ([f"checkpoint_b={quote(paths[1])}"] if len(paths) > 1 else [])
    run_hydra("eval", eval_main, _hydra_flags(multirun, cfg) + overrides + args + process_overrides(multirun))


@app.command()
def sweep(
    sweep_dir: Annotated[Path, typer.Argument(help="A `reptile train -m` sweep directory.")],
    resume: Annotated[bool, typer.Option("--resume", help="Run the sweep again into its directory: completed jobs "
                                                          "are kept, stopped or died ones resume, the rest start."
                                         )] = False,
):
    """Report a sweep: every job of its grid with its state (not started, running with its iteration, stopped,
    died, failed, completed), overrides and final validation metric with its 95% CI, ranked by the validation
    metric (never test numbers), seed groups as mean ± std; writes sweep.csv and val_curves.png into SWEEP_DIR.
    With --resume, first run the jobs that did not complete."""
    from reptile_cli import locks
    from reptile_cli.jobs import write_sweep_report
    from reptile_cli.report import find_jobs, sweep_command

    if resume:
        import subprocess

        args = _data_call(sweep_command, sweep_dir)
        code = subprocess.call([sys.executable, "-m", "reptile_cli", "train", *args])
        raise typer.Exit(code)
    jobs = _data_call(find_jobs, sweep_dir)
    _data_call(write_sweep_report, sweep_dir, jobs)
    left = [j for j in jobs if j.state != "completed"]
    if left and locks.is_held(sweep_dir):
        typer.echo(f"the sweep is running ({len(left)} of {len(jobs)} jobs not completed yet)")
    elif left:
        typer.echo(f"{len(left)} of {len(jobs)} jobs did not complete; run them (completed jobs are kept, "
                   f"stopped ones resume): reptile sweep --resume {quote(str(sweep_dir))}")


@app.command()
def runs(
    folders: Annotated[list[Path], typer.Argument(help="Folders holding runs (any depth): runs/, multirun/ ...")],
    sort: Annotated[str, typer.Option(help="name, val, test, iteration, time or state.")] = "name",
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON, for scripts.")] = False,
    group_by: Annotated[str | None, typer.Option(help="Group runs that differ only by this override (seed): "
                                                      "mean and std of their metrics.")] = None,
):
    """A table of the runs under FOLDERS: name, dataset, the overrides that differ, iteration, state (running,
    completed, stopped, died, failed), final validation and latest test metric with 95% CIs, training time."""
    from rich.console import Console

    from reptile_cli.report import find_runs, group_rows, groups_table, run_rows, runs_table, sort_rows

    rows = _data_call(lambda: sort_rows(run_rows(find_runs(folders), folders), sort))
    groups = group_rows(rows, group_by) if group_by else None
    if as_json:
        from reptile_cli.rundir import json_text

        typer.echo(json_text({"runs": rows, **({"groups": groups} if groups is not None else {})}), nl=False)
        return
    console = Console(width=max(120, shutil.get_terminal_size().columns))
    console.print(runs_table(rows))
    if groups is not None:
        console.print(groups_table(groups, group_by))


@app.command(context_settings=PASS_THROUGH)
def reproduce(
    ctx: typer.Context,
    cell: Annotated[str | None, typer.Argument(help="A cell of the paper's table, named as its preset.")] = None,
    list_cells: Annotated[bool, typer.Option("--list", help="Show every cell, its state and expected cost.")] = False,
    readme: Annotated[bool, typer.Option("--readme", help="Write the records of cells not run and the README's "
                                                          "table from the records.")] = False,
    runs: Annotated[Path, typer.Option(help="Where the training runs are (RUNS/<preset>-seed<S>).")]
    = Path("runs/reproduce"),
    records: Annotated[Path | None, typer.Option(help="Where the records go (default: reproduce/ of the "
                                                      "checkout).")] = None,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    episodes: Annotated[int, typer.Option(help="Test tasks per evaluation (the paper: 10,000).")] = 10_000,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: automatic).")] = 0,
):
    """Reproduce one cell of the paper's table: train (resumable: run it again after a stop), evaluate on
    10,000 test tasks in both protocols, write reproduce/<cell>/. Extra arguments are train overrides such as
    dataset.root=PATH or trainer.max_time=SECONDS (other overrides mark the record as not the paper's setting)."""
    from reptile_cli import reproduce as rep

    records = records or rep.default_records()
    if list_cells:
        _data_call(_list_cells, runs, records, seed)
        return
    if readme:
        _data_call(_write_readme, records)
        return
    if cell is None:
        _fail(EXIT_USAGE, "give a cell (reptile reproduce --list shows them), or --list / --readme")
    folder = _data_call(rep.reproduce, cell, runs, records, seed, list(ctx.args), episodes, threads)
    record = json.loads((folder / "record.json").read_text())
    if not record.get("paper_settings", True):
        typer.echo(f"NOT the paper's settings (overrides: {' '.join(ctx.args)}): compare with the paper's numbers "
                   f"only as a smoke test")
    for p in ("non_transductive", "transductive"):
        m = record["measured"][p]
        typer.echo(f"{cell} {p.replace('_', '-')}: {m['mean']:.2f} ± {m['ci95']:.2f} "
                   f"(paper {record['paper'][p]:.2f}: {record['verdict'][p]})")
    typer.echo(f"record: {folder}")


def _list_cells(runs: Path, records: Path, seed: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from reptile_cli import reproduce as rep

    table = Table(title="cells of the paper's table (reptile reproduce CELL)")
    for col in ("cell", "training", "paper (+T)", "state", "measured (+T)", "expected on CPU", "on GPU"):
        table.add_column(col)
    docs = rep.load_records(records)
    for c in rep.CELLS:
        doc = docs[c.name]
        measured = "-"
        if doc["state"] == "done":
            m = doc["measured"]
            measured = f"{m['non_transductive']['mean']:.2f} / {m['transductive']['mean']:.2f}"
        cost = rep.expected_cost(c, records)
        table.add_row(c.name, c.train, f"{c.paper[0]:.2f} / {c.paper[1]:.2f}",
                      rep.cell_state(c, runs, records, seed), measured, cost["cpu"], cost["gpu"])
    Console(width=200).print(table)


def _write_readme(records: Path) -> None:
    from reptile_cli import reproduce as rep
    from reptile_cli.confdir import config_dir
    from reptile_cli.rundir import write_json

    for c in rep.CELLS:
        path = records / c.name / "record.json"
        if not path.is_file() or json.loads(path.read_text()).get("state") != "done":
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, {**rep.not_run_record(c), "expected_cost": rep.expected_cost(c, records)})
    readme = config_dir().parent / "README.md"
    changed = rep.update_readme(readme, records)
    typer.echo(f"{readme}: {'table updated' if changed else 'table already up to date'}")


@app.command()
def plot(
    run_dir: Annotated[Path, typer.Argument(help="A `reptile train` run directory.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="PNG path (default RUN_DIR/curves.png).")]
    = None,
):
    """Draw a run's training loss and validation curve (with its 95% CI band) to a PNG."""
    from reptile_cli.plots import plot_run

    typer.echo(f"wrote {_data_call(plot_run, run_dir, output)}")


# ----------------------------------------------------------------------------------------------- data
ROOT = typer.Option("--root", help="Data root (default: $REPTILE_DATA or ~/.cache/reptile).")
FILTER = typer.Option(help="Resize filter: nearest (Omniglot's reference default), lanczos (Mini-ImageNet's), "
                           "bilinear or box.")
SPLITS_MIRROR = typer.Option(help="Where the split files are: directory or URL (or $REPTILE_SPLITS_MIRROR).")
# datasets with published class lists (reptile_cli.data.datasets.LISTED; named here so that --help does not
# import the data modules); those with an official archive can be downloaded
LISTED = ("cifarfs", "fc100", "cub", "tieredimagenet")
DOWNLOADS = ("omniglot", "omniglot-splits", "miniimagenet-splits", "cifarfs", "fc100", "cub")
IMPORTS = ("omniglot", "miniimagenet", *LISTED)


def _refuse_options(dataset: str, given: dict[str, bool], applies: dict[str, tuple[str, ...]]) -> None:
    """Exit with a usage error when an option was given for a dataset it does not apply to (``given``: option
    -> whether the user set it; ``applies``: option -> the datasets that read it)."""
    for option, was_given in given.items():
        if was_given and dataset not in applies[option]:
            _fail(EXIT_USAGE, f"{option} does not apply to {dataset}: it is an option of "
                              f"{', '.join(applies[option])}; remove it")


def _resizing(names: tuple[str, ...]) -> tuple[str, ...]:
    """Those of ``names`` whose preparation resizes images (every one but the class-list datasets that store
    their images as they are)."""
    from reptile_cli.data.datasets import LISTED as specs

    return tuple(n for n in names if n not in specs or specs[n].resizes)


def _data_call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ReptileError as err:
        if _trace:
            raise
        _fail(err.exit_code, str(err))
    except KeyboardInterrupt:
        _fail(3, "interrupted; nothing half-written was kept, run the command again")
    except OSError as err:  # a read-only or full data root, a path that cannot be created ...
        if _trace:
            raise
        where = f" {err.filename}" if err.filename else ""
        _fail(EXIT_ERROR, f"cannot write{where}: {err.strerror or err} (check --root and the paths given)")


def _root(root: Path | None) -> Path:
    from reptile_cli.data.paths import absolute, default_data_root

    return absolute(root) if root else default_data_root()


@data_app.command("download")
def data_download(
    dataset: Annotated[str, typer.Argument(help=f"One of: {', '.join(DOWNLOADS)}.")],
    variant: Annotated[str, typer.Option(help="Omniglot: full (1623 characters) or small (8 alphabets).")] = "full",
    root: Annotated[Path | None, ROOT] = None,
    mirror: Annotated[str | None, typer.Option(
        help="Directory, file:// or http(s):// URL holding the same file names (or $REPTILE_MIRROR).")] = None,
    splits_mirror: Annotated[str | None, SPLITS_MIRROR] = None,
    resize_filter: Annotated[str | None, FILTER] = None,
):
    """Fetch from the official URLs (or a mirror), verify checksums, prepare once (idempotent)."""
    from reptile_cli.data import miniimagenet, omniglot

    if dataset in IMPORTS and dataset not in DOWNLOADS:
        _fail(EXIT_USAGE, f"{dataset} has no official download (its images may not be redistributed): prepare a "
                          f"copy you have with `reptile data import {dataset} PATH`")
    if dataset not in DOWNLOADS:
        _fail(EXIT_USAGE, f"unknown dataset {dataset!r}: choose one of {', '.join(DOWNLOADS)} (Mini-ImageNet "
                          f"images are not downloadable: use `reptile data import miniimagenet PATH`)")
    _refuse_options(dataset, {"--variant": variant != "full", "--splits-mirror": splits_mirror is not None,
                              "--resize-filter": resize_filter is not None},
                    {"--variant": ("omniglot",), "--splits-mirror": ("omniglot", "omniglot-splits",
                                                                     "miniimagenet-splits"),
                     "--resize-filter": _resizing(("omniglot", *LISTED))})
    if dataset in LISTED:
        from reptile_cli.data.datasets import LISTED as specs

        spec = specs[dataset]
        path = _data_call(spec.download, _root(root), mirror, resize_filter=resize_filter or spec.default_filter,
                          progress=True)
    elif dataset == "omniglot-splits":
        path = _data_call(omniglot.download_splits, _root(root), splits_mirror or mirror)
    elif dataset == "miniimagenet-splits":
        path = _data_call(miniimagenet.download_splits, _root(root), splits_mirror or mirror)
    else:
        if variant not in omniglot.VARIANTS:
            _fail(EXIT_USAGE, f"--variant {variant}: choose full or small")
        path = _data_call(omniglot.download, _root(root), variant, mirror, splits_mirror=splits_mirror,
                          resize_filter=resize_filter or "nearest")
    typer.echo(f"ready: {path}")


@data_app.command("import")
def data_import(
    dataset: Annotated[str, typer.Argument(help=f"One of: {', '.join(IMPORTS)}.")],
    paths: Annotated[list[Path], typer.Argument(help="Zips or folders of a copy you already have.")],
    root: Annotated[Path | None, ROOT] = None,
    resize_filter: Annotated[str | None, FILTER] = None,
    allow_partial: Annotated[bool, typer.Option(
        help="Mini-ImageNet, CIFAR-FS, FC100, CUB, tieredImageNet: accept a copy with images or classes missing "
             "(prepared and reported as partial).")] = False,
    splits_dir: Annotated[Path | None, typer.Option(
        help="Mini-ImageNet: folder with the split CSVs (train/val/test.csv).")] = None,
    splits_mirror: Annotated[str | None, SPLITS_MIRROR] = None,
):
    """Prepare a copy you already have (zips or folders), checking its structure and contents."""
    from reptile_cli.data import miniimagenet, omniglot

    if dataset not in IMPORTS:
        _fail(EXIT_USAGE, f"unknown dataset {dataset!r}: choose one of {', '.join(IMPORTS)}")
    _refuse_options(dataset, {"--allow-partial": allow_partial, "--splits-dir": splits_dir is not None,
                              "--splits-mirror": splits_mirror is not None,
                              "--resize-filter": resize_filter is not None},
                    {"--allow-partial": ("miniimagenet", *LISTED), "--splits-dir": ("miniimagenet",),
                     "--splits-mirror": ("miniimagenet",), "--resize-filter": _resizing(IMPORTS)})
    if dataset == "omniglot":  # the import prints its own report
        _data_call(omniglot.import_copy, _root(root), list(paths),
                   resize_filter=resize_filter or "nearest")
    elif dataset in LISTED:
        from reptile_cli.data.datasets import LISTED as specs

        spec = specs[dataset]
        _data_call(spec.import_copy, _root(root), list(paths), resize_filter=resize_filter or spec.default_filter,
                   allow_partial=allow_partial, progress=True)
    else:
        if len(paths) != 1:
            _fail(EXIT_USAGE, "Mini-ImageNet is imported from one folder or zip")
        _data_call(miniimagenet.import_copy, _root(root), paths[0], allow_partial=allow_partial,
                   splits_dir=splits_dir, splits_mirror=splits_mirror,
                   resize_filter=resize_filter or miniimagenet.DEFAULT_FILTER)


@data_app.command("list")
def data_list(root: Annotated[Path | None, ROOT] = None):
    """List the prepared datasets under the data root."""
    from rich.console import Console
    from rich.table import Table

    from reptile_cli.data import omniglot

    rows = _data_call(omniglot.list_prepared, _root(root))
    table = Table(title=f"prepared datasets in {_root(root)}")
    for col in ("file", "dataset", "variant", "classes", "images", "filter", "size"):
        table.add_column(col, overflow="fold")  # a narrow terminal wraps a path, never cuts it
    for r in rows:
        table.add_row(f"{Path(r['path']).parent.name}/{Path(r['path']).name}", r["dataset"], str(r["variant"]),
                      str(r["classes"]), str(r["images"]), str(r["resize_filter"]), f"{r['size_bytes'] / 1e6:.1f} MB")
    Console().print(table if rows else f"no prepared datasets in {_root(root)}")


def main() -> None:
    """Console-script entry point.

    Under ``torchrun`` the process ends with ``os._exit`` once its output is flushed, skipping the interpreter's
    finalization: once ``torch._dynamo`` has been imported (``torch.func`` does so), the process group keeps
    references that ``destroy_process_group`` does not drop, so gloo's worker threads outlive it, and one that
    releases a collective's tensor while Python finalizes aborts the process (SIGABRT, "terminate called
    without an active exception"; seen in about 1 run in 30 of a 2-process job that had finished its work).
    Checkpoints and JSON files are complete by then (written atomically, closed).
    """
    from reptile_cli.distributed import world_size_from_env

    # a log line that cannot be written (a full disk) must not print a traceback: the write errors that matter
    # are reported by the code that writes
    logging.raiseExceptions = False
    if world_size_from_env() <= 1:
        app()
        return
    code = 0
    try:
        app()
    except SystemExit as done:
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    for scratch in _SCRATCH:
        shutil.rmtree(scratch, ignore_errors=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
