"""Omniglot: download the official archives or import a copy on disk, and prepare one HDF5 file.

Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015): 1623 characters from 50 alphabets (background set
964, evaluation set 659), 20 drawers each, 105x105 1-bit PNGs (REFERENCE.md, "Data"). Two ways in:

- :func:`download` fetches the official archives (md5-verified) from GitHub or a mirror, then prepares them.
- :func:`import_copy` takes a copy the user already has (extracted folders, zips such as the repacked ones,
  or a folder holding those) and checks its structure instead of an md5.

Both end in the same prepared file, ``<root>/omniglot/omniglot.h5`` (``omniglot_small.h5`` for the small
set), whose layout is the interface the rest of the package reads:

- ``images``: uint8 ``[num_images, 28, 28, 1]``, 0..255, white background 255 (no inversion); the images of
  one class are contiguous, classes sorted by name, images within a class sorted by file name.
- ``class_start``: int64 ``[num_classes + 1]``; class ``c`` is ``images[class_start[c]:class_start[c + 1]]``.
- ``class_names``: UTF-8 strings ``[num_classes]``, ``Alphabet/characterNN`` (read with ``.asstr()[:]``).
- ``class_groups``: UTF-8 strings ``[num_classes]``, the source set of each class (``images_background``,
  ``images_evaluation``, ``images_background_small1``/``2``).
- attrs: ``format`` ("reptile-cli/images"), ``format_version`` (1), ``dataset`` ("omniglot"), ``variant``,
  ``image_size`` (28), ``channels`` (1), ``resize_filter``, ``content_sha256``, ``num_classes``,
  ``num_images``.

``content_sha256`` hashes the sorted (class name, file name, raw PNG bytes) triples, so it is the same
however the copy arrived (download, zip, folder). Resizing follows the reference implementation: the mode "1"
PNG is resized to 28x28 with NEAREST (PIL's choice for that mode), then converted to "L", giving 0/255.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, UnidentifiedImageError

from reptile_cli.data import h5images
from reptile_cli.data.download import (
    MIRROR_ENV,
    check_zip_entry,
    console,
    fetch,
    file_md5,
    is_url,
    open_zip,
    resolve_url,
    url_to_path,
)
from reptile_cli.errors import DataError
from reptile_cli.locks import lock_preparation

OFFICIAL_BASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
ARCHIVE_MD5 = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
    "images_background_small1.zip": "e704a628b5459e08445c13499850abc4",
    "images_background_small2.zip": "b75a71a51d3b13f821f212756fe481fd",
}
VARIANTS = ("full", "small")
VARIANT_ARCHIVES = {
    "full": ("images_background.zip", "images_evaluation.zip"),
    "small": ("images_background_small1.zip", "images_background_small2.zip"),
}

# The Vinyals et al. (2016) split as published with Prototypical Networks (Snell et al. 2017).
SPLITS_BASE_URL = (
    "https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/data/omniglot/splits/vinyals/"
)
SPLITS_MIRROR_ENV = "REPTILE_SPLITS_MIRROR"
VINYALS_SPLIT_SHA256 = {
    "train.txt": "984522c194c30fb678ce53304a160a42faf5403ad4f9a67010f32dd3a35738e0",
    "val.txt": "11f99e54faee3e26f53d3231c1cceac5bf7b8730e9be31cb6dab256551dc0c1a",
    "test.txt": "845264cc5c156180828ccf17915668b17ee21424d0170df6e7d81676aa5d1204",
    "trainval.txt": "5276ae50c755596d0bff7f2284e85625695549a85ee6e36b6491ad1e5d1cc26a",
}

FULL_ALPHABETS = 50
FULL_CLASSES = 1623
SMALL_ALPHABETS = frozenset(
    {"Balinese", "Early_Aramaic", "Greek", "Korean", "Latin", "Japanese_(katakana)", "Sanskrit", "Tagalog"}
)
SMALL_CLASSES = 242
DRAWERS = 20
IMAGE_SIZE = 28

RESIZE_FILTERS = h5images.RESIZE_FILTERS
FORMAT = h5images.FORMAT
FORMAT_VERSION = h5images.FORMAT_VERSION

# When one class arrives from several sets (the small archives overlap the background set), the first
# of these names is recorded as its group.
_GROUP_ORDER = (
    "images_background",
    "images_evaluation",
    "images_background_small1",
    "images_background_small2",
)
_CHARACTER_RE = re.compile(r"character\d{2}")
_PNG_RE = re.compile(r"\d{4}_\d{2}\.png")
_EXPECTED_CLASSES = {"full": FULL_CLASSES, "small": SMALL_CLASSES}


# ----------------------------------------------------------------------------------------------- paths
def dataset_dir(root: Path) -> Path:
    """``<root>/omniglot``: downloads, prepared files and splits of Omniglot."""
    return Path(root) / "omniglot"


def splits_dir(root: Path) -> Path:
    """``<root>/omniglot/splits/vinyals``: the Vinyals split files ``{train,val,test,trainval}.txt``."""
    return dataset_dir(root) / "splits" / "vinyals"


def prepared_path(root: Path, variant: str = "full", resize_filter: str = "nearest") -> Path:
    """Path of the prepared HDF5 file for a variant and resize filter.

    Args:
        root: the data root.
        variant: "full", "small" (or "partial", from ``import_copy(allow_partial=True)``).
        resize_filter: one of :data:`RESIZE_FILTERS`; the default "nearest" adds no suffix.

    Returns:
        e.g. ``<root>/omniglot/omniglot.h5``, ``omniglot_small.h5``, ``omniglot_lanczos.h5``.
    """
    stem = "omniglot" if variant == "full" else f"omniglot_{variant}"
    if resize_filter != "nearest":
        stem += f"_{resize_filter}"
    return dataset_dir(root) / f"{stem}.h5"


def _check_args(variant: str, resize_filter: str) -> None:
    if variant not in VARIANTS:
        raise DataError(f"unknown Omniglot variant {variant!r}; use one of: {', '.join(VARIANTS)}")
    if resize_filter not in RESIZE_FILTERS:
        raise DataError(f"unknown resize filter {resize_filter!r}; use one of: {', '.join(RESIZE_FILTERS)}")


def _say(enabled: bool, message: str) -> None:
    if enabled:
        console.print(message, highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------------------------- report
@dataclass
class ImportReport:
    """What an import or download found and wrote.

    Attributes:
        variant: "full", "small" or "partial".
        path: the prepared HDF5 file.
        sources: the zips and folders that were read.
        alphabets, classes, images: distinct counts after merging duplicates.
        groups: number of classes per source set (``images_background`` ...).
        duplicate_files_merged: PNG files met more than once with identical bytes (counted once).
        duplicate_classes_merged: classes that had such duplicates (e.g. Greek and Latin in both small sets).
        ignored_files: files that are neither an Omniglot drawing nor a known split file.
        split_files: Vinyals split files found (sha256-verified) and installed into :func:`splits_dir`.
        content_sha256: see the module docstring.
        reused: True when an identical prepared file already existed and was kept as it was.
    """

    variant: str
    path: Path
    sources: list[str]
    alphabets: int
    classes: int
    images: int
    groups: dict[str, int]
    duplicate_files_merged: int
    duplicate_classes_merged: int
    ignored_files: int
    split_files: list[str]
    content_sha256: str
    reused: bool

    def summary(self) -> list[str]:
        """Human-readable lines for the CLI."""
        groups = ", ".join(f"{g}: {n}" for g, n in self.groups.items())
        lines = [
            (
                f"Omniglot {self.variant}: {self.alphabets} alphabets, {self.classes} characters, "
                f"{self.images} images ({groups})"
            ),
        ]
        if self.duplicate_files_merged:
            lines.append(
                f"merged {self.duplicate_files_merged} byte-identical duplicate files "
                f"({self.duplicate_classes_merged} characters present in more than one source)"
            )
        if self.ignored_files:
            lines.append(f"ignored {self.ignored_files} files that are not Omniglot drawings")
        if self.split_files:
            lines.append(f"installed Vinyals split files: {', '.join(self.split_files)}")
        verb = "already prepared, kept" if self.reused else "prepared"
        lines.append(f"{verb}: {self.path} (content sha256 {self.content_sha256[:16]}...)")
        return lines


# ----------------------------------------------------------------------------------------------- collect
@dataclass
class _Collector:
    """Gathers the PNG bytes of every drawing found in zips and folders, merging identical duplicates."""

    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    origin: dict[tuple[str, str], str] = field(default_factory=dict)
    groups: dict[str, set[str]] = field(default_factory=dict)
    duplicate_files: int = 0
    duplicate_classes: set[str] = field(default_factory=set)
    ignored: int = 0
    splits: dict[str, bytes] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    _seen: set[Path] = field(default_factory=set)

    def add_path(self, path: Path) -> None:
        path = Path(path).expanduser()
        if not path.exists():
            raise DataError(f"{path} does not exist; give a folder or zip holding Omniglot")
        path = path.resolve()  # recorded in the prepared file's sources: absolute
        if path.is_dir():
            self.add_dir(path)
        elif path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
            self.add_zip(path)
        else:
            raise DataError(
                f"{path} is neither a folder nor a zip archive; give a folder or zip holding Omniglot"
            )

    def add_dir(self, folder: Path) -> None:
        if not self._first_visit(folder):
            return
        for here, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not _hidden(d))
            for name in sorted(names):
                path = Path(here) / name
                if name.lower().endswith(".zip") and not _hidden(name):
                    self.add_zip(path)
                else:
                    self._consider(path.parts, path.read_bytes, str(path), folder.name)

    def add_zip(self, archive: Path) -> None:
        if not self._first_visit(archive):
            return
        fallback_group = archive.stem.removesuffix(".repacked")
        with open_zip(archive) as zf:
            for info in zf.infolist():
                rel = check_zip_entry(info, archive)
                if info.is_dir():
                    continue
                try:
                    self._consider(
                        rel.parts, partial(zf.read, info), f"{archive}:{info.filename}", fallback_group
                    )
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
                    raise DataError(
                        f"cannot read {info.filename} in {archive} ({err}); the archive is corrupt: fetch it again"
                    ) from None

    def _first_visit(self, path: Path) -> bool:
        resolved = path.resolve()
        if resolved in self._seen:
            return False
        self._seen.add(resolved)
        self.sources.append(str(path))
        return True

    def _consider(
        self, parts: tuple[str, ...], read: Callable[[], bytes], where: str, fallback_group: str
    ) -> None:
        name = parts[-1]
        if any(_hidden(p) for p in parts):
            self.ignored += 1
        elif len(parts) >= 3 and _PNG_RE.fullmatch(name) and _CHARACTER_RE.fullmatch(parts[-2]):
            group = parts[-4] if len(parts) >= 4 else fallback_group
            self._add_png(f"{parts[-3]}/{parts[-2]}", name, group.removesuffix(".repacked"), read(), where)
        elif name in VINYALS_SPLIT_SHA256:
            data = read()
            if hashlib.sha256(data).hexdigest() == VINYALS_SPLIT_SHA256[name]:
                self.splits[name] = data
            else:
                self.ignored += 1
        else:
            self.ignored += 1

    def _add_png(self, class_name: str, file_name: str, group: str, data: bytes, where: str) -> None:
        key = (class_name, file_name)
        if key in self.files:
            if self.files[key] != data:
                raise DataError(
                    f"two different copies of {class_name}/{file_name}: {self.origin[key]} and {where}; "
                    "import only one of them"
                )
            self.duplicate_files += 1
            self.duplicate_classes.add(class_name)
        else:
            self.files[key] = data
            self.origin[key] = where
        self.groups.setdefault(class_name, set()).add(group)


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _group_rank(group: str) -> tuple[int, str]:
    return (_GROUP_ORDER.index(group) if group in _GROUP_ORDER else len(_GROUP_ORDER), group)


def _validate(collector: _Collector) -> dict[str, list[str]]:
    """Class name -> sorted file names; every character must hold drawers 01..20 of one character id."""
    classes: dict[str, list[str]] = {}
    for class_name, file_name in collector.files:
        classes.setdefault(class_name, []).append(file_name)
    bad = []
    for class_name in sorted(classes):
        names = sorted(classes[class_name])
        classes[class_name] = names
        drawers = [int(n[5:7]) for n in names]
        if drawers != list(range(1, DRAWERS + 1)) or len({n[:4] for n in names}) != 1:
            bad.append(f"{class_name} ({len(names)} drawings)")
    if bad:
        raise DataError(
            f"{len(bad)} character folder(s) do not hold exactly the {DRAWERS} drawings NNNN_01.png.."
            f"NNNN_{DRAWERS}.png of one character, e.g. {', '.join(bad[:3])}; "
            "the copy is incomplete or mixed: extract or download it again"
        )
    return dict(sorted(classes.items()))


def _decide_variant(classes: Iterable[str], collector: _Collector, allow_partial: bool) -> str:
    classes = list(classes)
    alphabets = {c.split("/")[0] for c in classes}
    if len(classes) == FULL_CLASSES and len(alphabets) == FULL_ALPHABETS:
        return "full"
    if len(classes) == SMALL_CLASSES and alphabets == SMALL_ALPHABETS:
        return "small"
    if allow_partial:
        return "partial"
    where = ", ".join(collector.sources)
    if not classes:
        raise DataError(
            f"no Omniglot drawings found in {where}: expected zips or folders laid out as "
            "images_background/<Alphabet>/characterNN/NNNN_DD.png"
        )
    found = set().union(*collector.groups.values())
    hint = "check that the copy is complete"
    for pair in (_GROUP_ORDER[:2], _GROUP_ORDER[2:]):
        missing = set(pair) - found
        if found <= set(pair) and len(missing) == 1:
            hint = f"add the missing set {missing.pop()}"
    raise DataError(
        f"found {len(alphabets)} alphabets and {len(classes)} characters ({', '.join(sorted(found))}) in {where}; "
        f"expected the full set ({FULL_ALPHABETS} alphabets, {FULL_CLASSES} characters: images_background + "
        f"images_evaluation) or the small set ({len(SMALL_ALPHABETS)} alphabets, {SMALL_CLASSES} characters: "
        f"images_background_small1 + images_background_small2); {hint}"
    )


def _content_sha256(files: dict[tuple[str, str], bytes]) -> str:
    h = hashlib.sha256()
    for key in sorted(files):
        data = files[key]
        h.update(f"{key[0]}\0{key[1]}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- prepare
def preprocess_png(data: bytes, resize_filter: str = "nearest") -> np.ndarray:
    """Decode one Omniglot PNG and resize it to 28x28 as the reference implementation does.

    Args:
        data: the PNG file's bytes (105x105, mode "1").
        resize_filter: "nearest" (reference: resize the 1-bit image with NEAREST, then convert to "L", giving
            only 0 and 255) or "lanczos"/"bilinear"/"box" (convert to "L" first, then resize; grey levels).

    Returns:
        uint8 array ``[28, 28, 1]``, background 255.

    Raises:
        DataError: the bytes are not a readable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            if resize_filter == "nearest":
                small = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.NEAREST).convert("L")
            else:
                small = img.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), RESIZE_FILTERS[resize_filter])
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(
            f"not a readable PNG ({err}); the copy is corrupt: extract or download it again"
        ) from None
    return np.asarray(small, dtype=np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE, 1)


