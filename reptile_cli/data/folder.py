"""Any folder of class folders as a few-shot dataset: validate, decode, resize and cache it as HDF5.

A folder dataset is a directory whose leaf folders are classes: ``cat/1.jpg``, or nested groups such as
``Alphabet/character01/0001_01.png``. The class name is the leaf folder's path relative to the dataset (or to
its split folder), with ``/`` separators; its group (``class_groups``) is the path of its parent (``""`` for a
top-level class). When the top level holds ``train/``, ``val/`` and/or ``test/`` (and nothing else with
images), those are the splits, recorded per class in ``class_split``; otherwise ``class_split`` is ``""`` and
the split is drawn at load time from ``split_seed`` and ``fractions``.

Every image is decoded fully and brought to ``image_size`` x ``image_size`` with ``channels`` channels by
:func:`reptile_cli.data.h5images.decode_image` (1-bit images and images holding only 0 and 255 are resized with
NEAREST, as Omniglot's reference does, so an Omniglot folder gives exactly the pixels of the built-in
Omniglot; others with ``resize_filter``, Lanczos by default; transparency is composited on white). Files that
cannot be read are all collected first and reported together as one DataError (the first few named, the full
list written beside the cache file), before anything is cached or trained.

The prepared file is a cache: ``<root>/folder/<name>-<hash>.h5``, ``hash`` from the folder's absolute path,
``image_size``, ``channels`` and ``resize_filter``. It is reused as long as the folder's image files (relative
paths, sizes, modification times: attr ``source_fingerprint``) are unchanged. Files whose raw pixels fit in
:data:`IN_MEMORY_BYTES` (read whole by the loader) are gzip-compressed in chunks of up to 1000 images;
larger ones are stored uncompressed, one image per chunk, for fast random access per task.
"""

from __future__ import annotations

import hashlib
import math
import operator
import os
import re
from functools import partial
from pathlib import Path

from reptile_cli.data import h5images
from reptile_cli.data.h5images import SPLIT_NAMES, first_few, say
from reptile_cli.errors import DataError
from reptile_cli.locks import lock_preparation

DATASET = "folder"
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)
IN_MEMORY_BYTES = 1 << 30  # the loader reads files up to this size into memory (datasets.IN_MEMORY_LIMIT)
# Bump when the decoding rule changes, so that cached files are rebuilt.
DECODE_RULE_VERSION = 1


def cache_path(root: Path, folder: Path, image_size: int, channels: int, resize_filter: str = "lanczos") -> Path:
    """Where the prepared file of ``folder`` lives: ``<root>/folder/<name>-<12 hex digits>.h5``.

    Args:
        root: the data root.
        folder: the dataset folder (made absolute and resolved).
        image_size, channels, resize_filter: the preparation settings (part of the hash).

    Returns:
        The path; ``name`` is the folder's name with characters other than letters, digits, ``.``, ``_``, ``-``
        replaced by ``_``.
    """
    absolute = Path(folder).expanduser().resolve()
    key = f"{absolute}\0{int(image_size)}\0{int(channels)}\0{resize_filter}".encode()
    digest = hashlib.sha256(key).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", absolute.name) or "folder"
    return Path(root) / DATASET / f"{name}-{digest}.h5"


def _hidden(name: str) -> bool:
    return name.startswith(".") or name in ("__MACOSX", "Thumbs.db", "desktop.ini")


def _check_args(image_size: int, channels: int, fractions, resize_filter: str) -> tuple[float, ...]:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise DataError(f"image_size={image_size!r}: must be a positive integer (e.g. 28 or 84)")
    if channels not in (1, 3):
        raise DataError(f"channels={channels!r}: must be 1 (grey) or 3 (RGB)")
    h5images.check_resize_filter(resize_filter)
    try:
        fractions = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise DataError(f"fractions={fractions!r}: give three numbers (train, val, test) summing to 1") from None
    if len(fractions) != 3 or any(f < 0 or not math.isfinite(f) for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"fractions={fractions!r}: give three non-negative numbers (train, val, test) summing to 1")
    return fractions


def _collect(folder: Path) -> tuple[dict[tuple[str, ...], list[tuple[str, int, int]]], int]:
    """Image files per folder (relative path parts -> sorted (name, size, mtime_ns)), and other files' count."""
    by_dir: dict[tuple[str, ...], list[tuple[str, int, int]]] = {}
    ignored = 0
    for here, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        rel = Path(here).relative_to(folder).parts
        files = []
        for name in sorted(names):
            if _hidden(name):
                continue
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                ignored += 1
                continue
            st = (Path(here) / name).stat()
            files.append((name, st.st_size, st.st_mtime_ns))
        if files:
            by_dir[rel] = files
    return by_dir, ignored


