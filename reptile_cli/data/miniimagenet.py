"""Mini-ImageNet: import a copy on disk (or build it from ImageNet), check it against the split, prepare HDF5.

Mini-ImageNet (Vinyals et al. 2016) with the Ravi & Larochelle (2017) split: 100 ImageNet (ILSVRC-2012)
classes, 64 train / 16 val / 20 test, 600 images each, 84x84 RGB (REFERENCE.md, "Data"). The split is three
CSV files, ``filename,label`` (e.g. ``n0153282900000005.jpg,n01532829``), fetched sha256-verified by
:func:`download_splits` and kept in ``<root>/miniimagenet/splits/``.

ImageNet's terms do not allow redistributing the images, so there is no download: :func:`import_copy` takes

- a copy in the common layout ``{train,val,test}/<wnid>/<csv name>.jpg`` (a folder or a zip, possibly under one
  top folder, such as the mirror's ``miniimagenet_84px_100/``; a flat ``images/<csv name>.jpg`` folder works
  too, the split then comes from the CSVs), or
- an ImageNet training folder (``<wnid>/<wnid>_<n>.JPEG``, or all files in one folder), resized here.

The prepared file ``<root>/miniimagenet/miniimagenet.h5`` (``miniimagenet_<filter>.h5`` for another resize
filter) is in the shared format (:mod:`reptile_cli.data.h5images`): ``images`` uint8 ``[N, 84, 84, 3]``,
classes (wnids) sorted by name, images of a class sorted by file name; ``class_groups`` and ``class_split``
hold each class's split; ``images`` is chunked one image per chunk and not compressed, so reading a task's
images at random is fast. attrs: ``dataset`` "miniimagenet", ``variant`` "full" or "partial", ``partial``
(bool), ``split_csvs`` ("ravi-larochelle", or "custom" for CSVs given with ``splits_dir`` that are not the
official ones), ``source_layout`` ("folders" or "imagenet"), ``resize_filter``, ``content_sha256`` (sha256
of the split files and the sorted (split, wnid, file name, source bytes) tuples: an identical source keeps
the existing file).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from reptile_cli.data import h5images
from reptile_cli.data.download import check_zip_entry, fetch, file_sha256, is_url, open_zip, resolve_url, url_to_path
from reptile_cli.data.h5images import SPLIT_NAMES, duplicate_lines, find_duplicates, first_few, prepared_line, say
from reptile_cli.errors import DataError
from reptile_cli.locks import lock_preparation

DATASET = "miniimagenet"
IMAGE_SIZE = 84
CHANNELS = 3
DEFAULT_FILTER = "lanczos"

# The Ravi & Larochelle split files as published with yaoyao-liu/mini-imagenet-tools (same content as
# twitter/meta-learning-lstm's data/miniImagenet/*.csv).
SPLITS_BASE_URL = "https://raw.githubusercontent.com/yaoyao-liu/mini-imagenet-tools/main/csv_files/"
SPLITS_MIRROR_ENV = "REPTILE_SPLITS_MIRROR"
SPLITS_MIRROR_SUBDIR = "miniimagenet_ravi"
RAVI_SPLIT_SHA256 = {
    "train.csv": "498519cd8e49ce97ed26a4a3638966698ae41ab35e9c68538319fc9b46ba7d2f",
    "val.csv": "5658a59921ca027ee76af92949869c5d6f41d77592ff3b18db325a9d10c893b9",
    "test.csv": "2b7cfa78342995761a572a8158e539bc4e0a80f9bbd7d00c1e17a460fbbb93fa",
}
EXPECTED_CLASSES = {"train": 64, "val": 16, "test": 20}
IMAGES_PER_CLASS = 600

WNID_RE = re.compile(r"n\d{8}")
_CSV_NAME_RE = re.compile(r"(n\d{8})(\d{8})")  # stem of a split file name: wnid + 8-digit index
IMAGENET_RE = re.compile(r"(n\d{8})_(\d+)")  # stem of an ImageNet training file: <wnid>_<n>
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
_EXAMPLES = 3


# ----------------------------------------------------------------------------------------------- paths
def dataset_dir(root: Path) -> Path:
    """``<root>/miniimagenet``: prepared file and split files of Mini-ImageNet."""
    return Path(root) / DATASET


def splits_dir(root: Path) -> Path:
    """``<root>/miniimagenet/splits``: the Ravi & Larochelle split files ``{train,val,test}.csv``."""
    return dataset_dir(root) / "splits"


def prepared_path(root: Path, resize_filter: str = DEFAULT_FILTER) -> Path:
    """The prepared HDF5 file: ``<root>/miniimagenet/miniimagenet.h5`` (``miniimagenet_<filter>.h5`` for a
    filter other than Lanczos). A partial copy uses the same name; its ``partial`` attribute says so."""
    stem = DATASET if resize_filter == DEFAULT_FILTER else f"{DATASET}_{resize_filter}"
    return dataset_dir(root) / f"{stem}.h5"


# ----------------------------------------------------------------------------------------------- splits
@dataclass
class Split:
    """The class split as read from the three CSV files.

    Attributes:
        split_of: wnid -> "train" / "val" / "test".
        names: wnid -> its file names (``<wnid><8 digits>.jpg``), sorted.
        wnid_of: file name -> wnid.
        official: True when the three files have the published sha256s.
        where: the folder they came from (for messages).
    """

    split_of: dict[str, str]
    names: dict[str, list[str]]
    wnid_of: dict[str, str]
    official: bool
    where: str
    files: dict[str, bytes] = field(default_factory=dict, repr=False)


def parse_split(files: dict[str, bytes], where: str) -> Split:
    """Read ``{"train.csv": bytes, "val.csv": ..., "test.csv": ...}`` into a :class:`Split`.

    Raises:
        DataError: a file is missing or malformed (header not ``filename,label``, a name that is not the label
            followed by 8 digits and ``.jpg``, a name listed twice, a class in two splits).
    """
    split_of: dict[str, str] = {}
    names: dict[str, list[str]] = {}
    wnid_of: dict[str, str] = {}
    for split in SPLIT_NAMES:
        file_name = f"{split}.csv"
        if file_name not in files:
            raise DataError(f"no {file_name} in {where}; the split needs train.csv, val.csv and test.csv")
        try:
            rows = list(csv.reader(io.StringIO(files[file_name].decode("utf-8-sig"))))
        except (UnicodeDecodeError, csv.Error) as err:
            raise DataError(f"{where}/{file_name} is not a readable CSV file ({err})") from None
        if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
            raise DataError(f"{where}/{file_name} does not start with the header filename,label; is it a split file?")
        for line, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            name, label = (row + ["", ""])[:2]
            name, label = name.strip(), label.strip()
            match = _CSV_NAME_RE.fullmatch(name.removesuffix(".jpg"))
            if len(row) != 2 or not name.endswith(".jpg") or not match or match.group(1) != label:
                raise DataError(
                    f"{where}/{file_name} line {line}: {','.join(row)!r} is not <wnid><8 digits>.jpg,<wnid>"
                )
            if name in wnid_of:
                raise DataError(f"{where}/{file_name} line {line}: {name} is listed twice")
            if split_of.setdefault(label, split) != split:
                raise DataError(f"{where}: class {label} is in both {split_of[label]}.csv and {file_name}")
            wnid_of[name] = label
            names.setdefault(label, []).append(name)
    official = all(hashlib.sha256(files[n]).hexdigest() == sha for n, sha in RAVI_SPLIT_SHA256.items())
    return Split(
        split_of=dict(sorted(split_of.items())),
        names={w: sorted(n) for w, n in sorted(names.items())},
        wnid_of=wnid_of,
        official=official,
        where=where,
        files={n: files[n] for n in RAVI_SPLIT_SHA256},
    )


def download_splits(root: Path, mirror: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Fetch the Ravi & Larochelle split files ``{train,val,test}.csv`` (sha256-verified) if not present.

    Args:
        root: the data root.
        mirror: a folder, ``file://`` or ``http(s)://`` URL holding ``train.csv`` etc.; default
            ``$REPTILE_SPLITS_MIRROR``, else :data:`SPLITS_BASE_URL`. A local mirror folder may also hold them
            in a ``miniimagenet_ravi/`` sub-folder (so one folder can mirror the Omniglot and the Mini-ImageNet
            split files).
        progress: show progress bars.

    Returns:
        :func:`splits_dir`, holding the three files.

    Raises:
        DataError: a file cannot be fetched or fails its sha256.
    """
    target = splits_dir(root)
    if mirror is None or str(mirror) == "":
        mirror = os.environ.get(SPLITS_MIRROR_ENV) or None
    for name, sha256 in RAVI_SPLIT_SHA256.items():
        dest = target / name
        if dest.is_file() and file_sha256(dest) == sha256:
            continue
        base = mirror
        if mirror is not None and (not is_url(mirror) or str(mirror).lower().startswith("file://")):
            folder = url_to_path(str(mirror)) if is_url(mirror) else Path(mirror).expanduser()
            if not (folder / name).is_file() and (folder / SPLITS_MIRROR_SUBDIR / name).is_file():
                base = folder / SPLITS_MIRROR_SUBDIR
        url = resolve_url(name, SPLITS_BASE_URL, base, env_var=SPLITS_MIRROR_ENV)
        fetch(url, dest, sha256=sha256, progress=progress)
    return target