def _prepared_ok(path: Path, variant: str, resize_filter: str) -> bool:
    """True when ``path`` is a complete prepared file of this variant and filter."""
    attrs = h5images.read_valid_attrs(
        path, dataset="omniglot", variant=variant, resize_filter=resize_filter, image_size=IMAGE_SIZE, channels=1
    )
    if attrs is None:
        return False
    return variant not in _EXPECTED_CLASSES or int(attrs["num_classes"]) == _EXPECTED_CLASSES[variant]


def _stored_content_sha256(path: Path) -> str | None:
    try:
        with h5py.File(path, "r") as h5:
            return str(h5.attrs.get("content_sha256"))
    except OSError:
        return None


def _write_h5(
    path: Path,
    collector: _Collector,
    classes: dict[str, list[str]],
    *,
    variant: str,
    resize_filter: str,
    content_sha256: str,
    progress: bool,
) -> None:
    def decoded():
        for class_name, file_names in classes.items():
            for file_name in file_names:
                key = (class_name, file_name)
                try:
                    yield preprocess_png(collector.files[key], resize_filter)
                except DataError as err:
                    raise DataError(f"{collector.origin[key]}: {err}") from None

    h5images.write_images_h5(
        path,
        decoded(),
        class_names=list(classes),
        class_counts=[len(f) for f in classes.values()],
        class_groups=[min(collector.groups[c], key=_group_rank) for c in classes],
        attrs={
            "dataset": "omniglot",
            "variant": variant,
            "image_size": IMAGE_SIZE,
            "channels": 1,
            "resize_filter": resize_filter,
            "content_sha256": content_sha256,
        },
        chunk_images=1000,
        compression="gzip",
        compression_opts=4,
        description=f"Decoding Omniglot ({resize_filter})",
        progress=progress,
    )


