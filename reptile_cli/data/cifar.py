"""CIFAR-FS and FC100: two few-shot splits of CIFAR-100, prepared from the official python archive.

CIFAR-100 (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images") has 100 fine classes in
20 superclasses of 5, 600 32x32 RGB images each (500 in the ``train`` pickle, 100 in ``test``). Both few-shot
datasets use all 600 images of every class and differ only in how the classes are split:

- CIFAR-FS (Bertinetto et al., ICLR 2019, "Meta-learning with differentiable closed-form solvers"): 64 / 16 /
  20 fine classes drawn at random, split ``bertinetto``; class list ``class_lists/cifarfs``.
- FC100 (Oreshkin et al., NeurIPS 2018, "TADAM"): split by superclass, 12 / 4 / 4 superclasses = 60 / 20 / 20
  fine classes, so no superclass is shared between splits; split ``oreshkin``; class list
  ``class_lists/fc100``.

The source is ``cifar-100-python.tar.gz`` from https://www.cs.toronto.edu/~kriz/ (md5 :data:`ARCHIVE_MD5`),
whose ``cifar-100-python/`` folder holds three pickles written by Python 2: ``meta`` (``fine_label_names``
[100], ``coarse_label_names`` [20]) and ``train`` / ``test`` (``data`` uint8 ``[N, 3072]``, each row one image
as 3x32x32 channel-major R, G, B planes; ``fine_labels`` [N], ``coarse_labels`` [N], ``filenames`` [N]).
They are read with an unpickler that builds nothing but dicts, lists, strings, numbers and numpy arrays.
:func:`download` fetches the archive once into ``<root>/cifar100/`` (shared by both datasets);
:func:`import_copy` takes the archive or its extracted ``cifar-100-python/`` folder.

The prepared file ``<root>/cifarfs/cifarfs.h5`` (``<root>/fc100/fc100.h5``) is in the shared format
(:mod:`reptile_cli.data.h5images`): ``images`` uint8 ``[N, 32, 32, 3]`` (HWC; N = 60,000 for the complete
set), kept at 32x32 as they are (no resizing, so the resize filter is accepted but plays no part and the
path does not depend on it; attr ``resize_filter`` is "none"); the 100 classes sorted by name, images of a
class sorted by file name; ``class_groups`` the CIFAR-100 superclass, ``class_split`` the split from the class
list. Not compressed (natural images barely compress and the whole file is read into memory). attrs:
``dataset``, ``variant`` ("full"/"partial"), ``partial``, ``split``, ``pickles`` (those read, "train+test"
when complete), ``content_sha256`` (sha256 of the pickles' bytes, the class lists and the split: an identical
source keeps the existing file).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import time
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from reptile_cli.data import h5images
from reptile_cli.data.download import CHUNK_BYTES, fetch, resolve_url
from reptile_cli.data.h5images import SPLIT_NAMES, first_few, say
from reptile_cli.data.listed import ListedDataset, check_disjoint_lists, class_lists
from reptile_cli.errors import DataError
from reptile_cli.locks import lock_preparation

OFFICIAL_BASE_URL = "https://www.cs.toronto.edu/~kriz/"
ARCHIVE_NAME = "cifar-100-python.tar.gz"
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
ARCHIVE_BYTES = 169_001_437
ARCHIVE_DIR = "cifar100"  # <root>/cifar100/: the downloaded archive, shared by CIFAR-FS and FC100
TOP_FOLDER = "cifar-100-python"
IMAGE_SIZE = 32
CHANNELS = 3
# Accepted for the CLI's sake and ignored: the images are stored at their own 32x32.
DEFAULT_FILTER = "box"
# Images of each class in each pickle of the official release (600 in all).
IMAGES_PER_CLASS = {"train": 500, "test": 100}

# The CIFAR-100 label hierarchy: superclass -> its five fine classes (names as in the ``meta`` pickle).
SUPERCLASSES = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
SUPERCLASS_OF = {fine: coarse for coarse, fines in SUPERCLASSES.items() for fine in fines}
FINE_NAMES = tuple(sorted(SUPERCLASS_OF))

_PICKLES = ("meta", "train", "test")


@dataclass(frozen=True)
class _Variant:
    """One of the two datasets: its names, split and expected split sizes."""

    name: str
    title: str
    split: str
    counts: dict[str, int]
    by_superclass: bool  # every superclass lies in one split


_VARIANTS = {
    "cifarfs": _Variant("cifarfs", "CIFAR-FS", "bertinetto", {"train": 64, "val": 16, "test": 20}, False),
    "fc100": _Variant("fc100", "FC100", "oreshkin", {"train": 60, "val": 20, "test": 20}, True),
}


# ----------------------------------------------------------------------------------------------- paths
def archive_path(root: Path) -> Path:
    """``<root>/cifar100/cifar-100-python.tar.gz``: where :func:`download` keeps the official archive."""
    return Path(root) / ARCHIVE_DIR / ARCHIVE_NAME


def prepared_path(root: Path, resize_filter: str | None = None, *, dataset: str) -> Path:
    """The prepared HDF5 file of ``dataset`` ("cifarfs" or "fc100"): ``<root>/<dataset>/<dataset>.h5``.

    ``resize_filter`` is accepted for the common interface and ignored (the images are not resized). A
    partial copy uses the same name; its ``partial`` attribute says so.
    """
    return Path(root) / dataset / f"{dataset}.h5"


# ----------------------------------------------------------------------------------------------- pickles
class _Refused(pickle.UnpicklingError):
    """A pickle names a class or function that the official pickles never use."""


class _PlainUnpickler(pickle.Unpickler):
    """Builds only what the official pickles hold: dicts, lists, strings, numbers and plain numpy arrays.

    Any other class or function a pickle names is refused, so a doctored file cannot run code.
    """

    _reconstruct = np.ndarray(0).__reduce__()[0]  # numpy's array rebuilder, whatever its module path
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # how Python 2 / numpy 1 named it
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[module, name]
        except KeyError:
            raise _Refused(f"it refers to {module}.{name}, which the CIFAR-100 pickles never do") from None


def _plain(value):
    """Text of a pickled Python 2 string (``bytes`` when read with ``encoding="bytes"``)."""
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _unpickle(data: bytes, where: str) -> dict[str, object]:
    """The top-level dict of one pickle, keys as text.

    Raises:
        DataError: the bytes are not a pickle, are truncated, refer to a class other than numpy's array, or
            do not hold a dict.
    """
    try:
        obj = _PlainUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as err:
        raise DataError(f"{where} is not a CIFAR-100 pickle ({err}): fetch the official archive again") from None
    except Exception as err:  # EOFError, ValueError ...: whatever a damaged pickle makes the unpickler raise
        raise DataError(f"{where} cannot be read as a pickle ({type(err).__name__}: {err}); it is truncated or "
                        f"corrupt: fetch the official archive again") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where} holds a {type(obj).__name__}, not the dict of a CIFAR-100 pickle")
    return {_plain(k): v for k, v in obj.items()}


def _names(meta: dict, key: str, expected: tuple[str, ...], where: str) -> list[str]:
    """``meta[key]`` as a list of names, checked to be exactly ``expected`` (in any order).

    Raises:
        DataError: the key is missing, or the names are not the CIFAR-100 ones.
    """
    names = meta.get(key)
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{where} has no {key} list: it is not the CIFAR-100 meta file")
    names = [_plain(n) for n in names]
    if sorted(names) != sorted(expected):
        foreign = sorted(set(names) - set(expected)) or sorted(set(expected) - set(names))
        raise DataError(f"{where} lists {len(names)} {key} that are not those of CIFAR-100 (e.g. "
                        f"{first_few(foreign or names)}): is it CIFAR-10 or another dataset? fetch "
                        f"{ARCHIVE_NAME}")
    return names


@dataclass
class _Batch:
    """One of the ``train`` / ``test`` pickles, checked.

    Attributes:
        rows: uint8 ``[N, 3072]``, each row an image as 3x32x32 channel-major planes.
        fine: int64 ``[N]``, index into :data:`FINE_NAMES`.
        filenames: ``[N]`` file names.
    """

    rows: np.ndarray
    fine: np.ndarray
    filenames: list[str]


def _batch(obj: dict, fine_names: list[str], coarse_names: list[str], where: str) -> _Batch:
    """Check one ``train``/``test`` pickle against the meta names and the CIFAR-100 hierarchy.

    Raises:
        DataError: a key missing, rows that are not uint8 ``[N, 3072]``, label lists of another length or out
            of range, or an image whose superclass is not its class's CIFAR-100 superclass.
    """
    rows = obj.get("data")
    if not isinstance(rows, np.ndarray) or rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != 3072:
        what = (f"{rows.dtype} {list(rows.shape)}" if isinstance(rows, np.ndarray) else type(rows).__name__)
        raise DataError(f"{where} holds data of {what}, not uint8 rows of 3072 values (3x32x32 images): it is "
                        f"not a CIFAR-100 pickle")
    n = len(rows)
    columns = {}
    for key in ("fine_labels", "coarse_labels", "filenames"):
        column = obj.get(key)
        if not isinstance(column, list) or len(column) != n:
            size = len(column) if isinstance(column, list) else "no"
            raise DataError(f"{where} has {size} {key} for {n} images: it is not a CIFAR-100 pickle")
        if key == "filenames" and not all(isinstance(f, (bytes, str)) for f in column):
            raise DataError(f"{where} has filenames that are not strings: it is not a CIFAR-100 pickle")
        columns[key] = column
    fine, coarse = (np.asarray(columns[k]) for k in ("fine_labels", "coarse_labels"))
    for key, labels, limit in (("fine_labels", fine, 100), ("coarse_labels", coarse, 20)):
        if n and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= limit):
            raise DataError(f"{where} has {key} outside 0..{limit - 1}: it is not a CIFAR-100 pickle")
    order = np.array([FINE_NAMES.index(name) for name in fine_names])  # meta index -> FINE_NAMES index
    fine = order[fine] if n else np.zeros(0, dtype=np.int64)
    superclass = np.array([coarse_names.index(SUPERCLASS_OF[name]) for name in FINE_NAMES])
    wrong = np.flatnonzero(superclass[fine] != coarse) if n else []
    if len(wrong):
        i = int(wrong[0])
        raise DataError(f"{where}: {len(wrong)} image(s) carry a superclass other than their class's in CIFAR-100 "
                        f"(e.g. image {i}, {FINE_NAMES[fine[i]]} as {coarse_names[coarse[i]]}): the labels are "
                        f"damaged; fetch the official archive again")
    return _Batch(rows=rows, fine=fine, filenames=[_plain(f) for f in columns["filenames"]])


# ----------------------------------------------------------------------------------------------- source
def _read_archive(archive: Path) -> dict[str, bytes]:
    """The ``meta``/``train``/``test`` pickles found in the archive, read in one pass, then the rest of the
    archive read to its end so that its compression checksum is verified (a truncated or damaged archive fails
    here even where the pickles come before the damage).

    Raises:
        DataError: not a readable tar archive, truncated or corrupt, a pickle entry that is not a regular file,
            or no ``cifar-100-python/`` pickles at all (the message names what the archive holds).
    """
    found: dict[str, bytes] = {}
    others: list[str] = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                path = PurePosixPath(member.name)
                if len(path.parts) == 2 and path.parts[0] == TOP_FOLDER and path.name in _PICKLES:
                    if not member.isreg():
                        raise DataError(f"{archive}: entry {member.name} is not a regular file; the archive is "
                                        f"not the official one: fetch {ARCHIVE_NAME} again")
                    found[path.name] = tar.extractfile(member).read()
                elif member.isreg():
                    others.append(member.name)
            while tar.fileobj.read(CHUNK_BYTES):  # to the end: gzip checks its CRC and length there
                pass
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        size = archive.stat().st_size
        short = f" ({size:,} of {ARCHIVE_BYTES:,} bytes)" if size < ARCHIVE_BYTES else ""
        raise DataError(f"{archive} is not a readable tar.gz archive{short} ({err}); it is truncated or corrupt: "
                        f"fetch {ARCHIVE_NAME} again") from None
    if not found:
        hint = " (a CIFAR-10 archive?)" if any(o.startswith("cifar-10-batches-py/") for o in others) else ""
        raise DataError(f"{archive} holds no {TOP_FOLDER}/meta, train or test{hint}, only "
                        f"{first_few(others) or 'no files'}: it is not the CIFAR-100 python archive; fetch "
                        f"{OFFICIAL_BASE_URL}{ARCHIVE_NAME}")
    return found


def _read_folder(folder: Path) -> dict[str, bytes]:
    """The pickles of an extracted ``cifar-100-python`` folder (given itself, or the folder holding it).

    Raises:
        DataError: neither the folder nor a ``cifar-100-python/`` inside it holds any of the pickles.
    """
    for candidate in (folder, folder / TOP_FOLDER):
        found = {n: (candidate / n).read_bytes() for n in _PICKLES if (candidate / n).is_file()}
        if found:
            return found
    cifar10 = "cifar-10-batches-py"
    hint = " (a CIFAR-10 folder?)" if (folder / cifar10).is_dir() or folder.name == cifar10 else ""
    raise DataError(f"{folder} holds neither meta, train, test nor a {TOP_FOLDER}/ folder{hint}: give "
                    f"{ARCHIVE_NAME} or the {TOP_FOLDER} folder extracted from it")


@dataclass
class _Copy:
    """A checked CIFAR-100 copy.

    Attributes:
        batches: ``"train"``/``"test"`` -> :class:`_Batch`, those present.
        sha256: of the pickles present (name, size, bytes), in :data:`_PICKLES` order.
        where: the source, for messages.
    """

    batches: dict[str, _Batch]
    sha256: str
    where: str


def read_copy(source: Path) -> _Copy:
    """Read and check a CIFAR-100 copy: the official archive or its extracted folder.

    Raises:
        DataError: missing path; not a folder or tar archive; truncated or corrupt; a pickle that is not the
            official format (foreign classes in it, wrong row shape, wrong names, damaged labels); no ``meta``;
            neither ``train`` nor ``test``.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise DataError(f"{source} does not exist; give {ARCHIVE_NAME} or the {TOP_FOLDER} folder extracted "
                        f"from it")
    files = _read_folder(source) if source.is_dir() else _read_archive(source)
    if "meta" not in files:
        raise DataError(f"no meta pickle in {source} (it holds the class names): copy {TOP_FOLDER}/meta from "
                        f"the archive, or give the whole {ARCHIVE_NAME}")
    digest = hashlib.sha256()
    for name in _PICKLES:
        if name in files:
            digest.update(f"{name}\0{len(files[name])}\0".encode())
            digest.update(files[name])
    meta = _unpickle(files.pop("meta"), f"{source}: meta")
    fine_names = _names(meta, "fine_label_names", FINE_NAMES, f"{source}: meta")
    coarse_names = _names(meta, "coarse_label_names", tuple(SUPERCLASSES), f"{source}: meta")
    batches = {}
    for name in IMAGES_PER_CLASS:
        if name in files:
            where = f"{source}: {name}"
            batches[name] = _batch(_unpickle(files.pop(name), where), fine_names, coarse_names, where)
    if not batches:
        raise DataError(f"{source} holds the meta pickle but neither train nor test: give the whole "
                        f"{ARCHIVE_NAME}")
    return _Copy(batches=batches, sha256=digest.hexdigest(), where=str(source))