def _read_split_folder(folder: Path) -> dict[str, bytes]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"split folder {folder} does not exist; give the folder holding train.csv, val.csv, test.csv")
    return {n: (folder / n).read_bytes() for n in RAVI_SPLIT_SHA256 if (folder / n).is_file()}


def _install_splits(root: Path, split: Split) -> list[str]:
    """Copy official split files into :func:`splits_dir` (custom ones are never installed)."""
    if not split.official:
        return []
    target = splits_dir(root)
    for name, data in split.files.items():
        dest = target / name
        if not (dest.is_file() and dest.read_bytes() == data):
            target.mkdir(parents=True, exist_ok=True)
            part = dest.with_name(name + ".part")
            part.write_bytes(data)
            os.replace(part, dest)
    return sorted(split.files)


# ----------------------------------------------------------------------------------------------- report
@dataclass
class SplitReport:
    """How complete one split of the copy is, against the split files.

    Attributes:
        classes_expected, classes_found: classes listed, and classes with at least one image.
        images_expected, images_found: images listed, and found.
        missing_classes: ``split/wnid`` of the classes without any image.
        incomplete_classes: classes found with fewer images than listed.
        missing_examples: up to 3 missing images, ``split/wnid/file name``.
    """

    classes_expected: int
    classes_found: int
    images_expected: int
    images_found: int
    missing_classes: list[str]
    incomplete_classes: int
    missing_examples: list[str]

    @property
    def images_missing(self) -> int:
        return self.images_expected - self.images_found