def _install_splits(root: Path, splits: dict[str, bytes]) -> list[str]:
    target = splits_dir(root)
    installed = []
    for name, data in sorted(splits.items()):
        dest = target / name
        if not (dest.is_file() and dest.read_bytes() == data):
            target.mkdir(parents=True, exist_ok=True)
            part = dest.with_name(name + ".part")
            part.write_bytes(data)
            os.replace(part, dest)
        installed.append(name)
    return installed


def _prepare(
    collector: _Collector,
    root: Path,
    *,
    resize_filter: str,
    progress: bool,
    allow_partial: bool = False,
    expect: str | None = None,
) -> tuple[Path, ImportReport]:
    """Validate what was collected, decide the variant and write (or reuse) the prepared file."""
    classes = _validate(collector)
    variant = _decide_variant(classes, collector, allow_partial)
    if expect is not None and variant != expect:
        raise DataError(
            f"the {expect} archives hold the {variant} set; fetch them again from the official source"
        )
    path = prepared_path(root, variant, resize_filter)
    content = _content_sha256(collector.files)
    reused = _prepared_ok(path, variant, resize_filter) and _stored_content_sha256(path) == content
    if not reused:
        _write_h5(
            path,
            collector,
            classes,
            variant=variant,
            resize_filter=resize_filter,
            content_sha256=content,
            progress=progress,
        )
    group_counts: dict[str, int] = {}
    for class_name in classes:
        group = min(collector.groups[class_name], key=_group_rank)
        group_counts[group] = group_counts.get(group, 0) + 1
    report = ImportReport(
        variant=variant,
        path=path,
        sources=list(collector.sources),
        alphabets=len({c.split("/")[0] for c in classes}),
        classes=len(classes),
        images=len(collector.files),
        groups=dict(sorted(group_counts.items(), key=lambda kv: _group_rank(kv[0]))),
        duplicate_files_merged=collector.duplicate_files,
        duplicate_classes_merged=len(collector.duplicate_classes),
        ignored_files=collector.ignored,
        split_files=_install_splits(root, collector.splits),
        content_sha256=content,
        reused=reused,
    )
    return path, report