# ----------------------------------------------------------------------------------------------- lists
def split_of_classes(lists: dict[str, list[str]], dataset: str) -> dict[str, str]:
    """Check class lists for ``dataset`` and map each CIFAR-100 fine class to its split.

    Args:
        lists: ``{"train": [...], "val": [...], "test": [...]}`` fine class names (from :func:`class_lists`).
        dataset: "cifarfs" or "fc100".

    Returns:
        fine class name -> "train"/"val"/"test", for all 100 classes.

    Raises:
        DataError: a class in two splits or twice; a name that is not a CIFAR-100 class; a class left out;
            split sizes other than the published ones; for FC100, a superclass spread over two splits.
    """
    variant = _VARIANTS[dataset]
    where = f"the {variant.title} class lists"
    check_disjoint_lists(lists, where)
    split_of = {name: split for split in SPLIT_NAMES for name in lists.get(split, [])}
    unknown = sorted(set(split_of) - set(FINE_NAMES))
    missing = sorted(set(FINE_NAMES) - set(split_of))
    if unknown or missing:
        what = (f"name {first_few(unknown)}, not CIFAR-100 class(es)" if unknown
                else f"leave out {first_few(missing)}")
        raise DataError(f"{where} {what}: reinstall reptile-cli")
    sizes = {split: len(lists.get(split, [])) for split in SPLIT_NAMES}
    if sizes != variant.counts:
        raise DataError(f"{where} have {sizes} classes, not the published {variant.counts}: reinstall reptile-cli")
    if variant.by_superclass:
        for coarse, fines in SUPERCLASSES.items():
            splits = sorted({split_of[f] for f in fines})
            if len(splits) > 1:
                raise DataError(f"{where} put superclass {coarse} in {' and '.join(splits)}: FC100 keeps each "
                                f"superclass in one split; reinstall reptile-cli")
    return split_of


