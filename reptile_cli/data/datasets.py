"""From a ``dataset`` config to a task family: open the prepared HDF5 store, make the class splits.

Splits (REFERENCE.md "Data"):
- ``reptile``: a seeded shuffle (``dataset.split_seed``) of all characters; the first 1200 train, the other
  423 test; ``dataset.val_characters`` of the 1200 become validation. Training classes are x4 rotations.
- ``vinyals``: the fixed Vinyals et al. lists (``Alphabet/characterNN/rotDDD``), 4112 / 688 / 1692 classes.
- ``alphabets`` (the small variant): a seeded split of the 8 alphabets, 5 train / 1 val / 2 test.
Whatever the split, no character may sit in two splits; this is checked every time a dataset is opened.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from reptile_cli import rng
from reptile_cli.data import cifar, cub, folder, miniimagenet, omniglot, tiered
from reptile_cli.data.episodes import ClassificationTasks, ClassPool
from reptile_cli.data.paths import default_data_root
from reptile_cli.data.sine import SineTasks
from reptile_cli.errors import ConfigError, DataError

log = logging.getLogger("reptile")

IN_MEMORY_LIMIT = 1 << 30  # bytes: smaller stores are read into memory once, larger ones per task


class ImageStore:
    """A prepared HDF5 image file (format ``reptile-cli/images`` v1, written by ``reptile data``).

    Holds ``images`` uint8 ``[num_images, H, W, C]``, ``class_start`` int64 ``[num_classes + 1]`` and
    ``class_names``. Files up to ``IN_MEMORY_LIMIT`` bytes are read into memory once; larger ones are read
    per task (``take``), so a process never holds a whole large split.

    Raises:
        DataError: missing, unreadable or foreign file (the message says how to prepare it).
    """

    def __init__(self, path: Path, hint: str):
        self.path = path
        if not path.is_file():
            raise DataError(f"no prepared dataset at {path}: {hint}")
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != "reptile-cli/images":
                    raise DataError(f"{path} is not a reptile-cli image file: {hint}")
                self.attrs = dict(f.attrs)
                start = torch.from_numpy(f["class_start"][()]).long()
                self.names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["class_names"][()]]
                self.class_split = ([n.decode() if isinstance(n, bytes) else str(n) for n in f["class_split"][()]]
                                    if "class_split" in f else [""] * len(self.names))
                shape, nbytes = f["images"].shape, f["images"].size
                self.images: Any = (torch.from_numpy(f["images"][()]) if nbytes <= IN_MEMORY_LIMIT else None)
        except OSError as err:
            raise DataError(f"cannot read {path} ({err}): delete it and prepare the dataset again; {hint}") from None
        self.start, self.count = start[:-1], start[1:] - start[:-1]
        self.check_pixels(hint)
        self.image_shape = tuple(int(s) for s in shape[1:])  # (H, W, C)
        self._file = None
        if self.images is None:
            self.images = self

    def check_pixels(self, hint: str) -> None:
        """Refuse a file whose pixels changed after it was prepared: its ``content_sha256`` (of the source
        files) would still name the data it held then. Files prepared before ``pixels_sha256`` was recorded are
        not checked.

        Raises:
            DataError: the pixels no longer match their record.
        """
        expected = self.attrs.get("pixels_sha256")
        if not expected:
            return
        digest = hashlib.sha256()
        if isinstance(self.images, torch.Tensor):
            for i in range(0, len(self.images), 4096):
                digest.update(self.images[i:i + 4096].numpy().tobytes())
        else:
            with h5py.File(self.path, "r") as f:
                images = f["images"]
                for i in range(0, images.shape[0], 4096):
                    digest.update(np.ascontiguousarray(images[i:i + 4096]).tobytes())
        if digest.hexdigest() != str(expected):
            raise DataError(f"{self.path} was changed after it was prepared (its pixels no longer match the record "
                            f"made then): delete it and prepare the dataset again; {hint}")

    def take(self, idx: list[int]) -> torch.Tensor:
        """Lazily read images ``idx`` -> uint8 ``[len(idx), H, W, C]``, one chunk (image) at a time.

        Large files are stored one image per chunk; h5py's fancy indexing over a list is far slower than
        reading each image on its own (about 270 ms against 1 ms for a 75-image Mini-ImageNet task).
        """
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        images = self._file["images"]
        return torch.from_numpy(np.stack([images[i] for i in idx]))

    def index(self, name: str) -> int:
        return self._by_name()[name]

    def _by_name(self) -> dict[str, int]:
        if not hasattr(self, "_names_map"):
            self._names_map = {n: i for i, n in enumerate(self.names)}
        return self._names_map

    def pool(self, classes: list[tuple[int, int]]) -> ClassPool:
        """A :class:`ClassPool` of (store class index, quarter turns) pairs."""
        c = torch.tensor([c for c, _ in classes], dtype=torch.long)
        rot = torch.tensor([r for _, r in classes], dtype=torch.long)
        names = [self.names[i] + (f"/rot{90 * r:03d}" if r else "") for i, r in classes]
        return ClassPool(self.images, self.start[c], self.count[c], rot, names)


def character_of(name: str) -> str:
    """``Alphabet/characterNN`` of a class name (strips a rotation suffix)."""
    return "/".join(name.split("/")[:2])


def check_disjoint(splits: dict[str, list[tuple[int, int]]], store: ImageStore) -> None:
    """Raise DataError if any character appears in two splits (rotations count as the same character)."""
    seen: dict[str, str] = {}
    for split, classes in splits.items():
        for c, _ in classes:
            char = store.names[c]
            if seen.setdefault(char, split) != split:
                raise DataError(f"character {char} is in both the {seen[char]!r} and {split!r} splits: "
                                f"the split is broken; check dataset.split and the split files")


def _with_rotations(classes: list[int], rotate: bool) -> list[tuple[int, int]]:
    return [(c, r) for c in classes for r in (range(4) if rotate else [0])]


def reptile_split(store: ImageStore, cfg) -> dict[str, list[tuple[int, int]]]:
    """The reference split: seeded shuffle of all characters, 1200 train (incl. validation) / rest test."""
    n = len(store.names)
    if n < 1623:
        raise ConfigError(f"dataset.split=reptile needs the full Omniglot (1623 characters), {store.path} has "
                          f"{n}: use dataset=omniglot_small for the small set")
    perm = torch.randperm(n, generator=rng.generator(cfg.split_seed, "split")).tolist()
    train, test = perm[:1200], perm[1200:]
    if not 0 <= cfg.val_characters < 1200:
        raise ConfigError(f"dataset.val_characters={cfg.val_characters}: must be 0..1199")
    split = {"train": _with_rotations(sorted(train[: 1200 - cfg.val_characters]), cfg.rotations)}
    if cfg.val_characters:
        split["val"] = _with_rotations(sorted(train[1200 - cfg.val_characters:]), False)
    split["test"] = _with_rotations(sorted(test), False)
    return split


def vinyals_split(store: ImageStore, cfg, split_dir: Path) -> dict[str, list[tuple[int, int]]]:
    """The fixed Vinyals et al. lists; each line ``Alphabet/characterNN/rotDDD`` is one class."""
    out = {}
    for split in ("train", "val", "test"):
        path = split_dir / f"{split}.txt"
        if not path.is_file():
            raise DataError(f"missing split file {path}: run `reptile data download omniglot-splits` "
                            f"(--mirror DIR offline)")
        classes = []
        for line in path.read_text().split():
            alphabet, char, rot = line.split("/")
            try:
                classes.append((store.index(f"{alphabet}/{char}"), int(rot[3:]) // 90))
            except KeyError:
                raise DataError(f"{path} names {alphabet}/{char}, which {store.path} lacks: "
                                f"dataset.split=vinyals needs the full Omniglot") from None
        out[split] = classes
    return out


def alphabet_split(store: ImageStore, cfg) -> dict[str, list[tuple[int, int]]]:
    """Seeded split by alphabet (the small variant): 5 / 1 / 2 of 8 alphabets, or 60% / 15% / rest."""
    alphabets = sorted({n.split("/")[0] for n in store.names})
    if len(alphabets) < 3:
        raise DataError(f"{store.path} has {len(alphabets)} alphabets: a split by alphabet needs at least 3")
    perm = [alphabets[i] for i in torch.randperm(len(alphabets), generator=rng.generator(cfg.split_seed, "split"))]
    n_train = max(1, round(0.6 * len(perm)))
    n_val = max(1, round(0.15 * len(perm)))
    groups = {"train": perm[:n_train], "val": perm[n_train:n_train + n_val], "test": perm[n_train + n_val:]}
    return {split: _with_rotations([i for i, n in enumerate(store.names) if n.split("/")[0] in names],
                                   cfg.rotations and split == "train")
            for split, names in groups.items()}


def stored_split(store: ImageStore, cfg) -> dict[str, list[tuple[int, int]]]:
    """Splits recorded in the file (``class_split``: Mini-ImageNet's Ravi & Larochelle split, or a folder's
    train/val/test sub-folders); without them, a seeded split of classes by ``dataset.split_fractions``."""
    if any(store.class_split):
        groups = {s: [i for i, x in enumerate(store.class_split) if x == s] for s in ("train", "val", "test")}
        unknown = set(store.class_split) - {"train", "val", "test"}
        if unknown:
            raise DataError(f"{store.path} has classes in unknown splits {sorted(unknown)}: prepare it again")
    else:
        fractions = list(cfg.split_fractions)
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
            raise ConfigError(f"dataset.split_fractions={fractions}: give three fractions (train, val, test) "
                              f"summing to 1")
        n = len(store.names)
        perm = torch.randperm(n, generator=rng.generator(cfg.split_seed, "split")).tolist()
        n_train, n_val = round(fractions[0] * n), round(fractions[1] * n)
        groups = {"train": sorted(perm[:n_train]), "val": sorted(perm[n_train:n_train + n_val]),
                  "test": sorted(perm[n_train + n_val:])}
    return {s: _with_rotations(c, cfg.rotations and s == "train") for s, c in groups.items() if c}


OMNIGLOT_VARIANTS = {"omniglot": "full", "omniglot_small": "small"}
# datasets defined by published class lists (reptile_cli.data.listed): name -> ListedDataset
LISTED = {spec.name: spec for spec in (*cifar.DATASETS, *cub.DATASETS, *tiered.DATASETS)}


def build_data_family(dataset_cfg, episode_cfg, root: str | None = None, checked: tuple[str, ...] | None = None):
    """The data task family (sine or images) a config describes; :func:`reptile_cli.families.build_task_family`
    also covers the RL families.

    Args:
        dataset_cfg: the ``dataset`` node.
        episode_cfg: the ``episode`` node (ways, shots, query_shots, train_shots).
        root: data root overriding ``dataset.root`` (``reptile eval dataset.root=...``).
        checked: the splits that must have enough classes and images for the episodes (default: all).

    Returns:
        ``SineTasks`` or ``ClassificationTasks``.

    Raises:
        ConfigError: unknown dataset or split; DataError: missing or broken data.
    """
    name = dataset_cfg.name
    if name == "sine":
        return SineTasks(dataset_cfg, episode_cfg.shots, episode_cfg.train_shots)
    data_root = Path(root or dataset_cfg.root or default_data_root()).expanduser()
    if name in OMNIGLOT_VARIANTS:
        variant = OMNIGLOT_VARIANTS[name]
        hint = (f"run `reptile data download omniglot --variant {variant} --root {data_root}` or "
                f"`reptile data import omniglot PATH... --root {data_root}`")
        if dataset_cfg.resize_filter != "nearest":
            hint += f" with --resize-filter {dataset_cfg.resize_filter}"
        store = ImageStore(omniglot.prepared_path(data_root, variant, dataset_cfg.resize_filter), hint)
        makers = {"reptile": lambda: reptile_split(store, dataset_cfg),
                  "vinyals": lambda: vinyals_split(store, dataset_cfg, omniglot.splits_dir(data_root)),
                  "alphabets": lambda: alphabet_split(store, dataset_cfg)}
    elif name == "miniimagenet":
        hint = (f"run `reptile data import miniimagenet PATH --root {data_root}` (a folder or zip of "
                f"{{train,val,test}}/<wnid>/*.jpg, or an ImageNet train folder with --splits-dir)")
        store = ImageStore(miniimagenet.prepared_path(data_root, dataset_cfg.resize_filter), hint)
        if store.attrs.get("partial"):
            log.warning("%s is a partial copy of Mini-ImageNet (see `reptile data list`): numbers are not "
                        "comparable with the paper's", store.path)
        makers = {"ravi": lambda: stored_split(store, dataset_cfg)}
    elif name in LISTED:
        spec = LISTED[name]
        if not spec.resizes and dataset_cfg.resize_filter != spec.default_filter:
            raise ConfigError(f"dataset.resize_filter={dataset_cfg.resize_filter} does not apply: {spec.title} images "
                              f"are stored at their own size, never resized; remove it (or set it back to "
                              f"{spec.default_filter})")
        store = ImageStore(spec.prepared_path(data_root, dataset_cfg.resize_filter), spec.hint(data_root))
        if store.attrs.get("partial"):
            log.warning("%s is a partial copy of %s (see `reptile data list`): numbers are not comparable with "
                        "published ones", store.path, spec.title)
        makers = {spec.split: lambda: stored_split(store, dataset_cfg)}
    elif name == "folder":
        if not dataset_cfg.root:
            raise ConfigError("dataset=folder needs dataset.root=PATH, the folder whose sub-folders are classes")
        path = folder.prepare_folder(default_data_root(), Path(dataset_cfg.root).expanduser(),
                                     image_size=dataset_cfg.image_size, channels=dataset_cfg.channels,
                                     split_seed=dataset_cfg.split_seed,
                                     fractions=tuple(dataset_cfg.split_fractions),
                                     resize_filter=dataset_cfg.resize_filter)
        store = ImageStore(path, f"check the folder {dataset_cfg.root}")
        makers = {"auto": lambda: stored_split(store, dataset_cfg)}
    else:
        raise ConfigError(f"dataset={name!r} is not available: use sine, omniglot, omniglot_small, miniimagenet, "
                          f"{', '.join(LISTED)} or folder")
    if dataset_cfg.split not in makers:
        raise ConfigError(f"dataset.split={dataset_cfg.split!r}: {name} supports {', '.join(makers)}")
    splits = makers[dataset_cfg.split]()
    check_disjoint(splits, store)
    h, w, c = store.image_shape
    if (h, w, c) != (dataset_cfg.image_size, dataset_cfg.image_size, dataset_cfg.channels):
        raise ConfigError(f"{store.path} holds {c}x{h}x{w} images but the config says dataset.channels="
                          f"{dataset_cfg.channels} dataset.image_size={dataset_cfg.image_size}: make them agree")
    pools = {s: store.pool(c) for s, c in splits.items()}
    tasks = ClassificationTasks(pools, episode_cfg.ways, episode_cfg.shots, episode_cfg.query_shots,
                                episode_cfg.train_shots, str(store.attrs.get("content_sha256", "")),
                                image_shape=(c, h, w), checked=checked)
    tasks.dataset_name = name
    # whether dataset.split_seed draws the split (a fixed list or split folders do not depend on it)
    tasks.seeded_split = dataset_cfg.split in ("reptile", "alphabets") or (name == "folder" and
                                                                        not any(store.class_split))
    return tasks