def _classes(folder: Path, by_dir: dict) -> tuple[list[tuple[str, str, tuple[str, ...]]], bool]:
    """``[(class name, split, folder parts)]`` sorted by class name, and whether split folders were found.

    Raises:
        DataError: images directly in the dataset or split folder, a folder holding both images and class
            folders, split folders mixed with other folders, or one class name in two splits.
    """
    if () in by_dir:
        raise DataError(
            f"{folder} holds images directly ({by_dir[()][0][0]} ...): every class needs its own folder, "
            "e.g. FOLDER/cat/1.jpg"
        )
    ancestors = {d[:i] for d in by_dir for i in range(len(d))}
    parents = [d for d in by_dir if d in ancestors]
    if parents:
        shown = first_few(["/".join(p) for p in sorted(parents)])
        raise DataError(
            f"{folder}: folder(s) {shown} hold images and also sub-folders with images; classes are the leaf "
            "folders: move those images into a sub-folder of their own"
        )
    tops = {d[0] for d in by_dir}
    has_splits = bool(tops & set(SPLIT_NAMES))
    if has_splits and not tops <= set(SPLIT_NAMES):
        others = sorted(tops - set(SPLIT_NAMES))
        raise DataError(
            f"{folder} has split folders ({', '.join(sorted(tops & set(SPLIT_NAMES)))}) and other folders with "
            f"images ({first_few(others)}); put every class under train/, val/ or test/, or use no split folders"
        )
    classes = []
    seen: dict[str, str] = {}
    for parts in by_dir:
        if has_splits:
            if len(parts) < 2:
                raise DataError(
                    f"{folder / parts[0]} holds images directly: every class needs its own folder, "
                    f"e.g. {parts[0]}/cat/1.jpg"
                )
            split, name = parts[0], "/".join(parts[1:])
            if name in seen:
                both = " and ".join(sorted((f"{seen[name]}/", f"{split}/")))
                raise DataError(
                    f"{folder}: class {name} is in both {both}; few-shot splits must not share classes (this "
                    "looks like a supervised train/test layout): give each split its own classes"
                )
            seen[name] = split
        else:
            split, name = "", "/".join(parts)
        classes.append((name, split, parts))
    classes.sort(key=lambda c: c[0])
    return classes, has_splits


def _fingerprint(by_dir: dict, image_size: int, channels: int, resize_filter: str) -> str:
    h = hashlib.sha256(f"v{DECODE_RULE_VERSION}\0{image_size}\0{channels}\0{resize_filter}\n".encode())
    for parts in sorted(by_dir):
        for name, size, mtime_ns in by_dir[parts]:
            h.update(f"{'/'.join((*parts, name))}\0{size}\0{mtime_ns}\n".encode())
    return h.hexdigest()


def prepare_folder(
    root: Path,
    folder: Path,
    *,
    image_size: int,
    channels: int,
    split_seed: int,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    progress: bool = True,
    resize_filter: str = "lanczos",
) -> Path:
    """Validate a folder of class folders and prepare (or reuse) its HDF5 cache.

    Args:
        root: the data root; the cache goes to ``<root>/folder/`` (:func:`cache_path`).
        folder: the dataset folder (see the module docstring for the layout).
        image_size: output height and width.
        channels: 1 ("L") or 3 ("RGB").
        split_seed: seed of the split drawn at load time when there are no split folders; only checked here
            (the cache does not depend on it).
        fractions: (train, val, test) class fractions for that split; checked here: they must sum to 1 and,
            without split folders, there must be at least one class for each non-zero fraction.
        progress: show a progress bar and status lines on stderr.
        resize_filter: filter for images that are not binary (see
            :func:`reptile_cli.data.h5images.decode_image`); default Lanczos.

    Returns:
        The prepared file: ``images`` uint8 ``[N, image_size, image_size, channels]``, classes sorted by name,
        images of a class sorted by file name; ``class_names``, ``class_groups`` (parent path), ``class_split``
        ("train"/"val"/"test" from split folders, else ""); attrs ``dataset`` "folder", ``variant`` (the folder
        name), ``partial`` False, ``source_path``, ``source_fingerprint``, ``content_sha256``, ``resize_filter``.

    Raises:
        DataError: bad arguments; the folder is missing or has no images; a layout problem (images beside
            class folders, split folders mixed with others, a class in two splits); too few classes for the
            fractions; unreadable or corrupt images (all of them are listed: the first few in the message, the
            rest counted, the full list in ``<cache>.errors.txt``).
    """
    fractions = _check_args(image_size, channels, fractions, resize_filter)
    try:  # only checked: the split is drawn at load time
        operator.index(split_seed)
    except TypeError:
        raise DataError(f"split_seed={split_seed!r}: must be an integer") from None
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; give a folder whose sub-folders are the classes")
    folder = folder.resolve()
    by_dir, ignored = _collect(folder)
    if not by_dir:
        raise DataError(
            f"no images in {folder} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}); "
            "give a folder whose sub-folders hold the images of one class each"
        )
    classes, has_splits = _classes(folder, by_dir)
    needed = sum(f > 0 for f in fractions)
    if not has_splits and len(classes) < needed:
        raise DataError(
            f"{folder} has {len(classes)} class folder(s), too few to split by fractions {fractions}: "
            f"give at least {needed} classes, or train/val/test folders"
        )

    out = cache_path(root, folder, image_size, channels, resize_filter)
    # two runs preparing the same folder at once: the second waits for the first's file, then reuses it
    with lock_preparation(out.parent, progress, name=out.stem):
        return _prepare_cached(out, folder, by_dir, classes, has_splits, ignored, image_size, channels,
                               resize_filter, progress)