# ----------------------------------------------------------------------------------------------- prepare
def _complete(path: Path, dataset: str) -> bool:
    """True when ``path`` is a valid, complete prepared file of ``dataset``."""
    attrs = h5images.read_valid_attrs(path, dataset=dataset, image_size=IMAGE_SIZE, channels=CHANNELS)
    return attrs is not None and not bool(attrs.get("partial", True))


def _prepare(root: Path, source: Path, dataset: str, *, allow_partial: bool, progress: bool) -> Path:
    """Read ``source``, check it against the class lists, and write (or keep) the prepared file."""
    started = time.monotonic()
    variant = _VARIANTS[dataset]
    split_of = split_of_classes(class_lists(dataset), dataset)
    say(progress, f"Reading and checking the CIFAR-100 pickles in {source}")
    copy = read_copy(source)

    # per class, its images as (file name, pickle, row); sorted by file name when written
    members: list[list[tuple[str, str, int]]] = [[] for _ in FINE_NAMES]
    for name, batch in copy.batches.items():
        for row, (c, file_name) in enumerate(zip(batch.fine.tolist(), batch.filenames)):
            members[c].append((file_name, name, row))
    counts = [len(m) for m in members]
    full = sum(IMAGES_PER_CLASS.values())
    if max(counts) > full:
        c = counts.index(max(counts))
        raise DataError(f"{copy.where} holds {counts[c]} images of {FINE_NAMES[c]}, more than the {full} of "
                        f"CIFAR-100: it is not the official data; fetch {ARCHIVE_NAME} again")
    if min(counts) == 0:
        absent = [name for name, n in zip(FINE_NAMES, counts) if not n]
        raise DataError(f"{copy.where} holds no image of {first_few(absent)}: it is not the official data; fetch "
                        f"{ARCHIVE_NAME} again")
    pickles = "+".join(copy.batches)
    is_partial = min(counts) < full
    fewest = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)} to {max(counts)}"
    per_class = f"{fewest} of {full} images per class"
    if is_partial and not allow_partial:
        absent = [n for n in IMAGES_PER_CLASS if n not in copy.batches]
        what = f"no {' or '.join(absent)} pickle, so " if absent else ""
        raise DataError(f"the CIFAR-100 copy in {copy.where} is incomplete: {what}{per_class}; give the whole "
                        f"{ARCHIVE_NAME}, or pass --allow-partial to prepare it as a partial set")

    out = prepared_path(root, dataset=dataset)
    lists_text = "\n".join(f"{split_of[n]}\0{n}" for n in FINE_NAMES)
    content = hashlib.sha256(f"{copy.sha256}\0{variant.split}\0{lists_text}".encode()).hexdigest()
    existing = h5images.read_valid_attrs(out, dataset=dataset, image_size=IMAGE_SIZE, channels=CHANNELS)
    reused = (existing is not None and str(existing.get("content_sha256")) == content
              and bool(existing.get("partial", True)) == is_partial)
    if existing is not None and not reused and is_partial and not bool(existing.get("partial", True)):
        raise DataError(f"{out} holds a complete {variant.title}; preparing this partial copy would replace it: use "
                        f"another --root, or delete that file first")
    if not reused:
        for m in members:
            m.sort()

        def images():
            for m in members:
                for _, name, row in m:
                    yield copy.batches[name].rows[row].reshape(CHANNELS, IMAGE_SIZE, IMAGE_SIZE).transpose(1, 2, 0)

        h5images.write_images_h5(
            out,
            images(),
            class_names=list(FINE_NAMES),
            class_counts=counts,
            class_groups=[SUPERCLASS_OF[n] for n in FINE_NAMES],
            class_split=[split_of[n] for n in FINE_NAMES],
            attrs={
                "dataset": dataset,
                "variant": "partial" if is_partial else "full",
                "partial": bool(is_partial),
                "split": variant.split,
                "pickles": pickles,
                "image_size": IMAGE_SIZE,
                "channels": CHANNELS,
                "resize_filter": "none",
                "content_sha256": content,
            },
            compression=None,
            compression_opts=None,
            description=f"Writing {variant.title}",
            progress=progress,
        )
    per_split = {s: [c for c, n in enumerate(FINE_NAMES) if split_of[n] == s] for s in SPLIT_NAMES}
    sizes = "; ".join(f"{s} {len(cs)} classes, {sum(counts[c] for c in cs):,} images" for s, cs in per_split.items())
    kind = "partial" if is_partial else "complete"
    say(progress, f"{variant.title} ({kind}, {variant.split} split, {pickles} pickles) from {copy.where}: {sizes}")
    if is_partial:
        say(progress, f"partial copy: {per_class}")
    verb = "already prepared, kept" if reused else "prepared"
    say(progress, f"{verb}: {out} ({out.stat().st_size / 1e6:,.1f} MB, {time.monotonic() - started:.1f} s, content "
                  f"sha256 {content[:16]}...)")
    return out