@dataclass
class ImportReport:
    """What :func:`import_copy` found and wrote.

    Attributes:
        path: the prepared HDF5 file.
        source: the folder or zip read.
        layout: "folders" (a Mini-ImageNet copy) or "imagenet" (an ImageNet training folder).
        split_csvs: "ravi-larochelle" (the published files) or "custom".
        splits: per split ("train", "val", "test"), a :class:`SplitReport`.
        partial: True when any listed image is missing.
        cross_split_duplicates: pairs ``(a, b)`` of pixel-identical images in different splits, each named
            ``split/wnid/file name`` (after decoding and resizing: what the model sees).
        within_split_duplicates: number of further pixel-identical copies inside one split.
        ignored_files: files that are neither images of the split nor split files (README, other classes ...).
        split_files: official split files installed into :func:`splits_dir`.
        size_bytes: size of the prepared file.
        seconds: time the import took.
        reused: True when an identical prepared file already existed and was kept.
        content_sha256: see the module docstring.
        resize_filter: filter used for images that are not already 84x84.
    """

    path: Path
    source: str
    layout: str
    split_csvs: str
    splits: dict[str, SplitReport]
    partial: bool
    cross_split_duplicates: list[tuple[str, str]]
    within_split_duplicates: int
    ignored_files: int
    split_files: list[str]
    size_bytes: int
    seconds: float
    reused: bool
    content_sha256: str
    resize_filter: str

    @property
    def classes(self) -> int:
        return sum(s.classes_found for s in self.splits.values())

    @property
    def images(self) -> int:
        return sum(s.images_found for s in self.splits.values())

    def summary(self) -> list[str]:
        """Human-readable lines for the CLI."""
        kind = "partial" if self.partial else "complete"
        lines = [
            f"Mini-ImageNet ({kind}, {self.layout} layout, {self.split_csvs} split) from {self.source}: "
            + split_counts(self.splits)
        ]
        if self.partial:
            lines.append(missing_summary(self.splits))
        lines += duplicate_lines(self.cross_split_duplicates, self.within_split_duplicates)
        if self.ignored_files:
            lines.append(f"ignored {self.ignored_files} files that are not images of the split")
        if self.split_files:
            lines.append(f"installed split files: {', '.join(self.split_files)}")
        lines.append(prepared_line(self.path, self.reused, self.seconds, self.content_sha256))
        return lines


