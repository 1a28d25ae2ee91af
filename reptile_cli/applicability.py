"""No setting is accepted and ignored: a key that cannot change what a run computes must keep its inert value.

Every key of the schemas in :mod:`reptile_cli.config` either changes what is computed (prepared pixels,
batches, shapes, steps, scores) or, where it does not apply (a key of another dataset, model, optimizer or
evaluation path), must keep its default; otherwise the run stops before any work with a one-line
:class:`ConfigError` that names the key, says why it does not apply and what to do. ``tests/test_audit.py``
checks every declared key against every dataset, model and path, and that the keys allowed are effective.

Called by the trainer and by ``reptile eval`` once the task family is known, for the keys given on the command
line (``reptile eval``: against the checkpoint's configuration). The presets' own values are checked by the
tests (every preset passes with every key checked), so a preset switched to another optimizer or with its
periodic validation turned off does not fail on a value the user never typed.
"""

from __future__ import annotations

from collections.abc import Iterable

from omegaconf import OmegaConf

from reptile_cli.config import EvalConfig, ImageDataConfig, ModelConfig, SineDataConfig, TrainerConfig, to_plain
from reptile_cli.errors import ConfigError
from reptile_cli.models import MODELS, SUGGEST

# each model.* key -> the models that read it (a key no model of the run reads must keep its default)
MODEL_KEY_OWNERS = {key: [name for name, spec in MODELS.items() if key in spec.keys]
                    for key in dict.fromkeys(k for spec in MODELS.values() for k in spec.keys)}

ADAM_KEYS = ("adam_beta1", "adam_beta2", "adam_eps", "adam_eps_convention")
# a model that cannot serve the task family at all: refused however it was chosen (a preset, model=...)
ALWAYS = {"model.name", "model.distribution"}


# the schemas' values: a key that does not apply must keep its own
DEFAULTS = {name: to_plain(OmegaConf.structured(schema)) for name, schema in
            (("trainer", TrainerConfig), ("eval", EvalConfig), ("model", ModelConfig), ("image", ImageDataConfig),
             ("sine", SineDataConfig))}