# ----------------------------------------------------------------------------------------------- public
def import_copy(
    root: Path,
    paths: list[Path],
    progress: bool = True,
    *,
    resize_filter: str = "nearest",
    allow_partial: bool = False,
) -> tuple[Path, ImportReport]:
    """Prepare Omniglot from a copy already on disk, checking its structure instead of an md5.

    Accepts extracted folders (``images_background/<Alphabet>/characterNN/NNNN_DD.png``), zips of that layout
    (official or repacked), and folders holding such zips or folders (e.g. what ``data_scripts/
    fetch_omniglot.py`` writes). PNGs are read straight from the zips, nothing is unpacked. The same
    ``Alphabet/characterNN`` met in several sources is one class: byte-identical files are merged and
    counted, differing ones are an error. Vinyals split files found beside them (sha256-verified) are
    installed into :func:`splits_dir`. If an identical prepared file exists it is kept as is.

    Args:
        root: the data root; the file goes to ``<root>/omniglot/`` (see :func:`prepared_path`).
        paths: zips and folders, read together.
        progress: show progress bars and status lines on stderr.
        resize_filter: "nearest" (reference) or "lanczos", "bilinear", "box".
        allow_partial: accept a set that is neither full nor small, as variant "partial".

    Returns:
        ``(path of the prepared HDF5 file, ImportReport)``; the variant follows from the content: all 1623
        characters of 50 alphabets -> "full" (``omniglot.h5``); the 8-alphabet, 242-character small set ->
        "small" (``omniglot_small.h5``).

    Raises:
        DataError: a path is missing or not a zip/folder; an unsafe or corrupt zip entry; a character without
            exactly 20 drawings; two differing copies of one file; or a set that is neither full nor small.
    """
    if resize_filter not in RESIZE_FILTERS:
        raise DataError(f"unknown resize filter {resize_filter!r}; use one of: {', '.join(RESIZE_FILTERS)}")
    if not paths:
        raise DataError("no path given; give the folder or zips holding Omniglot")
    collector = _Collector()
    for p in paths:
        collector.add_path(Path(p))
    with lock_preparation(dataset_dir(root), progress):  # one preparation at a time; a second one waits
        path, report = _prepare(
            collector, Path(root), resize_filter=resize_filter, progress=progress, allow_partial=allow_partial
        )
    for line in report.summary():
        _say(progress, line)
    return path, report


