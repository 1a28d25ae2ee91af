"""CUB-200-2011: download the official archive or import a copy on disk, check it, prepare HDF5.

Caltech-UCSD Birds-200-2011 (Wah et al. 2011, CNS-TR-2011-001): 11,788 photographs of 200 bird species, 41 to 60
per species. The few-shot split is that of Chen et al. 2019 ("A Closer Look at Few-shot Classification"; the
rule of their ``filelists/CUB/write_CUB_filelist.py``): the 200 class folders sorted by name, index ``i`` from
0; ``i % 2 == 0`` train (100 classes), ``i % 4 == 1`` val (50), ``i % 4 == 3`` test (50). The lists ship in
``reptile_cli/data/class_lists/cub/`` (``SOURCES.md`` there).

The official archive ``CUB_200_2011.tgz`` (md5 :data:`ARCHIVE_MD5`, from Caltech DATA) holds
``CUB_200_2011/images/<class>/<file>.jpg``, ``classes.txt`` (``<id> <class>``), ``images.txt``
(``<id> <class>/<file>.jpg``) and files this package does not read (bounding boxes, parts, attributes).
:func:`download` fetches it into ``<root>/cub/`` (kept, so it is never fetched twice; delete it to free 1.1 GB);
:func:`import_copy` takes the archive or the folder extracted from it.

The prepared file ``<root>/cub/cub_<filter>.h5`` (:func:`prepared_path`) is in the shared format
(:mod:`reptile_cli.data.h5images`): ``images`` uint8 ``[N, 84, 84, 3]`` (N = 11,788 for the complete set), every
photograph resized whole to 84x84 with the filter (Lanczos by default): stretched, not cropped, so birds keep
their whole frame but not their aspect ratio. Classes are the folder names (``001.Black_footed_Albatross``),
sorted; images of a class sorted by file name; ``class_groups`` and ``class_split`` hold each class's split;
``images`` is uncompressed, one image per chunk. attrs: ``dataset`` "cub", ``variant`` "full" or "partial",
``partial`` (bool), ``split`` "chen", ``source_layout`` ("archive" or "folder"), ``images_listed`` (the
number of lines of ``images.txt``), ``resize_filter``, ``source_fingerprint`` (sha256 of each image's split,
class, file name, size and modification time: an import of an identical source keeps the file),
``content_sha256`` (sha256 of each image's name and bytes, in stored order).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from reptile_cli.data import h5images
from reptile_cli.data.download import CHUNK_BYTES, MIRROR_ENV, fetch, resolve_url
from reptile_cli.data.h5images import first_few, say
from reptile_cli.data.listed import ListedDataset, class_lists
from reptile_cli.data.miniimagenet import (
    Entry,
    incomplete_error,
    missing_summary,
    scan,
    split_counts,
    split_reports,
)
from reptile_cli.errors import DataError
from reptile_cli.locks import lock_preparation

DATASET = "cub"
TITLE = "CUB-200-2011"
SPLIT = "chen"
IMAGE_SIZE = 84
CHANNELS = 3
DEFAULT_FILTER = "lanczos"

ARCHIVE = "CUB_200_2011.tgz"
ARCHIVE_MD5 = "97eceeb196236b17998738112f37df78"
# Caltech DATA (the dataset's home since 2022), then the original address
OFFICIAL_BASE_URLS = (
    "https://data.caltech.edu/records/65de6-vp158/files",
    "http://www.vision.caltech.edu/visipedia-data/CUB-200-2011",
)
OFFICIAL_PAGE = "https://data.caltech.edu/records/65de6-vp158"
TOP_FOLDER = "CUB_200_2011"
OFFICIAL_IMAGES = 11_788
_INDEX_FILES = ("classes.txt", "images.txt")
_SOURCE_HELP = f"the {ARCHIVE} archive or the {TOP_FOLDER} folder extracted from it"


# ----------------------------------------------------------------------------------------------- paths
def dataset_dir(root: Path) -> Path:
    """``<root>/cub``: the prepared files and the downloaded archive."""
    return Path(root) / DATASET


def prepared_path(root: Path, resize_filter: str = DEFAULT_FILTER) -> Path:
    """The prepared HDF5 file ``<root>/cub/cub_<filter>.h5`` (a partial copy uses the same name; its ``partial``
    attribute says so)."""
    return dataset_dir(root) / f"{DATASET}_{resize_filter}.h5"


# ----------------------------------------------------------------------------------------------- download
def download(
    root: Path, mirror: str | os.PathLike | None = None, *, resize_filter: str = DEFAULT_FILTER, progress: bool = True
) -> Path:
    """Fetch ``CUB_200_2011.tgz`` (md5-verified) into ``<root>/cub/`` and prepare it; idempotent.

    When a complete prepared file for this filter exists, nothing is fetched or written.

    Args:
        root: the data root.
        mirror: a folder, ``file://`` or ``http(s)://`` URL holding ``CUB_200_2011.tgz``; default
            ``$REPTILE_MIRROR``, else Caltech DATA, then the original Caltech address.
        resize_filter: one of :data:`reptile_cli.data.h5images.RESIZE_FILTERS`.
        progress: show progress bars and the report on stderr.

    Returns:
        :func:`prepared_path`, as :func:`import_copy` writes it.

    Raises:
        DataError: unknown filter; the archive cannot be fetched or fails its md5 (nothing is kept); the archive
            does not hold a complete CUB-200-2011.
    """
    h5images.check_resize_filter(resize_filter)
    root = Path(root)
    with lock_preparation(dataset_dir(root), progress):  # a second download waits, then finds the file
        out = prepared_path(root, resize_filter)
        attrs = h5images.read_valid_attrs(
            out, dataset=DATASET, resize_filter=resize_filter, image_size=IMAGE_SIZE, channels=CHANNELS
        )
        if attrs is not None and not bool(attrs.get("partial", True)):
            say(progress, f"{TITLE} is already prepared at {out}; nothing to do")
            return out
        archive = _fetch_archive(root, mirror, progress)
        return _import(root, archive, resize_filter, False, progress)


def _fetch_archive(root: Path, mirror: str | os.PathLike | None, progress: bool) -> Path:
    dest = dataset_dir(root) / ARCHIVE
    mirrored = mirror not in (None, "") or bool(os.environ.get(MIRROR_ENV))
    failure = None
    for base in OFFICIAL_BASE_URLS[:1] if mirrored else OFFICIAL_BASE_URLS:
        try:
            return fetch(resolve_url(ARCHIVE, base, mirror), dest, md5=ARCHIVE_MD5, progress=progress)
        except DataError as err:
            failure = err
    raise DataError(
        f"{failure}; or get {ARCHIVE} from {OFFICIAL_PAGE} yourself and run `reptile data import cub {ARCHIVE}`"
    )


# ----------------------------------------------------------------------------------------------- import
def import_copy(root: Path, paths: Sequence[Path], *, resize_filter: str = DEFAULT_FILTER,
                allow_partial: bool = False, progress: bool = True) -> Path:
    """Prepare CUB-200-2011 from the official archive or the folder extracted from it, checked file by file.

    The source is ``CUB_200_2011.tgz`` (or any tar or .tar.gz archive holding ``[CUB_200_2011/]classes.txt``,
    ``images.txt`` and ``images/``), the ``CUB_200_2011`` folder, or the folder holding it. An archive is
    unpacked (only ``classes.txt``, ``images.txt`` and ``images/``) into a temporary folder under
    ``<root>/cub/``, removed afterwards. The checks:

    - ``classes.txt`` lists the 200 classes of the shipped lists, each once, ids 1 to 200 in order;
    - every line of ``images.txt`` is ``<id> <class>/<file>`` (ids 1 to N in order, no file twice) with a class
      of ``classes.txt``, and lists at least one image of each class;
    - every file under ``images/`` is listed in ``images.txt``;
    - a listed image missing from ``images/`` makes the copy partial: refused without ``allow_partial``.

    Every image is decoded fully (a truncated JPEG is an error), converted to RGB and resized whole to 84x84
    with ``resize_filter`` (stretched, not cropped). Pixel-identical images across splits are reported.

    Args:
        root: the data root; the file goes to :func:`prepared_path`.
        paths: a list of one path (as the CLI passes it).
        resize_filter: one of :data:`reptile_cli.data.h5images.RESIZE_FILTERS`.
        allow_partial: accept listed images or whole classes missing (reported; attr ``partial``).
        progress: show progress bars and the report on stderr.

    Returns:
        The prepared file: ``images`` uint8 ``[N, 84, 84, 3]``, ``class_split`` per class. An existing file
        prepared from an identical source with the same filter is kept as it is.

    Raises:
        DataError (one line, nothing left behind): not one path; a missing path; an archive that is truncated,
            corrupt or not a tar archive, or holds no ``classes.txt``; the metadata files malformed, naming other
            classes or disagreeing with ``images/``; a partial copy without ``allow_partial``, or one that would
            replace a complete prepared file; unreadable images (all counted, the first few named).
    """
    h5images.check_resize_filter(resize_filter)
    if len(paths) != 1:
        raise DataError(f"{TITLE} is imported from one path ({_SOURCE_HELP}); got {len(paths)} paths")
    with lock_preparation(dataset_dir(root), progress):  # one preparation at a time; another waits
        return _import(Path(root), Path(paths[0]).expanduser(), resize_filter, allow_partial, progress)


def _import(root: Path, source: Path, resize_filter: str, allow_partial: bool, progress: bool) -> Path:
    if not source.exists():
        raise DataError(f"{source} does not exist; give {_SOURCE_HELP}")
    if source.is_dir():
        return _prepare(root, source, str(source), "folder", resize_filter, allow_partial, progress)
    unpacked = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dataset_dir(root)))
    try:
        _unpack(source, unpacked, progress)
        return _prepare(root, unpacked, str(source), "archive", resize_filter, allow_partial, progress)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)


def _unpack(archive: Path, into: Path, progress: bool) -> None:
    """Extract ``classes.txt``, ``images.txt`` and ``images/...`` of a tar archive (gzip-compressed or not) into
    ``into``, streaming it once; file modification times are kept (they enter the source fingerprint). A
    gzip stream is read to its end, so a truncated archive fails even where tar would stop at a member's end."""
    say(progress, f"Unpacking {archive.name} into a temporary folder")
    with open(archive, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open if gzipped else open)(archive, "rb") as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                parts = [p for p in PurePosixPath(member.name).parts if p != "."]
                if member.name.startswith("/") or ".." in parts:
                    raise DataError(
                        f"refusing to unpack {archive}: entry {member.name!r} would land outside the folder it is "
                        f"unpacked into; the archive is malformed: get {ARCHIVE} from {OFFICIAL_PAGE}"
                    )
                if not (member.isfile() and parts):
                    continue
                index_file = len(parts) <= 2 and parts[-1] in _INDEX_FILES
                if not (index_file or ("images" in parts[:2] and parts.index("images") <= len(parts) - 3)):
                    continue
                out = into.joinpath(*parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as fin, open(out, "wb") as fout:
                    shutil.copyfileobj(fin, fout, CHUNK_BYTES)
                os.utime(out, (member.mtime, member.mtime))
            while stream.read(CHUNK_BYTES):  # the rest (tar's end blocks): a truncated gzip stream fails here
                pass
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(
            f"cannot unpack {archive} ({str(err) or type(err).__name__}): it is truncated, corrupt or not a tar "
            f"archive; fetch it again (`reptile data download cub`) or give the extracted {TOP_FOLDER} folder"
        ) from None


def _base_folder(folder: Path, source: str) -> Path:
    """The folder holding ``classes.txt``, ``images.txt`` and ``images/``: ``folder`` or its ``CUB_200_2011``."""
    for base in (folder, folder / TOP_FOLDER):
        if (base / "classes.txt").is_file():
            missing = [n for n in ("images.txt", "images") if not (base / n).exists()]
            if missing:
                raise DataError(
                    f"{source} has {TOP_FOLDER}/classes.txt but no {' and no '.join(missing)}; it is not a whole "
                    f"copy of {TITLE}: extract the official {ARCHIVE} again"
                )
            return base
    raise DataError(f"{source} holds no {TOP_FOLDER}/classes.txt, so it is not {TITLE}; give {_SOURCE_HELP}")


def _read_index(path: Path, what: str, source: str) -> list[str]:
    """The values of an ``<id> <value>`` file whose ids run 1, 2, ... in order."""
    where = f"{TOP_FOLDER}/{path.name} of {source}"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {where} ({err}); extract the official {ARCHIVE} again") from None
    values = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[0] != str(len(values) + 1):
            raise DataError(
                f"line {number} of {where}: {line.strip()!r} is not '{len(values) + 1} <{what}>'; it is not the "
                f"official file: extract {ARCHIVE} again"
            )
        values.append(fields[1])
    return values


def _read_metadata(base: Path, source: str, split_of: dict[str, str]) -> dict[str, list[str]]:
    """class -> its file names as ``images.txt`` lists them (sorted), after checking ``classes.txt``."""
    classes = _read_index(base / "classes.txt", "class", source)
    missing = sorted(set(split_of) - set(classes))
    unexpected = sorted(set(classes) - set(split_of))
    twice = sorted(c for c, n in Counter(classes).items() if n > 1)
    if missing or unexpected or twice:
        what = "; ".join(
            f"{label} {first_few(names)}"
            for label, names in (("lacks", missing), ("has unknown classes", unexpected), ("repeats", twice))
            if names
        )
        raise DataError(
            f"{TOP_FOLDER}/classes.txt of {source} does not list the 200 {TITLE} classes ({what}); it is not the "
            f"official release: get {ARCHIVE} from {OFFICIAL_PAGE}"
        )
    listed: dict[str, list[str]] = {c: [] for c in classes}
    seen: set[str] = set()
    for rel in _read_index(base / "images.txt", "class/file", source):
        parts = rel.split("/")
        if len(parts) != 2 or parts[0] not in listed or rel in seen:
            problem = "twice" if rel in seen else "outside the folder of a class of classes.txt"
            raise DataError(
                f"{TOP_FOLDER}/images.txt of {source} lists {rel} {problem}; images.txt and classes.txt disagree: "
                f"extract the official {ARCHIVE} again"
            )
        seen.add(rel)
        listed[parts[0]].append(parts[1])
    empty = [c for c, names in listed.items() if not names]
    if empty:
        raise DataError(
            f"{TOP_FOLDER}/images.txt of {source} lists no image of {len(empty)} class(es) ({first_few(empty)}); it "
            f"is not the official file: extract {ARCHIVE} again"
        )
    return {c: sorted(names) for c, names in listed.items()}


def _match_images(base: Path, source: str, listed: dict[str, list[str]]) -> dict[str, dict[str, Entry]]:
    """class -> {file name: Entry} of the listed images found under ``images/``; any other file is an error."""
    entries, _ = scan(base / "images", lambda _: True)
    known = {f"{c}/{n}" for c, names in listed.items() for n in names}
    unlisted = ["/".join(e.parts) for e in entries if "/".join(e.parts) not in known]
    if unlisted:
        raise DataError(
            f"{len(unlisted)} file(s) under {TOP_FOLDER}/images of {source} are not listed in images.txt, e.g. "
            f"{first_few(unlisted)}; images.txt and the images folder disagree: extract the official {ARCHIVE} again"
        )
    found: dict[str, dict[str, Entry]] = {}
    for entry in entries:
        found.setdefault(entry.parts[0], {})[entry.parts[1]] = entry
    return found


def _prepare(
    root: Path, folder: Path, source: str, layout: str, resize_filter: str, allow_partial: bool, progress: bool
) -> Path:
    started = time.monotonic()
    split_of = {c: s for s, names in class_lists(DATASET).items() for c in names}
    base = _base_folder(folder, source)
    listed = _read_metadata(base, source, split_of)
    found = _match_images(base, source, listed)
    reports = split_reports(found, split_of, listed)
    images_listed = sum(len(names) for names in listed.values())
    short_list = images_listed < OFFICIAL_IMAGES  # a trimmed release: its own files agree, but it is not CUB
    is_partial = short_list or any(r.images_missing for r in reports.values())
    if is_partial and not allow_partial:
        if short_list and not any(r.images_missing for r in reports.values()):
            raise DataError(f"the {TITLE} copy in {source} is incomplete: its images.txt lists {images_listed:,} "
                            f"images, the official release {OFFICIAL_IMAGES:,}; import the official {ARCHIVE}, or "
                            f"pass --allow-partial to prepare it as a partial set")
        raise incomplete_error(TITLE, source, reports)

    classes = [
        (c, split_of[c], split_of[c], [(n, found[c][n].where, found[c][n].read) for n in sorted(found[c])])
        for c in sorted(found)
    ]
    _, tail = h5images.prepare_from_files(
        prepared_path(root, resize_filter),
        classes,
        title=TITLE,
        is_partial=is_partial,
        attrs={"dataset": DATASET, "image_size": IMAGE_SIZE, "channels": CHANNELS, "resize_filter": resize_filter,
               "split": SPLIT, "source_layout": layout, "images_listed": images_listed},
        started=started,
        description=f"Decoding {TITLE} ({resize_filter})",
        progress=progress,
        unreadable=lambda errors: h5images.unreadable_error(errors, source),
    )
    kind = "partial" if is_partial else "complete"
    lines = [f"{TITLE} ({kind}, {SPLIT} split) from {source}: {split_counts(reports)}"]
    if is_partial:
        lines.append(missing_summary(reports))
    if images_listed != OFFICIAL_IMAGES:
        lines.append(f"images.txt lists {images_listed:,} images; the official release lists {OFFICIAL_IMAGES:,}")
    for line in lines + tail:
        say(progress, line)
    return prepared_path(root, resize_filter)


SPEC = ListedDataset(name=DATASET, title=TITLE, split=SPLIT, prepared_path=prepared_path, import_copy=import_copy,
                     download=download, default_filter=DEFAULT_FILTER, source_help=_SOURCE_HELP)
DATASETS = (SPEC,)