# ----------------------------------------------------------------------------------------------- public
def import_copy(
    root: Path,
    paths: list[Path],
    *,
    dataset: str,
    resize_filter: str = DEFAULT_FILTER,
    allow_partial: bool = False,
    progress: bool = True,
) -> Path:
    """Prepare CIFAR-FS or FC100 from a CIFAR-100 copy on disk, checked pickle by pickle.

    Args:
        root: the data root; the file goes to :func:`prepared_path`.
        paths: exactly one path: ``cifar-100-python.tar.gz`` (any compression ``tarfile`` reads) or the
            ``cifar-100-python/`` folder extracted from it (or the folder holding that one).
        dataset: "cifarfs" or "fc100".
        resize_filter: checked to be a known filter, otherwise ignored (the images stay 32x32).
        allow_partial: accept a copy with fewer than 600 images of a class (e.g. only the ``test`` pickle);
            recorded in the file's ``partial`` attribute. It never replaces a complete prepared file.
        progress: show progress bars and status lines on stderr.

    Returns:
        The prepared file: ``images`` uint8 ``[N, 32, 32, 3]`` (N = 60,000 when complete), ``class_split`` of
        the 100 classes (64/16/20 for CIFAR-FS, 60/20/20 for FC100). An identical prepared file (same content
        hash) is kept as it is.

    Raises:
        DataError: not one path; missing path; not a folder or tar archive; a truncated or corrupt archive or
            pickle; an archive or folder that is not CIFAR-100 (CIFAR-10, any other tar); pickles in another
            format (classes other than numpy's array, rows that are not 3072 values, names that are not the 100
            CIFAR-100 classes, damaged superclass labels); a partial copy without ``allow_partial``; a partial
            copy that would replace a complete file; broken shipped class lists. Nothing is left half-written.
    """
    h5images.check_resize_filter(resize_filter)
    if len(paths) != 1:
        raise DataError(f"{_VARIANTS[dataset].title} is imported from one path ({len(paths)} given): give "
                        f"{ARCHIVE_NAME} or the {TOP_FOLDER} folder extracted from it")
    with lock_preparation(Path(root) / dataset, progress):  # one preparation at a time; another waits
        return _prepare(Path(root), Path(paths[0]), dataset, allow_partial=allow_partial, progress=progress)


