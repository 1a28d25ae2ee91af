"""``make bench``: speed of the paper's Omniglot 5-way 1-shot setting on this machine, in one run.

Measures, on the same model, data and threads:
- meta-iterations/s of a learn2learn-style loop (``copy.deepcopy`` of the model per task,
  ``torch.optim.Adam(betas=(0.0, 0.999))``, ``F.cross_entropy``, tasks in turn: the baseline), of the
  sequential reference path and of the batched fast path;
- evaluation tasks/s of the sequential and the batched evaluation (50 Adam steps, non-transductive);
- achieved GFLOP/s of each (FLOPs counted with ``torch.utils.flop_counter``) beside a float32 matmul's;
- the model zoo (``--zoo``, on by default): one inner Adam step of a meta-batch of 5 tasks of 5 images (a 5-way
  1-shot support set) for each model of :data:`ZOO` on the sequential path, the batched path with the model's
  ``stacked_forward`` and the batched path through ``torch.func.vmap`` (random images: the speed does not
  depend on the pixels).
The paths take turns in ``--rounds`` rounds (each path's rate is its calls over its time in all rounds), after
a warm-up with the same tensor shapes, so a shared machine's changes of speed reach all paths alike; the
ratio of each round is printed too. Prints a table with the ratios and writes ``bench.json``. A benchmark,
not a test: it asserts nothing.

Usage: ``python -m reptile_cli.bench [--data ROOT] [--iters N] [--eval-tasks N] [--rounds N] [--no-zoo]
[--out FILE]``.
Data: the prepared full Omniglot under ROOT ($REPTILE_DATA by default); if missing and the shared mirror
(``../shared/data/omniglot``) is present, it is imported into a temporary folder first.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import json
import os
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from reptile_cli import rng
from reptile_cli.batched import StackedAdaptation, batched_meta_step
from reptile_cli.confdir import config_dir
from reptile_cli.config import register_configs
from reptile_cli.data.episodes import Task, inner_batches
from reptile_cli.data.paths import default_data_root
from reptile_cli.device import keep_freed_memory
from reptile_cli.evaluate import Evaluator
from reptile_cli.families import build_task_family
from reptile_cli.inner_optim import InnerOptimizer
from reptile_cli.losses import loss_reduction
from reptile_cli.models import build_model, place
from reptile_cli.reptile import get_params, meta_update, sequential_meta_step, set_params

MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"


def compose_preset(root: Path):
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=["experiment=omniglot_5w1s", f"dataset.root={root}"])


def data_root(arg: str | None) -> Path:
    root = Path(arg) if arg else default_data_root()
    if (root / "omniglot" / "omniglot.h5").is_file():
        return root
    if not (MIRROR / "images_background.repacked.zip").is_file():
        raise SystemExit(f"no prepared Omniglot under {root} and no shared mirror: run `reptile data import omniglot`")
    from reptile_cli.data import omniglot

    tmp = Path(tempfile.mkdtemp(prefix="reptile-bench-"))
    atexit.register(shutil.rmtree, tmp, True)
    print(f"no prepared Omniglot under {root}: importing the shared mirror's full set into {tmp} (removed at exit)")
    omniglot.import_copy(tmp, [MIRROR / "images_background.repacked.zip", MIRROR / "images_evaluation.repacked.zip"],
                         progress=False)
    return tmp


def timed(fn, repeats: int) -> float:
    """Seconds per call of ``fn`` (one warm-up call first)."""
    fn(0)
    start = time.perf_counter()
    for i in range(1, repeats + 1):
        fn(i)
    return (time.perf_counter() - start) / repeats


def l2l_meta_step(model, tasks, batches, eps):
    """The baseline: a deep copy and a torch.optim.Adam per task, one task after another."""
    theta = get_params(model)
    adapted = []
    for task, task_batches in zip(tasks, batches):
        learner = copy.deepcopy(model)
        opt = torch.optim.Adam(learner.parameters(), lr=0.001, betas=(0.0, 0.999))
        for b in task_batches:
            opt.zero_grad()
            F.cross_entropy(learner(task.x[b]), task.y[b]).backward()
            opt.step()
        adapted.append(get_params(learner))
    mean = {k: torch.stack([a[k] for a in adapted]).mean(0) for k in theta}
    set_params(model, meta_update(theta, mean, eps))


@contextlib.contextmanager
def native_stderr_silenced():
    """Send the process's file descriptor 2 to /dev/null for a block: the profiler's C++ library (Kineto) writes
    a ``profiler_start``/``profiler_stop`` line there at every profile. Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def top_ops(fn, calls: int = 3, k: int = 8) -> list[tuple[str, float]]:
    """The ``k`` operators with the most self CPU time over ``calls`` calls of ``fn`` (torch.profiler), as
    (name, share of all self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(calls):
            fn(i)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    ranked = sorted(events, key=lambda e: -e.self_cpu_time_total)[:k]
    return [(e.key, e.self_cpu_time_total / total) for e in ranked]


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds = timed(lambda i: a @ b, repeats)
    return 2 * n**3 / seconds / 1e9


# the model zoo's speed: name -> (model config overrides, channels, image size)
ZOO = {
    "conv4 omniglot (64 filters, 28x28)": ({"name": "conv4"}, 1, 28),
    "conv4 miniimagenet (32 filters, 84x84)": ({"name": "conv4", "filters": 32, "stride": 1, "max_pool": True}, 3, 84),
    "conv4 cifar (32 filters, 32x32)": ({"name": "conv4", "filters": 32, "stride": 1, "max_pool": True}, 3, 32),
    "conv4 cifar (64 filters, 32x32)": ({"name": "conv4", "filters": 64, "stride": 1, "max_pool": True}, 3, 32),
    "conv4 cifar (128 filters, 32x32)": ({"name": "conv4", "filters": 128, "stride": 1, "max_pool": True}, 3, 32),
    "resnet12 (64-160-320-640, 32x32)": ({"name": "resnet12"}, 3, 32),
    "resnet12 (64-128-256-512, 84x84)": ({"name": "resnet12", "widths": [64, 128, 256, 512]}, 3, 84),
    "resnet12 (64-160-320-640, 84x84)": ({"name": "resnet12"}, 3, 84),
    "resnet12 (64-160-320-640, 84x84), dropout + DropBlock 0.1": ({"name": "resnet12", "drop_rate": 0.1}, 3, 84),
}


def zoo_speed(t, tasks: int = 5, images: int = 5, repeats: int = 2) -> dict[str, dict[str, float]]:
    """Milliseconds per inner step (forward and backward of ``tasks`` tasks of ``images`` images, one Adam
    step, and the meta-update) of each model of :data:`ZOO` on the three paths, after one warm-up call each
    (:func:`timed`);
    with the GFLOP of the step (``torch.utils.flop_counter``)."""
    from omegaconf import OmegaConf

    from reptile_cli.config import ModelConfig

    tcfg = OmegaConf.merge(t, {"inner_steps": 1, "inner_batch_size": images})
    out = {}
    for name, (overrides, channels, size) in ZOO.items():
        mcfg = OmegaConf.merge(OmegaConf.structured(ModelConfig),
                               {"in_channels": channels, "image_size": size, **overrides})
        gen = torch.Generator().manual_seed(0)
        draw = ([Task(torch.rand(images, channels, size, size, generator=gen), torch.arange(images) % 5)
                 for _ in range(tasks)], [[torch.arange(images)] for _ in range(tasks)])
        torch.manual_seed(0)
        base = build_model(mcfg, 5)
        if getattr(base, "noisy", False):  # its masks, drawn per task as the trainer does
            for i, task in enumerate(draw[0]):
                task.noise = rng.noise_generator(0, 0, i)
        models = {path: place(copy.deepcopy(base), torch.device("cpu"), torch.float32)
                  for path in ("sequential", "batched", "vmap")}
        opts = {path: InnerOptimizer(m, tcfg) for path, m in models.items()}
        steps = {"sequential": partial(sequential_meta_step, models["sequential"], opts["sequential"], *draw,
                                       "reptile", 0.5, "classification")}
        for path in ("batched", "vmap"):
            adaptation = StackedAdaptation(models[path], "classification", use_stacked=path == "batched")
            steps[path] = partial(batched_meta_step, models[path], opts[path], adaptation, *draw, "reptile", 0.5,
                                  tcfg)
        with FlopCounterMode(display=False) as counter:
            steps["sequential"]()
        row = {"gflop": counter.get_total_flops() / 1e9}
        for path, fn in steps.items():
            row[f"{path} ms"] = 1000 * timed(lambda _i, fn=fn: fn(), repeats)
        out[name] = row
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reptile_cli.bench", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", help="data root holding omniglot/omniglot.h5 (default: the tool's data root; "
                                       "without one, the shared mirror is imported into a temporary folder)")
    parser.add_argument("--iters", type=int, default=30, help="meta-iterations timed per path, over all rounds")
    parser.add_argument("--eval-tasks", type=int, default=64, help="evaluation tasks timed per path and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds in which the paths take turns")
    parser.add_argument("--out", default="bench.json", help="where the JSON results go")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-operator profile")
    parser.add_argument("--no-zoo", action="store_true", help="skip the model zoo's speed (about 3 minutes on 2 "
                                                              "cores, most of it the 84x84 ResNet-12)")
    args = parser.parse_args(argv)
    keep_freed_memory()

    cfg = compose_preset(data_root(args.data))
    t = cfg.trainer
    family = build_task_family(cfg.dataset, cfg.episode)
    draws = []
    for it in range(args.iters + 1):
        tasks = [family.train_task(0, it, i) for i in range(t.meta_batch_size)]
        draws.append((tasks, [inner_batches(len(k.x), t.inner_batch_size, t.inner_steps,
                                            rng.generator(0, "inner", it, i)) for i, k in enumerate(tasks)]))
    torch.manual_seed(0)
    base = build_model(cfg.model, family.ways)

    placed = place(copy.deepcopy(base), torch.device("cpu"), torch.float32)

    def fresh():
        model = place(copy.deepcopy(base), torch.device("cpu"), torch.float32)  # as the trainer places it
        return model, InnerOptimizer(model, t)

    # FLOPs of one meta-iteration and one evaluation task, counted on the sequential path
    model, opt = fresh()
    with FlopCounterMode(display=False) as counter:
        sequential_meta_step(model, opt, *draws[0], "reptile", 1.0, "classification")
    train_flops = counter.get_total_flops()
    evaluator = Evaluator(family, base, t, cfg.eval, torch.device("cpu"), torch.float32)
    with FlopCounterMode(display=False) as counter:
        evaluator.run_task(get_params(base), opt.state_dict(), "test", 0, 0)
    eval_flops = counter.get_total_flops()

    # The paths take turns, round after round, so that a change in the machine's speed (a shared VM's moved
    # by up to 1.7x within an hour) reaches all of them alike; a rate is all its calls over all its time.
    l2l_model = copy.deepcopy(base)  # the baseline keeps PyTorch's default layout, as a plain loop would
    seq_model, seq_opt = fresh()
    fast_model, fast_opt = fresh()
    reduction = loss_reduction(t)  # the preset's (the reference's sum)
    adaptation = StackedAdaptation(fast_model, "classification", reduction=reduction)
    train = {"train: learn2learn-style loop": lambda i: l2l_meta_step(l2l_model, *draws[i], 0.5),
             "train: sequential (reference)": lambda i: sequential_meta_step(
                 seq_model, seq_opt, *draws[i], "reptile", 0.5, "classification", reduction=reduction),
             "train: batched (fast path)": lambda i: batched_meta_step(
                 fast_model, fast_opt, adaptation, *draws[i], "reptile", 0.5, t)}
    evaluators = {}
    for path in ("sequential", "batched"):
        ecfg = copy.deepcopy(cfg.eval)
        ecfg.path = path
        evaluators[f"eval: {path}"] = Evaluator(family, placed, t, ecfg, torch.device("cpu"), torch.float32)
    evals = {name: (lambda i, ev=ev: ev.evaluate(get_params(base), state, "test", args.eval_tasks, i, progress=False))
             for name, ev in evaluators.items()}
    per_round = max(1, args.iters // args.rounds)
    seconds = {name: 0.0 for name in (*train, *evals)}
    round_rates = []
    # warm-up (oneDNN builds its kernels once per new tensor shape: chunk size, batch); the evaluations start
    # from the sequential run's optimizer state after one meta-iteration, as from a checkpoint's
    for fn in train.values():
        fn(0)
    state = seq_opt.state_dict()
    for fn in evals.values():
        fn(10_000)  # another evaluation stream, same chunking
    # per path: (calls in a round, the round r); an evaluation round is tasks 0..eval_tasks-1 of stream r
    rounds = {name: (per_round, lambda r, fn=fn: [fn(i) for i in range(r * per_round + 1, (r + 1) * per_round + 1)])
              for name, fn in train.items()}
    rounds |= {name: (args.eval_tasks, fn) for name, fn in evals.items()}
    for r in range(args.rounds):
        rates = {}
        for name, (n, run_round) in rounds.items():
            start = time.perf_counter()
            run_round(r)
            elapsed = time.perf_counter() - start
            seconds[name] += elapsed
            rates[name] = n / elapsed
        round_rates.append(rates)
    rows = {name: n * args.rounds / seconds[name] for name, (n, _) in rounds.items()}

    profiles = {}
    if not args.no_profile:
        model, opt = fresh()
        profiles["train: sequential (reference)"] = top_ops(
            lambda i: sequential_meta_step(model, opt, *draws[i], "reptile", 0.5, "classification",
                                           reduction=reduction))
        model, opt = fresh()
        adaptation = StackedAdaptation(model, "classification", reduction=reduction)
        profiles["train: batched (fast path)"] = top_ops(
            lambda i: batched_meta_step(model, opt, adaptation, *draws[i], "reptile", 0.5, t))
        ev = Evaluator(family, placed, t, cfg.eval, torch.device("cpu"), torch.float32)
        profiles[f"eval: batched, chunks of {ev.chunk_size}"] = top_ops(
            lambda i: ev.evaluate(get_params(base), state, "test", ev.chunk_size, i, progress=False), calls=1)
    peak = matmul_gflops()
    result = {"setting": "omniglot_5w1s", "threads": torch.get_num_threads(), "torch": torch.__version__,
              "matmul_gflops": peak, "train_gflop_per_iter": train_flops / 1e9,
              "eval_gflop_per_task": eval_flops / 1e9, "rates": rows, "profiles": profiles,
              "ratios": {"train batched / learn2learn-style": rows["train: batched (fast path)"]
                         / rows["train: learn2learn-style loop"],
                         "train sequential / learn2learn-style": rows["train: sequential (reference)"]
                         / rows["train: learn2learn-style loop"],
                         "eval batched / sequential": rows["eval: batched"] / rows["eval: sequential"]},
              "rounds": round_rates}
    spread = {"train batched / learn2learn-style": [r["train: batched (fast path)"] / r["train: learn2learn-style loop"]
                                                    for r in round_rates],
              "eval batched / sequential": [r["eval: batched"] / r["eval: sequential"] for r in round_rates]}
    table = Table(title=f"Omniglot 5-way 1-shot, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for col in ("path", "rate", "GFLOP/s", "vs baseline"):
        table.add_column(col, justify="right" if col != "path" else "left")
    for name, rate in rows.items():
        flops = train_flops if name.startswith("train") else eval_flops
        baseline = rows["train: learn2learn-style loop"] if name.startswith("train") else rows["eval: sequential"]
        unit = "it/s" if name.startswith("train") else "tasks/s"
        table.add_row(name, f"{rate:.2f} {unit}", f"{rate * flops / 1e9:.1f}", f"{rate / baseline:.2f}x")
    table.add_row("float32 matmul 1024^2", "", f"{peak:.1f}", "")
    Console().print(table)
    for name, ops in profiles.items():
        prof_table = Table(title=f"where the time goes: {name} (share of self CPU time)")
        prof_table.add_column("operator")
        prof_table.add_column("share", justify="right")
        for op, share in ops:
            prof_table.add_row(op, f"{100 * share:.1f}%")
        Console().print(prof_table)
    if not args.no_zoo:
        result["zoo"] = zoo_speed(t)
        zoo_table = Table(title=f"model zoo: one inner step of 5 tasks x 5 images, {torch.get_num_threads()} "
                                f"threads (ms; GFLOP/s in brackets)")
        for col in ("model", "GFLOP", "sequential", "batched (stacked)", "batched (vmap)", "batched / sequential"):
            zoo_table.add_column(col, justify="left" if col == "model" else "right")
        for name, row in result["zoo"].items():
            cells = [f"{row[f'{p} ms']:.0f} ({row['gflop'] / row[f'{p} ms'] * 1000:.0f})"
                     for p in ("sequential", "batched", "vmap")]
            zoo_table.add_row(name, f"{row['gflop']:.2f}", *cells, f"{row['sequential ms'] / row['batched ms']:.2f}x")
        Console().print(zoo_table)
    for k, v in result["ratios"].items():
        rounds = f"  (rounds: {', '.join(f'{x:.2f}x' for x in spread[k])})" if k in spread else ""
        Console().print(f"{k}: {v:.2f}x{rounds}")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    Console().print(f"written: {args.out}")


if __name__ == "__main__":
    main()