def split_counts(splits: dict[str, SplitReport]) -> str:
    """``"train 64/64 classes, 38,400/38,400 images; val ..."``: classes and images found of those listed."""
    return "; ".join(
        f"{name} {s.classes_found}/{s.classes_expected} classes, {s.images_found:,}/{s.images_expected:,} images"
        for name, s in splits.items()
    )


def missing_summary(splits: dict[str, SplitReport]) -> str:
    """``"partial copy: N of M listed images missing (per split ...), e.g. ..."``."""
    missing = sum(s.images_missing for s in splits.values())
    expected = sum(s.images_expected for s in splits.values())
    parts = []
    for name, s in splits.items():
        if s.images_missing:
            what = f"{name}: {s.images_missing:,} images missing"
            if s.missing_classes:
                what += f" incl. {len(s.missing_classes)} whole classes ({first_few(s.missing_classes)})"
            if s.incomplete_classes:
                what += f", {s.incomplete_classes} classes incomplete"
            parts.append(what)
    examples = [e for s in splits.values() for e in s.missing_examples][:_EXAMPLES]
    return (
        f"partial copy: {missing:,} of {expected:,} listed images missing ({'; '.join(parts)}), "
        f"e.g. {', '.join(examples)}"
    )


def incomplete_error(title: str, source: Path | str, splits: dict[str, SplitReport]) -> DataError:
    """The one-line error refusing a partial copy without ``--allow-partial``: what is missing, and the two ways
    on."""
    missing_classes = [c for r in splits.values() for c in r.missing_classes]
    what = ""
    if missing_classes:
        what = f"{len(missing_classes)} class folder(s) missing ({first_few(missing_classes)}) and "
    return DataError(
        f"the {title} copy in {source} is incomplete: {what}"
        + missing_summary(splits).removeprefix("partial copy: ")
        + "; complete the copy, or pass --allow-partial to prepare it as a partial set"
    )


# ----------------------------------------------------------------------------------------------- scan
@dataclass
class Entry:
    """One file found by :func:`scan`.

    Attributes:
        parts: its path relative to the folder or zip (``("train", "n01532829", "x.jpg")``).
        read: returns its bytes.
        where: the file for messages: its path, or ``archive.zip:member``.
    """

    parts: tuple[str, ...]
    read: Callable[[], bytes]
    where: str


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _source_csvs(path: Path) -> dict[str, bytes]:
    """Split files found in a folder (not inside class folders) or anywhere in a zip, first one of each name."""
    found: dict[str, bytes] = {}
    if path.is_dir():
        for here, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not _hidden(d) and not WNID_RE.fullmatch(d))
            for name in sorted(set(names) & set(RAVI_SPLIT_SHA256)):
                found.setdefault(name, (Path(here) / name).read_bytes())
        return found
    with open_zip(path) as zf:
        for info in zf.infolist():
            rel = check_zip_entry(info, path)
            if not info.is_dir() and rel.name in RAVI_SPLIT_SHA256 and not any(_hidden(p) for p in rel.parts):
                found.setdefault(rel.name, zf.read(info))
    return found