def _prepare_cached(out: Path, folder: Path, by_dir: dict, classes: list, has_splits: bool, ignored: int,
                    image_size: int, channels: int, resize_filter: str, progress: bool) -> Path:
    fingerprint = _fingerprint(by_dir, image_size, channels, resize_filter)
    num_images = sum(len(by_dir[parts]) for _, _, parts in classes)
    if h5images.read_valid_attrs(
        out,
        dataset=DATASET,
        image_size=image_size,
        channels=channels,
        resize_filter=resize_filter,
        source_fingerprint=fingerprint,
        num_images=num_images,
    ):
        say(progress, f"{folder}: unchanged since it was prepared; using {out}")
        return out

    content = hashlib.sha256()
    errors: list[str] = []

    def hash_bytes(name: str, data: bytes) -> None:
        class_name, file_name = name.rsplit("/", 1)
        content.update(f"{class_name}\0{file_name}\0{len(data)}\0".encode())
        content.update(data)

    # Files in stored order, named by their path inside the folder; content is hashed as class/file.
    items, hashed_name = [], {}
    for name, _, parts in classes:
        for file_name, _, _ in by_dir[parts]:
            rel = "/".join((*parts, file_name))
            items.append((rel, folder.joinpath(*parts, file_name).read_bytes))
            hashed_name[rel] = f"{name}/{file_name}"
    decode = partial(h5images.decode_image, image_size=image_size, channels=channels, resize_filter=resize_filter)
    attrs = {
        "dataset": DATASET,
        "variant": folder.name,
        "image_size": image_size,
        "channels": channels,
        "resize_filter": resize_filter,
        "content_sha256": "",
        "partial": False,
        "source_path": str(folder),
        "source_fingerprint": fingerprint,
        "ignored_files": ignored,
    }

    def images():
        yield from h5images.decode_stream(
            items,
            decode,
            shape=(image_size, image_size, channels),
            errors=errors,
            on_bytes=lambda rel, data: hash_bytes(hashed_name[rel], data),
        )
        if errors:
            raise _unreadable(errors, folder, out, progress)
        attrs["content_sha256"] = content.hexdigest()

    small = num_images * image_size * image_size * channels <= IN_MEMORY_BYTES
    errors_file = out.with_name(out.name + ".errors.txt")
    errors_file.unlink(missing_ok=True)
    h5images.write_images_h5(
        out,
        images(),
        class_names=[name for name, _, _ in classes],
        class_counts=[len(by_dir[parts]) for _, _, parts in classes],
        class_groups=[name.rpartition("/")[0] for name, _, _ in classes],
        class_split=[split for _, split, _ in classes],
        attrs=attrs,
        chunk_images=1000 if small else 1,
        compression="gzip" if small else None,
        compression_opts=4 if small else None,
        description=f"Decoding {folder.name} ({image_size}x{image_size}x{channels})",
        progress=progress,
    )
    where = "train/val/test folders" if has_splits else "no split folders"
    say(progress, f"prepared {folder}: {len(classes)} classes, {num_images:,} images ({where}) -> {out}")
    return out


def _unreadable(errors: list[str], folder: Path, out: Path, progress: bool) -> DataError:
    """The one-line error for unreadable images; the full list goes to ``<cache>.errors.txt`` and stderr."""
    errors_file = out.with_name(out.name + ".errors.txt")
    errors_file.parent.mkdir(parents=True, exist_ok=True)
    errors_file.write_text("".join(f"{e}\n" for e in errors), encoding="utf-8")
    for e in errors:
        say(progress, f"unreadable: {e}")
    return DataError(
        f"{len(errors)} unreadable or corrupt image(s) in {folder}: {first_few(errors)} "
        f"(full list: {errors_file}); fix or remove them and run again"
    )
