"""The Hydra task functions behind ``reptile train`` and ``reptile eval``.

Hydra composes the config and picks the run directory (``hydra.run.dir``, or one per job in a multirun);
these functions do the work there. In a single run, errors propagate to the CLI, which prints one line and
exits with the error's code. Inside a multirun a job never ends the process: it records its state in
``state.json`` and returns, so the sweep goes on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from reptile_cli import locks, rng
from reptile_cli.applicability import check_applicable, too_few_ways
from reptile_cli.checkpoint import load_checkpoint
from reptile_cli.config import EvalConfig, TrainCommand, to_plain
from reptile_cli.data.episodes import EPISODES_FORMAT, METRIC_NAMES, FixedEpisodes
from reptile_cli.data.paths import absolute, resolve_dataset_root
from reptile_cli.device import precision, resolve_device
from reptile_cli.distributed import init_from_env, shutdown, world_size_from_env
from reptile_cli.errors import ConfigError, DataError, ReptileError
from reptile_cli.evaluate import large_batch_notes, make_evaluator, summarize, write_eval_json
from reptile_cli.families import build_task_family
from reptile_cli.models import build_model, check_input, place, replace_head
from reptile_cli.rundir import read_state, record_failure, remove_stale_temporaries, write_json

log = logging.getLogger("reptile")


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


_pending: list[BaseException] = []


class Refused(BaseException):
    """A :class:`ReptileError` raised where Hydra would swallow an ``Exception`` (its callbacks): it reaches the
    CLI, which reports ``error`` as usual."""

    def __init__(self, error: ReptileError):
        super().__init__(str(error))
        self.error = error


class SweepInterrupted(KeyboardInterrupt):
    """A signal stopped one job of a multirun; the rest of the sweep is abandoned (exit code 3). A
    KeyboardInterrupt, because Hydra's launchers record ordinary exceptions and go on to the next job."""


def pop_error() -> BaseException | None:
    """The error a single (non-multirun) job ended with, for the CLI to report after Hydra returns."""
    return _pending.pop() if _pending else None


def _guard(job, cfg: DictConfig):
    """Run ``job(cfg, run_dir)``. A single run hands its error to the CLI (``pop_error``) rather than raising
    through Hydra, which would print extra lines; in a multirun, a failure is recorded in ``state.json``."""
    run_dir = _run_dir()
    try:
        return job(cfg, run_dir)
    except BaseException as err:  # noqa: BLE001 - a sweep must go on past a crashed job
        if not _in_multirun():
            _note_in_log_file(err)
            _pending.append(err)
            return None
        stopped = isinstance(err, ReptileError) and err.exit_code == 3
        if not stopped and not isinstance(err, KeyboardInterrupt):
            text = str(err) if isinstance(err, ReptileError) else f"{type(err).__name__}: {err}"
            if read_state(run_dir).get("state") != "completed":  # a finished run's record is never overwritten
                record_failure(run_dir, message=text)
        log.error("job %s %s: %s", HydraConfig.get().job.num, "stopped" if stopped else "failed", err)
        if getattr(err, "by_signal", False) or isinstance(err, KeyboardInterrupt):
            # Ctrl-C / SIGTERM ends the whole sweep: jobs not started yet are not run
            raise SweepInterrupted(f"sweep interrupted in {run_dir.parent}: job {run_dir.name} stopped and kept "
                                   f"its last.pt (resume it with reptile train trainer.resume={run_dir}); "
                                   f"the jobs after it did not run") from None


