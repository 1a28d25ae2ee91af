"""PNG plots of training and validation curves (matplotlib, drawn off-screen with the Agg backend).

``reptile plot RUN_DIR`` -> ``RUN_DIR/curves.png``: the mean training loss of each logging window and the
validation metric with its 95% CI band, against the meta-iteration. ``reptile sweep SWEEP_DIR`` ->
``SWEEP_DIR/val_curves.png``: the validation curve of every job, labelled by the overrides that vary.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from reptile_cli.checkpoint import atomic_write  # noqa: E402
from reptile_cli.errors import ReptileError  # noqa: E402
from reptile_cli.report import Job, override_value, split_curve, varying_keys  # noqa: E402
from reptile_cli.rundir import MetricsLog  # noqa: E402

LABELS = {"acc": "validation accuracy", "mse": "validation MSE", "return": "validation return"}


def _save(fig, path: Path) -> Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Draw one run's curves from its ``metrics.jsonl``; returns the PNG's path.

    Raises:
        ReptileError: not a run directory, or no metrics recorded yet.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReptileError(f"{run_dir} " + ("is a file" if run_dir.exists() else "does not exist")
                           + ": give a run directory of `reptile train` (runs/<name>/<time>)")
    if (run_dir / "multirun.yaml").is_file():
        raise ReptileError(f"{run_dir} is a sweep: use `reptile sweep {run_dir}` (or plot one job, {run_dir}/0)")
    records = MetricsLog(run_dir / "metrics.jsonl").read()
    if not records:
        raise ReptileError(f"{run_dir} has no metrics.jsonl records: give a run directory of `reptile train` "
                           f"(runs/<name>/<time>) that has logged at least trainer.log_every iterations")
    key = "train/return" if any("train/return" in r for r in records) else "train/loss"  # RL reports returns
    train = [(r["iteration"], r[key]) for r in records if key in r]
    metric = next((m for m in LABELS if any(f"val/{m}" in r for r in records)), None)
    fig, axes = plt.subplots(1, 2 if metric else 1, figsize=(11 if metric else 6, 4), squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot(*zip(*train), color="tab:blue", marker="o" if len(train) == 1 else None)
    ax.set(xlabel="meta-iteration", ylabel=f"training {key.split('/')[1]} (mean over the logging window)",
           title="training")
    ax.grid(alpha=0.3)
    if metric:
        val = [(r["iteration"], r[f"val/{metric}"], r.get(f"val/{metric}_ci95") or 0.0, r.get("val/episodes"))
               for r in records if f"val/{metric}" in r]
        periodic, final = split_curve(val)
        ax = axes[0][1]
        if periodic:
            its, means, cis, tasks = zip(*periodic)
            ax.plot(its, means, marker="o", color="tab:orange", label=f"every trainer.eval_every ({tasks[0]} tasks)")
            ax.fill_between(its, [m - c for m, c in zip(means, cis)], [m + c for m, c in zip(means, cis)],
                            color="tab:orange", alpha=0.25, label="95% CI over tasks")
        for it, mean, ci, tasks in final:
            ax.errorbar([it], [mean], yerr=[ci], fmt="*", markersize=12, color="tab:red", capsize=4,
                        label=f"final validation ({tasks} tasks) ± 95% CI")
        ax.set(xlabel="meta-iteration", ylabel=LABELS[metric], title="validation")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(str(run_dir), fontsize=8)
    return _save(fig, Path(out) if out else run_dir / "curves.png")


def plot_sweep(jobs: list[Job], out: Path) -> Path | None:
    """Draw every job's validation curve on one axes; None when no job recorded a validation."""
    with_curves = [j for j in jobs if j.curve]
    if not with_curves:
        return None
    keys = varying_keys(jobs)
    metric = with_curves[0].metric
    fig, ax = plt.subplots(figsize=(8, 5))
    for job in with_curves:
        label = " ".join(f"{k}={override_value(job, k)}" for k in keys) or job.name
        label = f"{job.name}: {label}" + ("" if job.ranked else f" ({job.state})")
        periodic, final = split_curve(job.curve)
        color = None
        if periodic:
            its, means, _, _ = zip(*periodic)
            color = ax.plot(its, means, marker="o", markersize=3, label=label)[0].get_color()
        for it, mean, _, _ in final:
            ax.plot([it], [mean], marker="*", markersize=11, linestyle="none", color=color,
                    label=None if periodic else label)
    ax.plot([], [], marker="*", markersize=11, linestyle="none", color="gray",
            label="★ final validation (eval.val_episodes tasks; periodic points use trainer.val_tasks)")
    ax.set(xlabel="meta-iteration", ylabel=LABELS.get(metric, "validation"), title=f"{out.parent}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out)



def plot_adaptation(curves: dict[str, list[dict]], out: Path, title: str = "") -> Path:
    """RL evaluation: the mean return (with its 95% CI band over tasks) against adaptation steps 0..k, one line
    per checkpoint (``curves``: label -> ``eval.json``'s ``adaptation_curve``)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, curve in curves.items():
        steps = [p["step"] for p in curve]
        means = [p["mean"] for p in curve]
        cis = [p["ci95"] if p["ci95"] == p["ci95"] else 0.0 for p in curve]  # nan for a single task
        line = ax.plot(steps, means, marker="o", label=label)[0]
        ax.fill_between(steps, [m - c for m, c in zip(means, cis)], [m + c for m, c in zip(means, cis)],
                        color=line.get_color(), alpha=0.2)
    ax.set(xlabel="adaptation steps (policy-gradient steps on the test task)", ylabel="mean return per episode",
           title=title or "return after adaptation, 95% CI over tasks")
    ax.set_xticks(steps)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out)