def scan(path: Path, keep_dir: Callable[[str], bool]) -> tuple[list[Entry], int]:
    """Every file of a folder or zip (hidden ones and ``__MACOSX`` skipped) outside folders ``keep_dir``
    rejects (it is given each folder's name), and the number of folders rejected. A folder is walked in sorted
    order; a zip in archive order (it stays open while the entries' readers are in use).

    Raises:
        DataError: an unreadable zip, or an entry that would lie outside it (absolute, ``..``, a link).
    """
    entries: list[Entry] = []
    if path.is_dir():
        skipped = 0
        for here, dirs, names in os.walk(path):
            kept = [d for d in sorted(dirs) if not _hidden(d)]
            dirs[:] = [d for d in kept if keep_dir(d)]
            skipped += len(kept) - len(dirs)
            rel = Path(here).relative_to(path).parts
            for name in sorted(names):
                if not _hidden(name):
                    full = Path(here) / name
                    entries.append(Entry((*rel, name), full.read_bytes, str(full)))
        return entries, skipped
    zf = open_zip(path)  # stays open while the entries' readers are in use
    rejected: set[tuple[str, ...]] = set()
    for info in zf.infolist():
        rel = check_zip_entry(info, path)
        if info.is_dir() or any(_hidden(p) for p in rel.parts):
            continue
        dirs = rel.parts[:-1]
        bad = next((i for i, d in enumerate(dirs) if not keep_dir(d)), None)
        if bad is not None:
            rejected.add(dirs[: bad + 1])
            continue
        entries.append(Entry(rel.parts, partial(zf.read, info), f"{path}:{info.filename}"))
    return entries, len(rejected)


def _classify(entries: list[Entry]) -> tuple[list[Entry], list[Entry], list[Entry], int]:
    """Sort files into copy images (split file names), ImageNet images, other images in class folders, and
    the number of other files."""
    copy_items, imagenet_items, stray = [], [], []
    ignored = 0
    for entry in entries:
        stem, ext = os.path.splitext(entry.parts[-1])
        if ext.lower() not in IMAGE_EXTS:
            ignored += entry.parts[-1] not in RAVI_SPLIT_SHA256
        elif _CSV_NAME_RE.fullmatch(stem):
            copy_items.append(entry)
        elif IMAGENET_RE.fullmatch(stem):
            imagenet_items.append(entry)
        elif len(entry.parts) >= 2 and WNID_RE.fullmatch(entry.parts[-2]):
            stray.append(entry)
        else:
            ignored += 1
    return copy_items, imagenet_items, stray, ignored


def _match_copy(items: list[Entry], split: Split) -> dict[str, dict[str, Entry]]:
    """Images named by the split files: check each sits in its class's (and split's) folder."""
    found: dict[str, dict[str, Entry]] = {}
    foreign, misplaced = [], []
    for entry in items:
        stem = os.path.splitext(entry.parts[-1])[0]
        name = stem + ".jpg"
        wnid = split.wnid_of.get(name)
        if wnid is None:
            foreign.append("/".join(entry.parts))
            continue
        folder = entry.parts[-2] if len(entry.parts) >= 2 else ""
        split_folder = entry.parts[-3] if len(entry.parts) >= 3 else ""
        if WNID_RE.fullmatch(folder) and folder != wnid:
            misplaced.append(f"{'/'.join(entry.parts)} (class {wnid}, not {folder})")
            continue
        if folder == wnid and split_folder in SPLIT_NAMES and split_folder != split.split_of[wnid]:
            misplaced.append(f"{'/'.join(entry.parts)} (class {wnid} is in {split.split_of[wnid]}, not {split_folder})")
            continue
        here = found.setdefault(wnid, {})
        if name in here:
            raise DataError(
                f"{name} is in the copy twice: {here[name].where} and {entry.where}; keep one copy of the data set"
            )
        here[name] = entry
    if misplaced:
        raise DataError(
            f"{len(misplaced)} image(s) in the wrong folder for the split in {split.where}, e.g. "
            f"{first_few(misplaced)}; a class must sit in its own split's folder (train/val/test must not share "
            "classes): rebuild the copy from the split files"
        )
    if foreign:
        raise DataError(
            f"{len(foreign)} image(s) not listed in the split files ({split.where}), e.g. {first_few(foreign)}; "
            "this is not a copy of Mini-ImageNet with the Ravi & Larochelle split: check the copy or the split files"
        )
    return found


