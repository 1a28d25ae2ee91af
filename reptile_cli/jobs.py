"""The Hydra task functions behind ``reptile train`` and ``reptile eval``.

Hydra composes the config and picks the run directory (``hydra.run.dir``, or one per job in a multirun);
these functions do the work there. In a single run, errors propagate to the CLI, which prints one line and
exits with the error's code. Inside a multirun a job never ends the process: it records its state in
``state.json`` and returns, so the sweep goes on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from reptile_cli.checkpoint import load_checkpoint
from reptile_cli.config import TrainCommand, to_plain
from reptile_cli.data.datasets import build_task_family
from reptile_cli.device import precision, resolve_device
from reptile_cli.errors import ConfigError, ReptileError
from reptile_cli.evaluate import Evaluator, summarize, write_eval_json
from reptile_cli.models import build_model, check_input
from reptile_cli.rundir import write_state

log = logging.getLogger("reptile")


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


_pending: list[BaseException] = []


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
            _pending.append(err)
            return None
        stopped = isinstance(err, ReptileError) and err.exit_code == 3
        if not stopped:
            text = str(err) if isinstance(err, ReptileError) else f"{type(err).__name__}: {err}"
            write_state(run_dir, "failed", message=text)
        log.error("job %s %s: %s", HydraConfig.get().job.num, "stopped" if stopped else "failed", err)


# ----------------------------------------------------------------------------------------------- train
def train_job(cfg: DictConfig, run_dir: Path) -> dict:
    from reptile_cli.trainer import Trainer

    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        trainer = Trainer(cfg, run_dir)
    except ReptileError as err:
        write_state(run_dir, "failed", message=str(err))
        raise
    log.info("run directory: %s", run_dir)
    try:
        summary = trainer.run()
    except ReptileError as err:
        if err.exit_code != 3:
            write_state(run_dir, "failed", iteration=trainer.iteration, message=str(err))
        raise
    if summary:
        print_summary(summary, f"validation, {summary['episodes']} tasks, iteration {trainer.iteration}")
    log.info("done: %s", run_dir)
    return summary


def train_main(cfg: DictConfig) -> None:
    _guard(train_job, cfg)


# ----------------------------------------------------------------------------------------------- eval
def eval_config(ckpt: dict, cfg: DictConfig) -> DictConfig:
    """The checkpoint's training config with this command's non-null eval/episode/dataset overrides."""
    merged = OmegaConf.merge(OmegaConf.structured(TrainCommand), ckpt["config"])  # schema defaults for new keys
    for node in ("eval", "episode", "trainer"):
        for key, value in to_plain(cfg[node]).items():
            if value is not None:
                merged[node][key] = value
    if cfg.dataset.root is not None:
        merged.dataset.root = cfg.dataset.root
    merged.device = str(cfg.device.value)
    if cfg.dtype is not None:
        merged.dtype = str(cfg.dtype.value)
    return merged


def load_for_eval(path: str, cfg: DictConfig):
    """(checkpoint, merged config, task family, model on device) for one checkpoint.

    Raises:
        ReptileError: unreadable checkpoint, or one that cannot serve the requested tasks.
    """
    ckpt = load_checkpoint(path)
    merged = eval_config(ckpt, cfg)
    trained_ways = ckpt["task"]["ways"]
    if ckpt["task"]["kind"] == "classification" and merged.episode.ways != trained_ways:
        raise ConfigError(f"{path} has a {trained_ways}-way head but {merged.episode.ways}-way tasks were asked "
                          f"for: use episode.ways={trained_ways} or a {merged.episode.ways}-way checkpoint")
    device = resolve_device(merged.device)
    dtype, _ = precision(merged.dtype, device)
    family = build_task_family(merged.dataset, merged.episode)
    if family.checksum and ckpt.get("dataset_checksum") and family.checksum != ckpt["dataset_checksum"]:
        log.warning("dataset differs from the one %s was trained on (checksum)", path)
    check_input(merged.model, getattr(family, "image_shape", None))
    model = build_model(merged.model, family.ways)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise ReptileError(f"{path}: weights do not fit model {merged.model.name} "
                           f"({str(err).splitlines()[0][:160]})") from None
    return ckpt, merged, family, model.to(device, dtype)


def eval_job(cfg: DictConfig, out_dir: Path) -> dict:
    paths = [cfg.checkpoint] + ([cfg.checkpoint_b] if cfg.checkpoint_b else [])
    results, loaded = [], []
    for path in paths:
        ckpt, merged, family, model = load_for_eval(path, cfg)
        loaded.append((ckpt, merged))
        device = next(model.parameters()).device
        dtype, autocast = precision(merged.dtype, device)
        e = merged.eval
        evaluator = Evaluator(family, model, merged.trainer, e, device, dtype, autocast)
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer_state = ckpt.get("inner_optimizer")
        results.append(evaluator.evaluate(params, optimizer_state, e.split, e.episodes, e.seed,
                                          progress=bool(merged.trainer.progress), label=Path(path).name))
    if len(loaded) == 2:
        same = ("dataset", "episode")
        a, b = ({k: to_plain(m[k]) for k in same} for _, m in loaded)
        if a != b:
            raise ConfigError(f"{paths[0]} and {paths[1]} were trained on different datasets or task settings, so "
                              f"their tasks are not identical: a paired comparison needs the same dataset and episode")
    ckpt, merged = loaded[0]
    summary = results[0].summary()
    extra = {"per_task": results[0].after}
    if len(results) == 2:
        diff = [a - b for a, b in zip(results[0].after, results[1].after)]
        mean, ci = summarize(diff)
        summary_b = results[1].summary()
        extra["comparison"] = {"checkpoint_b": str(paths[1]), "b": summary_b, "per_task_b": results[1].after,
                               "paired_difference": {"mean": mean, "ci95": ci, "of": "A - B"}}
    output = Path(cfg.output) if cfg.output else out_dir / "eval.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    write_eval_json(output, summary, split=merged.eval.split, checkpoint=Path(paths[0]).resolve(),
                    iteration=ckpt["iteration"], cfg=merged, **extra)
    title = f"{merged.eval.split} split, {summary['episodes']} tasks, iteration {ckpt['iteration']}"
    print_summary(summary, title, merged, extra.get("comparison"))
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
    name = {"acc": "accuracy", "mse": "MSE"}[metric]
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
    if comparison:
        b = comparison["b"]
        table.add_row(f"B: {comparison['checkpoint_b']}", _fmt(metric, b["mean"], b["ci95"]))
        d = comparison["paired_difference"]
        table.add_row("paired difference A - B", _fmt(metric, d["mean"], d["ci95"]))
    Console().print(table)