def inapplicable(cfg, family, command: str = "train") -> list[tuple[str, str]]:
    """``(key, why it does not apply and what to do)`` for every key set to a value other than its inert one
    where it cannot change what is computed.

    Args:
        cfg: a composed ``train`` config, or the configuration ``reptile eval`` runs (the checkpoint's with the
            command's overrides).
        family: the task family built from it (``kind``, ``splits``, ``seeded_split`` for image datasets).
        command: ``train`` or ``eval`` (training never reads ``eval.split`` or ``eval.episodes``).
    """
    c = to_plain(cfg)
    d, m, t, e, ep = c["dataset"], c["model"], c["trainer"], c["eval"], c["episode"]
    out: list[tuple[str, str]] = []

    def inert(section: str, key: str, value, default, why: str) -> None:
        if value != default:
            out.append((f"{section}.{key}", f"{section}.{key}={_show(value)} does not apply: {why}; remove it "
                                            f"(or set it back to {_show(default)})"))

    regression, rl = family.kind == "regression", family.kind == "rl"
    if d["name"] == "sine":
        sd = DEFAULTS["sine"]
        inert("dataset", "root", d.get("root"), None, "sine tasks are generated, no data is read")
        inert("dataset", "split", d.get("split"), sd["split"], "sine's val and test are random streams")
        inert("dataset", "split_seed", d.get("split_seed"), sd["split_seed"], "sine has no class split to seed")
        inert("dataset", "val_characters", d.get("val_characters"), sd["val_characters"], "sine has no characters")
    elif "split_fractions" in d:  # an image dataset
        idf = DEFAULTS["image"]
        reptile_split = d["name"] == "omniglot" and d["split"] == "reptile"
        if not reptile_split:
            inert("dataset", "val_characters", d["val_characters"], idf["val_characters"],
                  f"it carves validation characters out of the reptile split of the full Omniglot, not "
                  f"{d['name']} with dataset.split={d['split']}")
        if not getattr(family, "seeded_split", True):
            inert("dataset", "split_seed", d["split_seed"], idf["split_seed"],
                  f"the split of {d['name']} (dataset.split={d['split']}) is fixed, not drawn")
        if not (d["name"] == "folder" and getattr(family, "seeded_split", False)):
            inert("dataset", "split_fractions", d["split_fractions"], idf["split_fractions"],
                  "only a folder without train/val/test sub-folders is split by fractions")
        if d["name"] in ("omniglot", "omniglot_small") and d["split"] == "vinyals":
            inert("dataset", "rotations", d["rotations"], idf["rotations"],
                  "the Vinyals split lists its rotated classes itself")

    md = DEFAULTS["model"]
    spec = MODELS.get(m["name"])  # an unknown name is refused by build_model
    if spec is not None:
        for key, owners in MODEL_KEY_OWNERS.items():
            if key not in spec.keys:
                inert("model", key, m.get(key), md[key],
                      f"it is a setting of model.name={' or '.join(owners)}, this model is {spec.what}")
        if "drop_rate" in spec.keys and not m.get("drop_rate"):
            inert("model", "dropblock_size", m.get("dropblock_size"), md["dropblock_size"],
                  "model.drop_rate=0 turns dropout and DropBlock off; set model.drop_rate (0.1 as MetaOptNet) too")
        if family.kind not in spec.kinds:
            suggest = SUGGEST[family.kind].replace("<dataset>", d["name"])
            out.append(("model.name", f"model.name={m['name']} does not apply to dataset={d['name']}: it is "
                                      f"{spec.what}, for {' or '.join(spec.kinds)} tasks, and {d['name']} is a "
                                      f"{family.kind} task family; use {suggest}"))
    if rl and m["name"] == "policy" and m.get("distribution") != family.distribution:
        out.append(("model.distribution", f"model.distribution={m.get('distribution')} does not apply to "
                                          f"{d['name']}: its actions need model.distribution={family.distribution}"))

    if regression:
        inert("episode", "ways", ep["ways"], 1, "a regression task has one output, not N classes")
        points = d.get("num_points")
        if ep["query_shots"] != points:
            out.append(("episode.query_shots", f"episode.query_shots={ep['query_shots']} does not apply: a sine "
                                               f"task's query set is the whole grid of dataset.num_points={points}; "
                                               f"set episode.query_shots={points}"))
        inert("eval", "transductive", e.get("transductive"), False,
              "the MLP has no batch norm, so both protocols compute the same thing")
    elif rl:
        why = "an RL task is an environment, not N-way K-shot episodes"
        for key, default in (("ways", 5), ("shots", 1), ("query_shots", 1), ("train_shots", 10)):
            inert("episode", key, ep[key], default, why)
        inert("eval", "transductive", e.get("transductive"), False, "a policy has no batch norm to share")
        for key in ("chunk_size", "path"):
            inert("eval", key, e.get(key), DEFAULTS["eval"][key],
                  "RL tasks are evaluated one at a time (their episodes are collected step after step)")
        inert("trainer", "loss_reduction", t["loss_reduction"], "mean",
              "the policy-gradient surrogate averages over the episodes' steps")
        inert("trainer", "inner_batch_size", t["inner_batch_size"], DEFAULTS["trainer"]["inner_batch_size"],
              "an RL inner step uses dataset.rollouts episodes, not a minibatch")
        inert("eval", "inner_batch_size", e.get("inner_batch_size"), DEFAULTS["eval"]["inner_batch_size"],
              "an RL adaptation step uses dataset.rollouts episodes, not a minibatch")
    elif ep["ways"] < 2:
        out.append(("episode.ways", too_few_ways(ep["ways"])))

    if regression or rl:  # refused before any work (the evaluation would otherwise run, then fail)
        for key in ("episodes_file", "save_episodes"):
            inert("eval", key, e.get(key), None, f"{d['name']} tasks are generated from seeded streams (the same "
                                                 f"eval.seed gives the same tasks); fixed episodes are for "
                                                 f"classification datasets")

    td, ed = DEFAULTS["trainer"], DEFAULTS["eval"]
    if t["inner_optimizer"] == "sgd":
        for key in ADAM_KEYS:
            inert("trainer", key, t[key], td[key], "it is a setting of the Adam inner optimizer, this run uses SGD")
        inert("eval", "inner_state", e.get("inner_state"), ed["inner_state"],
              "plain SGD has no state, so every evaluation task starts the same way")
    if e.get("path") == "sequential":
        inert("eval", "chunk_size", e.get("chunk_size"), ed["chunk_size"],
              "the sequential evaluation adapts one task at a time")

    if command == "eval":  # reported only when typed (check_applicable's given)
        out.append(("episode.train_shots", f"episode.train_shots={ep['train_shots']} does not apply to reptile eval: "
                                           f"it sizes training tasks, and evaluation draws none; remove it"))
        out.append(("eval.val_episodes", f"eval.val_episodes={e.get('val_episodes')} does not apply to reptile eval: "
                                         f"it sizes training's final validation; use eval.episodes (and eval.split)"))
    if command == "train":
        if not t["eval_every"]:
            inert("trainer", "val_tasks", t["val_tasks"], td["val_tasks"],
                  "it is the size of the periodic validation, which trainer.eval_every=0 turns off")
        for key in ("new_head", "episodes_file", "save_episodes"):
            inert("eval", key, e.get(key), None, "it is a setting of reptile eval")
        has_val = "val" in family.splits
        inert("eval", "split", e["split"], ed["split"],
              "training validates on its val split; choose the evaluation split with reptile eval")
        inert("eval", "episodes", e["episodes"], ed["episodes"],
              "training validates with eval.val_episodes tasks; give the test tasks to reptile eval")
        if not has_val:
            why = (f"{d['name']} with these settings has no validation split (the paper's Omniglot split has none: "
                   f"add dataset.val_characters=N to carve one)")
            inert("trainer", "eval_every", t["eval_every"], td["eval_every"], why)
            inert("trainer", "val_tasks", t["val_tasks"], td["val_tasks"], why)
            inert("eval", "val_episodes", e["val_episodes"], ed["val_episodes"], why)
            inert("eval", "seed", e["seed"], ed["seed"], why + "; reptile eval takes its own eval.seed")
    return out


def too_few_ways(ways: int) -> str:
    """Why a classification task needs 2 or more classes."""
    return (f"episode.ways={ways}: a 1-way task is solved without learning anything (loss 0, accuracy 100%); "
            f"use 2 or more")


def check_applicable(cfg, family, command: str = "train", given: Iterable[str] | None = None) -> None:
    """Raise :class:`ConfigError` for the first key of :func:`inapplicable` (only keys in ``given``, when it
    is given: ``reptile eval`` answers for the settings typed on its command line, not for its checkpoint's).
    """
    given = None if given is None else set(given)
    for key, message in inapplicable(cfg, family, command):
        if given is None or key in given or key in ALWAYS:
            raise ConfigError(message)


def _show(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