def _match_imagenet(items: list[Entry], split: Split, skipped: list[int]) -> dict[str, dict[str, Entry]]:
    """Map split file names to ImageNet training files (see :func:`import_copy` for the rule); files of classes
    not in the split are counted in ``skipped[0]``."""
    by_class: dict[str, list[tuple[int, str, Entry]]] = {}
    for entry in items:
        stem = os.path.splitext(entry.parts[-1])[0]
        match = IMAGENET_RE.fullmatch(stem)
        wnid, number = match.group(1), int(match.group(2))
        folder = entry.parts[-2] if len(entry.parts) >= 2 else ""
        if WNID_RE.fullmatch(folder) and folder != wnid:
            raise DataError(
                f"{entry.where} sits in the folder of class {folder}; an ImageNet training folder holds "
                "<wnid>/<wnid>_<n>.JPEG: check the copy"
            )
        if wnid in split.split_of:
            by_class.setdefault(wnid, []).append((number, entry.parts[-1], entry))
        else:
            skipped[0] += 1
    found: dict[str, dict[str, Entry]] = {}
    for wnid, files in by_class.items():
        files.sort(key=lambda f: (f[0], f[1]))
        here = found.setdefault(wnid, {})
        for name in split.names[wnid]:
            index = int(name[len(wnid) : len(wnid) + 8])
            if 1 <= index <= len(files):
                here[name] = files[index - 1][2]
    return found


def split_reports(
    found: dict[str, dict[str, Entry]], split_of: dict[str, str], names: dict[str, list[str]]
) -> dict[str, SplitReport]:
    """How complete each split of a copy is.

    Args:
        found: class -> {listed file name: its Entry} of the files found.
        split_of: class -> its split, for every listed class.
        names: class -> the file names listed for it.

    Returns:
        ``{"train": SplitReport, "val": ..., "test": ...}``.
    """
    reports = {}
    for s in SPLIT_NAMES:
        wnids = [w for w, sp in split_of.items() if sp == s]
        missing_classes, examples = [], []
        incomplete = images_found = images_expected = 0
        for wnid in wnids:
            have = found.get(wnid, {})
            listed = names[wnid]
            images_expected += len(listed)
            images_found += len(have)
            if not have:
                missing_classes.append(f"{s}/{wnid}")
            elif len(have) < len(listed):
                incomplete += 1
            if len(examples) < _EXAMPLES:
                examples += [f"{s}/{wnid}/{n}" for n in listed if n not in have][: _EXAMPLES - len(examples)]
        reports[s] = SplitReport(
            classes_expected=len(wnids),
            classes_found=len(wnids) - len(missing_classes),
            images_expected=images_expected,
            images_found=images_found,
            missing_classes=missing_classes,
            incomplete_classes=incomplete,
            missing_examples=examples,
        )
    return reports


def _content_sha256(found: dict[str, dict[str, Entry]], split: Split, progress: bool) -> str:
    h = hashlib.sha256()
    for name in sorted(split.files):
        h.update(f"{name}\0{hashlib.sha256(split.files[name]).hexdigest()}\0".encode())
    with h5images.progress_bar(progress) as bar:
        task = bar.add_task("Hashing the copy", total=sum(len(v) for v in found.values()))
        for wnid in sorted(found):
            for name in sorted(found[wnid]):
                data = found[wnid][name].read()
                h.update(f"{split.split_of[wnid]}\0{wnid}\0{name}\0{len(data)}\0".encode())
                h.update(data)
            bar.advance(task, len(found[wnid]))
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- import
def _decide_split(
    root: Path, source_csvs: dict[str, bytes], splits_dir_arg: Path | None, splits_mirror, progress: bool
) -> Split:
    """Where the split files come from: ``splits_dir``, else official ones in the copy, else installed, else
    fetched."""
    if splits_dir_arg is not None:
        folder = Path(splits_dir_arg).expanduser()
        return parse_split(_read_split_folder(folder), str(folder))
    if source_csvs and all(
        hashlib.sha256(source_csvs.get(n, b"")).hexdigest() == sha for n, sha in RAVI_SPLIT_SHA256.items()
    ):
        return parse_split(source_csvs, "the copy")
    try:
        folder = download_splits(root, splits_mirror, progress)
    except DataError as err:
        raise DataError(
            f"{err}; the Mini-ImageNet split files are needed to check the copy: give a folder holding train.csv, "
            "val.csv and test.csv with --splits-dir (splits_dir=), or a mirror with --splits-mirror"
        ) from None
    return parse_split(_read_split_folder(folder), str(folder))