def fetch_archive(root: Path, mirror=None, progress: bool = True) -> Path:
    """Fetch ``cifar-100-python.tar.gz`` (md5-verified) into ``<root>/cifar100/`` unless a valid one is there.

    Args:
        root: the data root.
        mirror: a folder, ``file://`` or ``http(s)://`` URL holding ``cifar-100-python.tar.gz``; default
            ``$REPTILE_MIRROR``, else :data:`OFFICIAL_BASE_URL`.
        progress: show a progress bar.

    Returns:
        :func:`archive_path`.

    Raises:
        DataError: not found, a network failure, or a checksum mismatch (nothing is kept then).
    """
    with lock_preparation(Path(root) / ARCHIVE_DIR, progress, name="download"):
        url = resolve_url(ARCHIVE_NAME, OFFICIAL_BASE_URL, mirror)
        try:
            return fetch(url, archive_path(root), md5=ARCHIVE_MD5, progress=progress)
        except DataError as err:
            raise DataError(f"{err}; if you have {ARCHIVE_NAME} on disk, run: reptile data import cifarfs PATH "
                            f"(or fc100)") from None


def download(
    root: Path,
    mirror=None,
    *,
    dataset: str,
    resize_filter: str = DEFAULT_FILTER,
    progress: bool = True,
) -> Path:
    """Download the official CIFAR-100 archive (md5-verified) and prepare CIFAR-FS or FC100; idempotent.

    When the prepared file is already there, complete and valid, nothing is fetched or written. The archive
    is kept in ``<root>/cifar100/``, so preparing the other dataset fetches nothing.

    Args:
        root: the data root.
        mirror: see :func:`fetch_archive`.
        dataset: "cifarfs" or "fc100".
        resize_filter: checked, otherwise ignored (see :func:`import_copy`).
        progress: show progress bars and status lines on stderr.

    Returns:
        The prepared file (:func:`prepared_path`).

    Raises:
        DataError: as :func:`fetch_archive` and :func:`import_copy`.
    """
    h5images.check_resize_filter(resize_filter)
    root = Path(root)
    with lock_preparation(root / dataset, progress):  # a second download waits, then finds the file ready
        out = prepared_path(root, dataset=dataset)
        if _complete(out, dataset):
            say(progress, f"{_VARIANTS[dataset].title} is already prepared at {out}; nothing to do")
            return out
        archive = fetch_archive(root, mirror, progress)
        return _prepare(root, archive, dataset, allow_partial=False, progress=progress)


def _spec(variant: _Variant) -> ListedDataset:
    return ListedDataset(
        name=variant.name,
        title=variant.title,
        split=variant.split,
        prepared_path=partial(prepared_path, dataset=variant.name),
        import_copy=partial(import_copy, dataset=variant.name),
        download=partial(download, dataset=variant.name),
        default_filter=DEFAULT_FILTER,
        source_help=f"the {ARCHIVE_NAME} archive or its extracted {TOP_FOLDER} folder",
        resizes=False,
    )


CIFARFS = _spec(_VARIANTS["cifarfs"])
FC100 = _spec(_VARIANTS["fc100"])
DATASETS = (CIFARFS, FC100)