def _note_in_log_file(err: BaseException) -> None:
    """Append why a single run ended to its log file, when the run has one (the CLI prints the same line on
    stderr; the console handler is left out so that it is printed once). A call that logged nothing before
    failing still leaves no log file."""
    stopped = isinstance(err, ReptileError) and err.exit_code == 3
    text = str(err) if isinstance(err, ReptileError) else f"{type(err).__name__}: {err}"
    record = log.makeRecord(log.name, logging.WARNING if stopped else logging.ERROR, __file__, 0,
                            ("stopped: " if stopped else "error: ") + text, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and handler.stream is not None:
            handler.handle(record)


def configure_threads(requested: int) -> int:
    """Set torch's CPU threads for this process and return the number.

    ``threads=N`` (N > 0) is used as given. ``0`` (automatic) keeps torch's default (all cores, or
    ``OMP_NUM_THREADS`` when set), except that processes running side by side divide the cores: in a
    multirun, by the jobs that run at once (the joblib launcher's ``n_jobs``, -1 meaning one per core) or to
    the submitit launchers' ``cpus_per_task``; under torchrun, by the processes on this machine. Two jobs that
    each spread over all cores run many times slower than one at a time.

    Raises:
        ConfigError: a negative number.
    """
    if requested < 0:
        raise ConfigError(f"threads={requested}: give a positive number of CPU threads, or 0 for automatic")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = requested or torch.get_num_threads()
    if not requested and "OMP_NUM_THREADS" not in os.environ:
        if world_size_from_env() > 1:
            threads = max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        elif _in_multirun():
            launcher = HydraConfig.get().launcher
            if launcher.get("cpus_per_task"):
                threads = int(launcher.cpus_per_task)
            elif launcher.get("n_jobs"):
                parallel = cores if int(launcher.n_jobs) < 0 else min(int(launcher.n_jobs), cores)
                threads = max(1, cores // parallel)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


# ----------------------------------------------------------------------------------------------- train
def command_line_keys() -> set[str]:
    """The config keys this job's command line set (Hydra's task overrides, a sweep's swept values included);
    the values presets and defaults give are theirs to keep consistent (tests/test_audit.py)."""
    from reptile_cli.overrides import override_key

    return {override_key(o) for o in HydraConfig.get().overrides.task if not override_key(o).startswith("hydra.")}


# Whether a single run's directory was created by this call (set by the CLI), so that a run failing before it
# starts removes it rather than leaving a stub; a sweep keeps its failed jobs' directories for the report.
NEW_RUN_DIR = False


def failed_before_start(run_dir: Path, err: ReptileError, existing: bool) -> None:
    """A run that could not start: in a sweep, its directory records why (``state.json`` failed, for the
    report); a single run's directory that this call created is removed (nothing of it is worth keeping,
    and the error is on the screen); an existing run's files stay as they were."""
    if existing:
        return
    if _in_multirun() or not NEW_RUN_DIR:
        record_failure(run_dir, message=str(err))
    else:
        shutil.rmtree(run_dir, ignore_errors=True)


def train_job(cfg: DictConfig, run_dir: Path) -> dict:
    from reptile_cli.trainer import Trainer

    resolve_dataset_root(cfg.dataset)
    configure_threads(cfg.threads)
    dist = init_from_env(str(cfg.device.value))
    hold = None
    try:
        if dist is not None:  # every process works in rank 0's run directory; only rank 0 writes there
            run_dir = Path(dist.broadcast(str(run_dir)))
        main = dist is None or dist.is_main
        if main:  # one writer per run directory (the CLI may hold it already: then this is a second hold)
            hold = locks.lock_dir(run_dir)
            remove_stale_temporaries(run_dir)
        if _in_multirun() and main:
            done = earlier_job(cfg, run_dir)
            if done is not None:
                return done
        existing = (run_dir / "last.pt").is_file()  # a resume: its state.json belongs to the run until it starts
        try:
            group = f"{cfg.name}/{run_dir.parent.name}" if _in_multirun() else None  # a sweep: its jobs' group
            trainer = Trainer(cfg, run_dir, dist, given=command_line_keys(), group=group)
        except ReptileError as err:
            if main:
                failed_before_start(run_dir, err, existing)
            raise
        if not main:
            return trainer.run()
        try:
            trainer.start()  # before anything is logged: a refused resume leaves the run's files as they were
        except ReptileError as err:
            failed_before_start(run_dir, err, existing)
            raise
        log.info("run directory: %s", run_dir)
        path = getattr(cfg.trainer.path, "value", cfg.trainer.path)
        log.info("trainer.path=%s: %s", path,
                 "every task of a meta-iteration starts from one shared inner optimizer state" if trainer.semantics
                 == "shared" else "the inner optimizer state carries from task to task, as the reference")
        if dist is not None:
            log.info("%d processes (%s): each adapts its share of the meta-batch of %d tasks; every task starts "
                     "from the shared inner optimizer state (batched semantics), whatever trainer.path says",
                     dist.world, dist.backend, cfg.trainer.meta_batch_size)
        try:
            summary = trainer.run()
        except ReptileError as err:
            if err.exit_code != 3 and (trainer.started or not existing):
                record_failure(run_dir, iteration=trainer.iteration, message=str(err))
            raise
    finally:
        shutdown()
        if hold is not None:
            hold.release()
    if summary:
        print_summary(summary, f"validation, {summary['episodes']} tasks, iteration {trainer.iteration}")
    log.info("done: %s", run_dir)
    return summary


def train_main(cfg: DictConfig) -> float | None:
    """Hydra task function of ``reptile train``. Returns the final validation mean (accuracy or MSE) when the
    run has a validation split, as the objective of sweepers such as Optuna; otherwise None."""
    summary = _guard(train_job, cfg)
    if summary is None and _in_multirun():
        return math.nan  # a failed job: sweepers such as Optuna record the trial as failed
    return float(summary["mean"]) if summary else None


class SweepReport(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/train.yaml``): when a multirun starts, lock its sweep
    directory (one sweep writes there at a time; a second one fails at once); when it ends, whatever the
    launcher, print the ranked table of its jobs, write ``sweep.csv`` and ``val_curves.png`` in the sweep
    directory and remember how many jobs failed, so that ``reptile train -m`` exits 1 when any did."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            self.hold = locks.lock_dir(Path(config.hydra.sweep.dir), "sweep directory")
        except ReptileError as err:  # Hydra turns a callback's Exception into a warning and goes on
            raise Refused(err) from None

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from reptile_cli.report import find_jobs

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            jobs = find_jobs(sweep_dir)
            write_sweep_report(sweep_dir, jobs)
        except ReptileError as err:
            log.warning("no sweep report: %s", err)
            return
        finally:
            if getattr(self, "hold", None) is not None:
                self.hold.release()
                self.hold = None
        failed = [j.name for j in jobs if j.state not in ("completed", "stopped")]
        stopped = [j.name for j in jobs if j.state == "stopped"]
        if failed:
            SWEEP_FAILURES.append((sweep_dir, len(failed), len(jobs)))
        elif stopped:  # resumable, as a single run stopped on its time budget (exit code 3)
            SWEEP_STOPS.append((sweep_dir, len(stopped), len(jobs)))


SWEEP_FAILURES: list[tuple[Path, int, int]] = []  # (sweep directory, jobs failed, jobs): exit code 1
SWEEP_STOPS: list[tuple[Path, int, int]] = []  # (sweep directory, jobs stopped, jobs), none failed: exit code 3


def write_sweep_report(sweep_dir: Path, jobs) -> None:
    """Print the sweep tables and write ``sweep.csv`` and ``val_curves.png`` into ``sweep_dir``."""
    from reptile_cli.plots import plot_sweep
    from reptile_cli.report import sweep_tables, write_sweep_csv

    console = Console()
    for table in sweep_tables(jobs):
        console.print(table)
    write_sweep_csv(sweep_dir / "sweep.csv", jobs)
    png = plot_sweep(jobs, sweep_dir / "val_curves.png")
    console.print(f"sweep.csv: {sweep_dir / 'sweep.csv'}" + (f"\nvalidation curves: {png}" if png else ""))


# ----------------------------------------------------------------------------------------------- eval
def eval_config(ckpt: dict, cfg: DictConfig) -> DictConfig:
    """The checkpoint's training config with this command's non-null eval/episode/dataset overrides."""
    merged = OmegaConf.merge(OmegaConf.structured(TrainCommand), ckpt["config"])  # schema defaults for new keys
    for node in ("eval", "episode", "trainer"):
        for key, value in to_plain(cfg[node]).items():
            if value is not None:
                merged[node][key] = value
    if cfg.eval.episodes is None:  # 10,000 drawn tasks (an episodes file sets its own count)
        merged.eval.episodes = EvalConfig.episodes
    if cfg.dataset.root is not None:
        merged.dataset.root = str(absolute(cfg.dataset.root))
    resolve_dataset_root(merged.dataset)  # a checkpoint from before roots were recorded resolved
    merged.device = str(cfg.device.value)
    if cfg.dtype is not None:
        merged.dtype = str(cfg.dtype.value)
    return merged


def load_for_eval(path: str, cfg: DictConfig):
    """(checkpoint, merged config, task family, model on device, data record) for one checkpoint.

    The data is the checkpoint's (its recorded, resolved ``dataset.root``) unless ``dataset.root`` is given.
    Data whose content checksum differs from the training data's is evaluated only when the user named it
    (cross-domain evaluation); the data record (``eval.json``'s ``data``) says so.

    Raises:
        ReptileError: unreadable checkpoint, one that cannot serve the requested tasks, or data other than
            the training data without ``dataset.root`` given.
    """
    ckpt = load_checkpoint(path)
    merged = eval_config(ckpt, cfg)
    trained_ways = ckpt["task"]["ways"]
    new_head = merged.eval.new_head
    if ckpt["task"]["kind"] == "classification" and merged.episode.ways < 2:  # before the head advice below
        raise ConfigError(too_few_ways(merged.episode.ways))
    if ckpt["task"]["kind"] == "classification" and merged.episode.ways != trained_ways and not new_head:
        raise ConfigError(f"{path} has a {trained_ways}-way head but {merged.episode.ways}-way tasks were asked "
                          f"for: use episode.ways={trained_ways}, a {merged.episode.ways}-way checkpoint, or "
                          f"eval.new_head=zeros (or glorot) to start a new {merged.episode.ways}-way head")
    if new_head and merged.episode.ways == trained_ways:
        raise ConfigError(f"eval.new_head={new_head} does not apply: {path} was trained for "
                          f"{trained_ways}-way tasks, as asked; remove it, or give episode.ways=N for other N")
    device = resolve_device(merged.device)
    dtype, _ = precision(merged.dtype, device)
    family = build_task_family(merged.dataset, merged.episode, checked=(merged.eval.split,))
    check_applicable(merged, family, "eval", given=given_keys(cfg))
    data = data_record(ckpt, merged, family, explicit=cfg.dataset.root is not None, path=path)
    if merged.eval.episodes_file:
        family = fixed_episodes(family, merged, cfg)
    check_input(merged.model, getattr(family, "image_shape", None), getattr(family, "features", None))
    model = build_model(merged.model, family.ways)
    weights = ckpt["model"]
    if new_head:
        weights, ckpt["inner_optimizer"] = replace_head(weights, ckpt.get("inner_optimizer"), family.ways, new_head,
                                                        rng.generator(merged.eval.seed, "eval/new_head"))
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ReptileError(f"{path}: weights do not fit model {merged.model.name} "
                           f"({str(err).splitlines()[0][:160]})") from None
    return ckpt, merged, family, place(model, device, dtype), data


def fixed_episodes(family, merged: DictConfig, cfg: DictConfig):
    """The task family with its evaluation tasks read from ``eval.episodes_file`` (N, K, Q must be the ones
    configured; ``eval.episodes`` becomes the file's count).

    Raises:
        ConfigError / DataError: other N / K / Q than configured, a count other than the file's, or a bad file
            (:class:`reptile_cli.data.episodes.FixedEpisodes`).
    """
    e = merged.eval  # a family without fixed episodes (sine, RL) was refused up front (applicability.py)
    if e.save_episodes:
        raise ConfigError("eval.save_episodes writes drawn episodes; with eval.episodes_file they are already in "
                          "a file: give one of the two")
    fixed = FixedEpisodes(family, absolute(e.episodes_file), e.split)
    have = (fixed.ways, fixed.shots, fixed.query_shots)
    want = (merged.episode.ways, merged.episode.shots, merged.episode.query_shots)
    if have != want:
        raise ConfigError(f"eval.episodes_file={e.episodes_file} has {have[0]}-way episodes with {have[1]} support "
                          f"and {have[2]} query images per class: set episode.ways={have[0]} episode.shots={have[1]} "
                          f"episode.query_shots={have[2]}")
    if cfg.eval.episodes is not None and cfg.eval.episodes != len(fixed):
        raise ConfigError(f"eval.episodes={cfg.eval.episodes}: eval.episodes_file={e.episodes_file} holds "
                          f"{len(fixed)} episodes, all evaluated; remove eval.episodes")
    e.episodes = len(fixed)
    return fixed


def save_episodes(family, merged: DictConfig, path: Path) -> Path:
    """Write the evaluation's drawn episodes (tasks 0..episodes-1 of stream (eval.seed, eval.split)) to
    ``path`` in the format ``eval.episodes_file`` reads; evaluating that file gives the same per-task results.
    """
    e = merged.eval  # a family without named images (sine, RL) was refused up front (applicability.py)
    doc = {"format": EPISODES_FORMAT, "version": 1, "dataset": merged.dataset.name, "split": e.split,
           "content_sha256": family.checksum, "drawn_with": {"seed": e.seed, "ways": family.ways,
                                                             "shots": family.shots, "query_shots": family.query_shots},
           "episodes": [family.episode_ids(e.split, e.seed, i) for i in range(e.episodes)]}
    write_json(path, doc)
    return path


def given_keys(cfg: DictConfig) -> set[str]:
    """The settings a ``reptile eval`` command line sets (non-null values of its override sections)."""
    keys = set()
    for node in ("eval", "episode", "trainer", "dataset"):
        keys |= {f"{node}.{k}" for k, v in to_plain(cfg[node]).items() if v is not None}
    return keys


def data_record(ckpt: dict, merged: DictConfig, family, explicit: bool, path: str) -> dict:
    """Which data an evaluation reads, and whether it is the data the checkpoint was trained on.

    Raises:
        DataError: the content checksum differs from the training data's and ``dataset.root`` was not given.
    """
    trained, now = ckpt.get("dataset_checksum") or None, family.checksum or None
    differs = bool(trained and now and trained != now)
    root = merged.dataset.get("root")
    if differs and not explicit:
        raise DataError(f"{root} holds other data (content sha256 {now[:16]}) than {path} was trained on "
                        f"({trained[:16]}): give dataset.root=PATH explicitly to evaluate on other data "
                        f"(a cross-domain test), or restore the training data there")
    if differs:
        log.warning("evaluating on other data than %s was trained on: %s (content sha256 %s, training data %s)",
                    path, root, now[:16], trained[:16])
    return {"dataset": merged.dataset.name, "root": root, "content_sha256": now, "training_content_sha256": trained,
            "differs_from_training": differs}


def task_differences(a: DictConfig, b: DictConfig) -> list[str]:
    """``key: a -> b`` for the dataset and episode settings that differ between two evaluation configs; a key
    that only one of them has (a setting added in a later version, e.g. ``dataset.split_fractions``) is not
    a difference."""
    out = []
    for node in ("dataset", "episode"):
        x, y = to_plain(a[node]), to_plain(b[node])
        out += [f"{node}.{k}: {x[k]} -> {y[k]}" for k in sorted(set(x) & set(y)) if x[k] != y[k]]
    return out


def eval_job(cfg: DictConfig, out_dir: Path) -> dict:
    """One ``reptile eval``. Its output file has one writer at a time (a second evaluation into the same
    ``output`` fails at once); an evaluation that fails removes the directory Hydra made for it (``.hydra/``
    only, when it is new) instead of leaving a stub."""
    configure_threads(cfg.threads)
    dist = init_from_env(str(cfg.device.value))
    main = dist is None or dist.is_main
    output = Path(cfg.output) if cfg.output else out_dir / "eval.json"
    hold = locks.lock_beside(output, "evaluation output") if main else None
    try:
        result = _eval(cfg, out_dir, dist, output)
        if main and not _in_multirun() and Path(output).resolve().parent != Path(out_dir).resolve():
            remove_stub(out_dir)  # the output went elsewhere: Hydra's directory holds only its record
        return result
    except BaseException:
        if main and not _in_multirun():
            remove_stub(out_dir)
        raise
    finally:
        if hold is not None:
            hold.release()
        shutdown()


def earlier_job(cfg: DictConfig, run_dir: Path) -> dict | None:
    """A sweep run again into its own directory (``reptile sweep --resume``, or ``reptile train -m ...
    hydra.sweep.dir=SWEEP``) runs only what did not complete: a job that completed before is kept (its final
    validation is returned, nothing is written); one that stopped or died resumes from its ``last.pt``.

    Raises:
        ConfigError: the job's directory holds a run with other settings (another grid in the same directory).
    """
    from reptile_cli.trainer import config_differences, with_defaults

    state = read_state(run_dir)
    if state.get("state") == "completed" and (run_dir / "config.yaml").is_file():
        saved = with_defaults(OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml")))
        differ = config_differences(saved, to_plain(cfg))
        if differ:
            raise ConfigError(f"{run_dir} holds a completed run with other settings ({'; '.join(differ[:3])}): "
                              f"a sweep resumed into its directory must have the same grid")
        log.info("job %s completed earlier (iteration %s): kept as it is", run_dir.name, state.get("iteration"))
        earlier = run_dir / "eval.json"
        return json.loads(earlier.read_text()) if earlier.is_file() else {}
    if (run_dir / "last.pt").is_file() and not cfg.trainer.resume:
        cfg.trainer.resume = str(run_dir)  # stopped or died: continue it (resume_from checks the settings)
    return None


def remove_stub(out_dir: Path) -> None:
    """Remove an evaluation directory that holds nothing but Hydra's ``.hydra/`` record (and lock files), and
    its parent ``eval/`` folder when that is then empty."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return
    if any(p.name not in (".hydra",) and not p.name.endswith(".lock") for p in out_dir.iterdir()):
        return
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        out_dir.parent.rmdir()  # only when empty
    except OSError:
        pass


def _eval(cfg: DictConfig, out_dir: Path, dist, output: Path) -> dict:
    paths = [cfg.checkpoint] + ([cfg.checkpoint_b] if cfg.checkpoint_b else [])
    results, loaded, families = [], [], []
    for path in paths:
        ckpt, merged, family, model, data = load_for_eval(path, cfg)
        loaded.append((ckpt, merged, data))
        families.append(family)
        device = next(model.parameters()).device
        dtype, autocast = precision(merged.dtype, device)
        e = merged.eval
        if dist is None or dist.is_main:
            for note in large_batch_notes(merged.trainer, e, family):
                log.warning(note)
        evaluator = make_evaluator(family, model, merged.trainer, e, device, dtype, autocast)
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer_state = ckpt.get("inner_optimizer")
        results.append(evaluator.evaluate(params, optimizer_state, e.split, e.episodes, e.seed,
                                          progress=bool(merged.trainer.progress) and (dist is None or dist.is_main),
                                          label=Path(path).name, dist=dist))
    if len(loaded) == 2:
        differ = task_differences(loaded[0][1], loaded[1][1])
        if differ:
            raise ConfigError(f"{paths[0]} and {paths[1]} were trained on different datasets or task settings "
                              f"({'; '.join(differ[:3])}), so their tasks are not identical: a paired comparison "
                              f"needs the same dataset and episode settings")
    ckpt, merged, data = loaded[0]
    summary = results[0].summary()
    if dist is not None and not dist.is_main:
        return summary
    extra = {"data": data, "per_task": results[0].after,
             "evaluation": {"path": evaluator.path, "processes": dist.world if dist is not None else 1,
                            # tasks adapted at once: the chunk, or fewer when there are fewer tasks
                            "chunk_size": min(evaluator.tasks_at_once, len(results[0].after)),
                            "dtype": str(dtype).removeprefix("torch."),
                            "autocast": "bfloat16" if autocast is not None else None}}
    if len(results) == 2:
        diff = [a - b for a, b in zip(results[0].after, results[1].after)]
        mean, ci = summarize(diff)
        summary_b = results[1].summary()
        extra["comparison"] = {"checkpoint_b": str(paths[1]), "b": summary_b, "per_task_b": results[1].after,
                               "paired_difference": {"mean": mean, "ci95": ci, "of": "A - B"}}
        curves = (results[0].curve, results[1].curve)
        if curves[0] and curves[1]:  # RL: the paired difference after each adaptation step, same tasks
            extra["comparison"]["paired_curve"] = [
                {"step": j, **dict(zip(("mean", "ci95"), summarize([a[j] - b[j] for a, b in zip(*curves)])))}
                for j in range(len(curves[0][0]))]
    output.parent.mkdir(parents=True, exist_ok=True)
    write_eval_json(output, summary, split=merged.eval.split, checkpoint=Path(paths[0]).resolve(),
                    iteration=ckpt["iteration"], cfg=merged, family=families[0], **extra)
    title = f"{merged.eval.split} split, {summary['episodes']} tasks, iteration {ckpt['iteration']}"
    if "adaptation_curve" in summary:  # RL: the return against adaptation steps, beside eval.json
        from reptile_cli.plots import plot_adaptation

        curves = {Path(paths[0]).name: summary["adaptation_curve"]}
        if "comparison" in extra:
            curves[f"B: {Path(paths[1]).name}"] = extra["comparison"]["b"]["adaptation_curve"]
        png = plot_adaptation(curves, output.with_name(f"{output.stem}_adaptation.png"), title)
        Console().print(f"adaptation curve: {png}")
    if merged.eval.save_episodes:  # after eval.json: a failure to write the episodes keeps the evaluation
        saved = save_episodes(family, merged, absolute(merged.eval.save_episodes))
        log.info("wrote the %d episodes to %s", merged.eval.episodes, saved)
    print_summary(summary, title, merged, extra.get("comparison"))
    if data["differs_from_training"]:
        Console(soft_wrap=True).print(f"data: {data['root']} is NOT the data the checkpoint was trained on (content "
                                      f"sha256 {data['content_sha256'][:16]}, training data "
                                      f"{data['training_content_sha256'][:16]})")
    Console().print(f"eval.json: {output}")
    return summary


def eval_main(cfg: DictConfig) -> None:
    torch.set_grad_enabled(True)
    _guard(eval_job, cfg)


# ----------------------------------------------------------------------------------------------- output
def _fmt(metric: str, mean: float, ci: float) -> str:
    if metric == "acc":
        return f"{100 * mean:.2f}% ± {100 * ci:.2f}"
    return f"{mean:.4f} ± {ci:.4f}"


def print_summary(summary: dict, title: str, cfg: DictConfig | None = None, comparison: dict | None = None) -> None:
    """A rich table of the headline metric with its 95% CI, the other protocol and the pre-adaptation value."""
    metric = summary["metric"]
    name = METRIC_NAMES[metric]
    table = Table(title=title, caption="95% CI: 1.96 x sample std / sqrt(tasks), over tasks")
    table.add_column("")
    table.add_column(f"{name} (mean ± 95% CI)", justify="right")
    table.add_row(f"after adaptation ({summary['protocol'].replace('_', '-')})",
                  _fmt(metric, summary["mean"], summary["ci95"]))
    for other in ("transductive", "non_transductive"):
        if other in summary:
            table.add_row(f"after adaptation ({other.replace('_', '-')})",
                          _fmt(metric, summary[other]["mean"], summary[other]["ci95"]))
    before = summary["before_adaptation"]
    table.add_row("before adaptation", _fmt(metric, before["mean"], before["ci95"]))
    for point in summary.get("adaptation_curve", [])[1:-1]:  # RL: the return after each adaptation step
        table.add_row(f"after {point['step']} adaptation step(s)", _fmt(metric, point["mean"], point["ci95"]))
    if comparison:
        b = comparison["b"]
        table.add_row(f"B: {comparison['checkpoint_b']}", _fmt(metric, b["mean"], b["ci95"]))
        d = comparison["paired_difference"]
        table.add_row("paired difference A - B", _fmt(metric, d["mean"], d["ci95"]))
        for point in comparison.get("paired_curve", [])[:-1]:  # RL: A - B after each earlier adaptation step
            table.add_row(f"  A - B after {point['step']} step(s)", _fmt(metric, point["mean"], point["ci95"]))
    Console().print(table)