def import_copy(
    root: Path,
    path: Path,
    *,
    allow_partial: bool = False,
    progress: bool = True,
    splits_dir: Path | None = None,
    splits_mirror: str | os.PathLike | None = None,
    resize_filter: str = DEFAULT_FILTER,
) -> tuple[Path, ImportReport]:
    """Prepare Mini-ImageNet from a copy on disk, checked image by image against the split files.

    Sources (a folder or a zip; hidden files, ``__MACOSX`` and class folders not in the split are skipped):

    - the common layout ``[top/]{train,val,test}/<wnid>/<wnid><8 digits>.jpg`` (file names as in the split
      files; ``.jpeg``/``.png``/upper case accepted), or all images in one folder. An image not listed in the
      split files, or sitting in another class's or another split's folder, is refused.
    - an ImageNet (ILSVRC-2012) training folder: ``<wnid>/<wnid>_<n>.JPEG`` (or all in one folder). A split
      file name is the wnid followed by an 8-digit index k; it names the k-th (1-based) file of that class
      when the class's ImageNet files are sorted by the number ``n`` (numerically, not as text). This is the
      rule of the widely used Mini-ImageNet scripts (A. Berenguel's ``create_miniImagenet.py`` and
      yaoyao-liu/mini-imagenet-tools sort ``<wnid>_<n>.JPEG`` by ``int(n)`` and take entry ``k - 1``); it
      assumes the class folder is complete, as extracted from ILSVRC-2012 (a missing file shifts every later
      index). Indices beyond the files present count as missing images.

    Images are decoded fully (a truncated JPEG is an error), converted to RGB and, if not already 84x84,
    resized with ``resize_filter`` (Lanczos by default, as the mirror's README states for its copy; the
    scripts above use OpenCV's INTER_AREA, so pixels differ slightly from theirs).

    The split files are, in order: ``splits_dir`` if given (any content; files that are not the published
    ones are reported as a "custom" split and not installed), the published files if the copy contains them,
    those in :func:`splits_dir` of ``root``, else fetched (:func:`download_splits`). The official ones are
    installed into :func:`splits_dir`.

    Args:
        root: the data root; the file goes to :func:`prepared_path`.
        path: the folder or zip.
        allow_partial: accept a copy with listed images or whole classes missing (reported, and recorded in
            the file's ``partial`` attribute). Corrupt images are an error regardless.
        progress: show progress bars and status lines on stderr.
        splits_dir: a folder holding ``train.csv``, ``val.csv``, ``test.csv``.
        splits_mirror: where to fetch the split files from (see :func:`download_splits`).
        resize_filter: one of :data:`reptile_cli.data.h5images.RESIZE_FILTERS`.

    Returns:
        ``(prepared HDF5 path, ImportReport)``. The file holds ``images`` uint8 ``[N, 84, 84, 3]`` (N = 60,000
        for the complete set), ``class_split`` per class, attr ``partial``. An identical prepared file (same
        content hash, filter and split) is kept as it is.

    Raises:
        DataError: the path is missing or not a folder/zip; no Mini-ImageNet images in it; images of both
            layouts; images not in the split or in the wrong folder; a partial copy without ``allow_partial``
            (the message says what is missing and to pass ``--allow-partial``); unreadable images (all are
            counted, the first few named); a partial import that would replace a complete prepared file; the
            split files cannot be fetched or are malformed.
    """
    with lock_preparation(Path(root) / "miniimagenet", progress):  # one preparation at a time; another waits
        return _import_copy(root, path, allow_partial, splits_dir, splits_mirror, resize_filter, progress)