def download_splits(root: Path, mirror: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Fetch the Vinyals split files ``{train,val,test,trainval}.txt`` (sha256-verified) if not present.

    Args:
        root: the data root.
        mirror: folder, ``file://`` or ``http(s)://`` URL holding ``train.txt`` etc.; default
            ``$REPTILE_SPLITS_MIRROR``, else the Prototypical Networks repository on GitHub.
        progress: show progress bars.

    Returns:
        :func:`splits_dir`, holding the four files.

    Raises:
        DataError: a file cannot be fetched or fails its sha256.
    """
    target = splits_dir(root)
    for name, sha256 in VINYALS_SPLIT_SHA256.items():
        url = resolve_url(name, SPLITS_BASE_URL, mirror, env_var=SPLITS_MIRROR_ENV)
        fetch(url, target / name, sha256=sha256, progress=progress)
    return target


def _fetch_archive(name: str, root: Path, mirror: str | os.PathLike | None, progress: bool) -> Path:
    md5 = ARCHIVE_MD5[name]
    dest = dataset_dir(root) / "downloads" / name
    if dest.is_file() and file_md5(dest) == md5:
        return dest
    base = str(mirror) if mirror not in (None, "") else os.environ.get(MIRROR_ENV, "")
    if base and (not is_url(base) or base.lower().startswith("file://")):
        folder = url_to_path(base) if is_url(base) else Path(base).expanduser()
        if not folder.is_dir():
            raise DataError(f"mirror folder {folder} does not exist; give a folder or URL holding {name}")
        if not (folder / name).is_file():
            others = sorted(p.name for p in folder.glob(f"{Path(name).stem}.*.zip"))
            if others:
                raise DataError(
                    f"mirror {folder} has no {name}, only {', '.join(others)} (a repacked copy, so its md5 "
                    f"is not the official one); import that copy instead: reptile data import omniglot {folder}"
                )
            raise DataError(
                f"mirror {folder} has no {name}; put the official archive there, or if you have Omniglot "
                "on disk in another form run: reptile data import omniglot PATH"
            )
    url = resolve_url(name, OFFICIAL_BASE_URL, mirror)
    try:
        return fetch(url, dest, md5=md5, progress=progress)
    except DataError as err:
        raise DataError(
            f"{err}; if you have a copy of Omniglot on disk, run: reptile data import omniglot PATH"
        ) from None


def download(
    root: Path,
    variant: str = "full",
    mirror: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    splits_mirror: str | os.PathLike | None = None,
    resize_filter: str = "nearest",
) -> Path:
    """Download the official Omniglot archives (md5-verified) and prepare them; idempotent.

    The archives are kept in ``<root>/omniglot/downloads/`` (a valid one is never fetched twice). For the
    full variant the Vinyals split files are fetched too (:func:`download_splits`). When the prepared file
    already exists and is valid, nothing is fetched or written.

    Args:
        root: the data root.
        variant: "full" (images_background + images_evaluation, 1623 characters) or "small"
            (images_background_small1 + small2, 242 characters).
        mirror: replaces the official base URL: a folder, ``file://`` or ``http(s)://`` URL holding the
            official archive names; default ``$REPTILE_MIRROR``.
        progress: show progress bars and status lines on stderr.
        splits_mirror: the same for the split files; default ``$REPTILE_SPLITS_MIRROR``.
        resize_filter: "nearest" (reference) or "lanczos", "bilinear", "box".

    Returns:
        The prepared HDF5 file (:func:`prepared_path`).

    Raises:
        DataError: unknown variant or filter; an archive missing from the mirror (a mirror holding only a
            repacked copy suggests ``reptile data import omniglot``); a network failure; a checksum mismatch.
    """
    _check_args(variant, resize_filter)
    root = Path(root)
    with lock_preparation(dataset_dir(root), progress):  # a second download waits, then reuses the result
        return _download(root, variant, mirror, progress, splits_mirror, resize_filter)


def _download(root: Path, variant: str, mirror, progress: bool, splits_mirror, resize_filter: str) -> Path:
    out = prepared_path(root, variant, resize_filter)
    if _prepared_ok(out, variant, resize_filter):
        if variant == "full":
            download_splits(root, splits_mirror, progress)
        _say(progress, f"Omniglot ({variant}) is already prepared at {out}; nothing to do")
        return out
    archives = [_fetch_archive(name, root, mirror, progress) for name in VARIANT_ARCHIVES[variant]]
    if variant == "full":
        download_splits(root, splits_mirror, progress)
    collector = _Collector()
    for archive in archives:
        collector.add_zip(archive)
    path, report = _prepare(collector, root, resize_filter=resize_filter, progress=progress, expect=variant)
    for line in report.summary():
        _say(progress, line)
    return path


def list_prepared(root: Path) -> list[dict]:
    """Describe the prepared files under ``root`` (any dataset in this package's HDF5 format).

    Args:
        root: the data root; files ``<root>/<dataset>/*.h5`` are examined.

    Returns:
        One dict per file, sorted by path: ``path`` (Path), ``name`` (file name), ``dataset``, ``variant``,
        ``classes``, ``images``, ``size_bytes``, ``resize_filter``, ``content_sha256``.
    """
    found = []
    for path in sorted(Path(root).glob("*/*.h5")):
        try:
            with h5py.File(path, "r") as h5:
                attrs = dict(h5.attrs)
        except OSError:
            continue
        if attrs.get("format") != FORMAT:
            continue
        found.append(
            {
                "path": path,
                "name": path.name,
                "dataset": str(attrs.get("dataset")),
                "variant": str(attrs.get("variant")),
                "classes": int(attrs.get("num_classes", 0)),
                "images": int(attrs.get("num_images", 0)),
                "size_bytes": path.stat().st_size,
                "resize_filter": str(attrs.get("resize_filter")),
                "content_sha256": str(attrs.get("content_sha256")),
            }
        )
    return found