def _import_copy(root, path, allow_partial, splits_dir, splits_mirror, resize_filter, progress):
    started = time.monotonic()
    h5images.check_resize_filter(resize_filter)
    root, source = Path(root), Path(path).expanduser()
    if not source.exists():
        raise DataError(f"{source} does not exist; give the folder or zip holding Mini-ImageNet")
    if not source.is_dir() and not (source.suffix.lower() == ".zip" or zipfile.is_zipfile(source)):
        raise DataError(f"{source} is neither a folder nor a zip archive; give the folder or zip holding Mini-ImageNet")

    split = _decide_split(root, _source_csvs(source), splits_dir, splits_mirror, progress)
    # Only the split's class folders are read (an ImageNet training folder has 1000).
    entries, foreign_dirs = scan(source, lambda d: not WNID_RE.fullmatch(d) or d in split.split_of)
    copy_items, imagenet_items, stray, ignored = _classify(entries)
    if copy_items and imagenet_items:
        raise DataError(
            f"{source} mixes Mini-ImageNet file names ({copy_items[0].where}) and ImageNet ones "
            f"({imagenet_items[0].where}); give either a Mini-ImageNet copy or an ImageNet training folder"
        )
    if stray:
        raise DataError(
            f"{len(stray)} image(s) in class folders of {source} are named neither as in the split files nor as "
            f"ImageNet files (<wnid>_<n>.JPEG), e.g. {first_few([e.where for e in stray])}; check the copy"
        )
    if not copy_items and not imagenet_items:
        tars = [e.parts[-1] for e in entries if re.fullmatch(r"n\d{8}\.tar", e.parts[-1])]
        hint = "; extract the per-class tar files first" if tars else ""
        raise DataError(
            f"no Mini-ImageNet images found in {source}: expected {{train,val,test}}/<wnid>/<wnid><8 digits>.jpg "
            f"or an ImageNet training folder <wnid>/<wnid>_<n>.JPEG{hint}"
        )
    layout = "folders" if copy_items else "imagenet"
    skipped = [0]
    found = _match_copy(copy_items, split) if copy_items else _match_imagenet(imagenet_items, split, skipped)
    ignored += skipped[0]
    found = {w: images for w, images in found.items() if images}
    reports = split_reports(found, split.split_of, split.names)
    is_partial = any(r.images_missing for r in reports.values())
    if is_partial and not allow_partial:
        raise incomplete_error("Mini-ImageNet", source, reports)

    out = prepared_path(root, resize_filter)
    content = _content_sha256(found, split, progress)
    split_label = "ravi-larochelle" if split.official else "custom"
    reused = h5images.reuse_prepared(
        out,
        title="Mini-ImageNet",
        is_partial=is_partial,
        same={"content_sha256": content, "split_csvs": split_label},
        dataset=DATASET,
        resize_filter=resize_filter,
        image_size=IMAGE_SIZE,
        channels=CHANNELS,
    )

    wnids = sorted(found)
    image_names = [sorted(found[w]) for w in wnids]
    class_splits = [split.split_of[w] for w in wnids]
    if not reused:
        items = [
            (f"{split.split_of[w]}/{w}/{n} ({found[w][n].where})", found[w][n].read)
            for w, names in zip(wnids, image_names)
            for n in names
        ]
        h5images.write_decoded(
            out,
            items,
            class_names=wnids,
            class_counts=[len(n) for n in image_names],
            class_groups=class_splits,
            class_split=class_splits,
            attrs={
                "dataset": DATASET,
                "image_size": IMAGE_SIZE,
                "channels": CHANNELS,
                "variant": "partial" if is_partial else "full",
                "partial": bool(is_partial),
                "split_csvs": split_label,
                "source_layout": layout,
                "resize_filter": resize_filter,
                "content_sha256": content,
            },
            description=f"Decoding Mini-ImageNet ({layout}, {resize_filter})",
            progress=progress,
        )
    say(progress, "Looking for pixel-identical images across splits")
    pairs, within = find_duplicates(
        out, [[f"{s}/{w}/{n}" for n in names] for s, w, names in zip(class_splits, wnids, image_names)], class_splits
    )
    report = ImportReport(
        path=out,
        source=str(source),
        layout=layout,
        split_csvs=split_label,
        splits=reports,
        partial=is_partial,
        cross_split_duplicates=pairs,
        within_split_duplicates=within,
        ignored_files=ignored + foreign_dirs,
        split_files=_install_splits(root, split),
        size_bytes=out.stat().st_size,
        seconds=time.monotonic() - started,
        reused=reused,
        content_sha256=content,
        resize_filter=resize_filter,
    )
    for line in report.summary():
        say(progress, line)
    return out, report

