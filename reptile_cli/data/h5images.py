"""The prepared image file every image dataset shares (format ``reptile-cli/images`` v1): writer, checks, decoding.

Layout (one HDF5 file per prepared dataset):

- ``images``: uint8 ``[num_images, H, W, C]`` (H = W = ``image_size``, C = ``channels``); the images of one class
  are contiguous, classes sorted by name, images within a class sorted by file name.
- ``class_start``: int64 ``[num_classes + 1]``; class ``c`` is ``images[class_start[c]:class_start[c + 1]]``.
- ``class_names``: UTF-8 strings ``[num_classes]`` (read with ``.asstr()[:]``).
- ``class_groups``: UTF-8 strings ``[num_classes]`` (what a class belongs to: Omniglot's source set, a folder
  dataset's parent folder, Mini-ImageNet's split).
- ``class_split`` (optional; Mini-ImageNet and folder datasets): UTF-8 strings ``[num_classes]``, each
  ``"train"``, ``"val"``, ``"test"``, or ``""`` when the source defines no split.
- attrs: ``format``, ``format_version``, ``num_classes``, ``num_images`` (set here) and what the caller gives:
  ``dataset``, ``variant``, ``image_size``, ``channels``, ``resize_filter``, ``content_sha256`` and, for the
  datasets that have them, ``partial`` (bool) and others.

Files are written under a temporary name beside their destination, fsynced and renamed into place with
:func:`os.replace`, so a reader never sees a half-written file and an interrupted write leaves none behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image, UnidentifiedImageError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from reptile_cli.data.download import console
from reptile_cli.errors import DataError

FORMAT = "reptile-cli/images"
FORMAT_VERSION = 1

RESIZE_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
}
SPLIT_NAMES = ("train", "val", "test")

# Images per write call: whole chunks, about this many images, so no chunk is written twice.
_WRITE_BATCH = 256
# Threads decoding images (PIL releases the GIL while decoding and resizing).
DECODE_WORKERS = max(1, min(8, os.cpu_count() or 1))


def check_resize_filter(resize_filter: str) -> None:
    """Raise DataError unless ``resize_filter`` is one of :data:`RESIZE_FILTERS`."""
    if resize_filter not in RESIZE_FILTERS:
        raise DataError(f"unknown resize filter {resize_filter!r}; use one of: {', '.join(RESIZE_FILTERS)}")


def progress_bar(enabled: bool) -> Progress:
    """A rich progress bar on stderr counting items (description, bar, done/total, time left)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, disable=not enabled)


def say(enabled: bool, message: str) -> None:
    """Print one status line on stderr when ``enabled``."""
    if enabled:
        console.print(message, highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------------------------- write
def write_images_h5(
    path: Path,
    images: Iterable[np.ndarray],
    *,
    class_names: Sequence[str],
    class_counts: Sequence[int],
    class_groups: Sequence[str],
    attrs: Mapping[str, Any],
    class_split: Sequence[str] | None = None,
    chunk_images: int | None = None,
    compression: str | None = "gzip",
    compression_opts: int | None = 4,
    description: str = "Writing images",
    progress: bool = True,
) -> None:
    """Write a prepared image file atomically, streaming the images (never all in memory at once).

    Args:
        path: the destination; its folder is created. Written as ``<name>.tmp<pid>`` and renamed into place.
        images: yields exactly ``sum(class_counts)`` uint8 arrays ``[H, W, C]``, class after class, in the
            order of ``class_names``; ``H = W = attrs["image_size"]``, ``C = attrs["channels"]``. It is consumed
            to its end, so a generator may raise after its last image (e.g. listing all unreadable files) and
            nothing is written.
        class_names: ``[num_classes]`` names, already sorted.
        class_counts: ``[num_classes]`` number of images of each class.
        class_groups: ``[num_classes]`` group of each class.
        attrs: file attributes; must hold ``image_size`` and ``channels``. ``format``, ``format_version``,
            ``num_classes`` and ``num_images`` are added. Written after the last image, so values the image
            generator fills in while it runs (a content hash) are included.
        class_split: ``[num_classes]`` "train"/"val"/"test"/"" or None (no ``class_split`` dataset).
        chunk_images: images per HDF5 chunk of ``images``; None -> ``min(num_images, 1000)``. Use 1 for files
            read one task at a time (random access).
        compression: "gzip", "lzf" or None.
        compression_opts: the gzip level, or None.
        description: label of the progress bar.
        progress: show a rich progress bar on stderr.

    Raises:
        DataError: the generator yielded too few or too many images, or an image of the wrong shape; or
            whatever the generator raises. In every case the temporary file is removed.
    """
    path = Path(path)
    size, channels = int(attrs["image_size"]), int(attrs["channels"])
    counts = [int(n) for n in class_counts]
    num_images = sum(counts)
    if not (len(class_names) == len(counts) == len(class_groups)) or (
        class_split is not None and len(class_split) != len(counts)
    ):
        raise ValueError("class_names, class_counts, class_groups and class_split must have the same length")
    shape = (num_images, size, size, channels)
    chunk = max(1, min(num_images, 1000) if chunk_images is None else min(num_images, chunk_images))
    batch = chunk * max(1, -(-_WRITE_BATCH // chunk))
    strings = h5py.string_dtype("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as h5, progress_bar(progress) as bar:
            task = bar.add_task(description, total=num_images)
            dset = h5.create_dataset(
                "images",
                shape=shape,
                dtype=np.uint8,
                chunks=(chunk, size, size, channels) if num_images else None,
                compression=compression if num_images else None,
                compression_opts=compression_opts if (num_images and compression == "gzip") else None,
            )
            buffer = np.empty((min(batch, max(num_images, 1)), size, size, channels), dtype=np.uint8)
            pixels = hashlib.sha256()  # of the pixels as stored: ImageStore checks them when it opens the file
            done = filled = 0
            for image in images:
                if done + filled >= num_images:
                    raise DataError(f"internal error: more than {num_images} images produced for {path.name}")
                image = np.asarray(image)
                if image.shape != shape[1:] or image.dtype != np.uint8:
                    raise DataError(
                        f"internal error: image {done + filled} has shape {image.shape} {image.dtype}, "
                        f"expected {shape[1:]} uint8"
                    )
                buffer[filled] = image
                filled += 1
                if filled == len(buffer):
                    pixels.update(buffer.tobytes())
                    dset[done : done + filled] = buffer
                    done += filled
                    bar.advance(task, filled)
                    filled = 0
            if filled:
                pixels.update(buffer[:filled].tobytes())
                dset[done : done + filled] = buffer[:filled]
                done += filled
                bar.advance(task, filled)
            if done != num_images:
                raise DataError(f"internal error: {done} of {num_images} images produced for {path.name}")
            h5.create_dataset("class_start", data=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
            h5.create_dataset("class_names", data=list(class_names), dtype=strings, shape=(len(counts),))
            h5.create_dataset("class_groups", data=list(class_groups), dtype=strings, shape=(len(counts),))
            if class_split is not None:
                h5.create_dataset("class_split", data=list(class_split), dtype=strings, shape=(len(counts),))
            h5.attrs.update(
                {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    **dict(attrs),
                    "num_classes": len(counts),
                    "num_images": num_images,
                    "pixels_sha256": pixels.hexdigest(),
                }
            )
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def unreadable_error(errors: Sequence[str], source: str | os.PathLike | None = None) -> DataError:
    """The one-line error for image files that could not be read or decoded (``"NAME (reason)"`` each), of
    ``source`` when given (for names relative to it)."""
    where = f" in {source}" if source is not None else ""
    return DataError(
        f"{len(errors)} unreadable image(s){where} (truncated or corrupt), e.g. {first_few(errors)}; "
        "replace them from the original source and import again"
    )


def write_decoded(
    path: Path,
    items: Iterable[tuple[str, Callable[[], bytes]]],
    *,
    class_names: Sequence[str],
    class_counts: Sequence[int],
    class_groups: Sequence[str],
    class_split: Sequence[str] | None,
    attrs: Mapping[str, Any],
    description: str,
    progress: bool = True,
    decode: Callable[[bytes], np.ndarray] | None = None,
    hash_content: bool = False,
    unreadable: Callable[[list[str]], DataError] | None = None,
) -> None:
    """Decode image files (:func:`decode_stream`) into a prepared file read one task at a time: ``images``
    uncompressed, one image per chunk (Mini-ImageNet, CUB, tieredImageNet). Written by :func:`write_images_h5`,
    so nothing is left behind on failure.

    Args:
        path: the destination.
        items: ``(name, read)`` pairs in stored order (class after class, as ``class_names``); ``read()`` returns
            the file's bytes; ``name`` is used in messages (and in the content hash). May be a generator.
        class_names, class_counts, class_groups, class_split: as for :func:`write_images_h5`.
        attrs: file attributes; must hold ``image_size``, ``channels`` and ``resize_filter``.
        description: label of the progress bar.
        progress: show a progress bar on stderr.
        decode: bytes -> uint8 ``[image_size, image_size, channels]``, raising DataError for a file it refuses;
            default :func:`decode_image` with the size, channels and filter of ``attrs``.
        hash_content: set attr ``content_sha256`` to the sha256 of every file's name, byte count and bytes, in
            stored order (computed while the files are read, so they are read once).
        unreadable: the failures (``"NAME (reason)"``, all of them) -> the DataError to raise; default
            :func:`unreadable_error`.

    Raises:
        DataError: any file could not be read or decoded (every file is tried first), or what
            :func:`write_images_h5` raises.
    """
    size, channels = int(attrs["image_size"]), int(attrs["channels"])
    if decode is None:
        decode = partial(decode_image, image_size=size, channels=channels, resize_filter=str(attrs["resize_filter"]))
    attrs = dict(attrs)
    errors: list[str] = []
    content = hashlib.sha256()

    def hash_file(name: str, data: bytes) -> None:
        content.update(f"{name}\0{len(data)}\0".encode())
        content.update(data)

    def images() -> Iterator[np.ndarray]:
        yield from decode_stream(items, decode, shape=(size, size, channels), errors=errors,
                                 on_bytes=hash_file if hash_content else None)
        if errors:
            raise (unreadable or unreadable_error)(errors)
        if hash_content:
            attrs["content_sha256"] = content.hexdigest()  # attrs are written after the last image

    write_images_h5(
        path,
        images(),
        class_names=class_names,
        class_counts=class_counts,
        class_groups=class_groups,
        class_split=class_split,
        attrs=attrs,
        chunk_images=1,
        compression=None,
        compression_opts=None,
        description=description,
        progress=progress,
    )


# (file name, its path, read) of one image file; a class: (name, split, group, its files in stored order)
SourceFile = tuple[str, str, Callable[[], bytes]]
SourceClass = tuple[str, str, str, Sequence[SourceFile]]


def prepare_from_files(
    path: Path,
    classes: Sequence[SourceClass],
    *,
    title: str,
    is_partial: bool,
    attrs: Mapping[str, Any],
    started: float,
    description: str,
    progress: bool = True,
    decode: Callable[[bytes], np.ndarray] | None = None,
    unreadable: Callable[[list[str]], DataError] | None = None,
) -> tuple[bool, list[str]]:
    """Prepare ``path`` from image files on disk unless it already holds them, then look for duplicates across
    splits (CUB, tieredImageNet).

    Each image is named ``split/class/file`` (in messages, the content hash and the duplicate report). The
    source's fingerprint, attr ``source_fingerprint``, is the sha256 of every image's name, size and
    modification time (whole seconds, as tar archives keep them). The file is kept when :func:`reuse_prepared`
    finds it valid with the same fingerprint (a partial copy never replaces a complete file); otherwise
    :func:`write_decoded` writes it, with ``content_sha256`` of the files' bytes.

    Args:
        path: the prepared file.
        classes: ``(name, split, group, files)`` per class in stored order (sorted by name), ``files`` the
            ``(file name, path, read)`` of its images in stored order.
        title: the dataset, for messages.
        is_partial: whether the copy is partial (attrs ``partial`` and ``variant`` "partial" / "full").
        attrs: further attributes; must hold ``dataset``, ``image_size``, ``channels`` and ``resize_filter``.
        started: ``time.monotonic()`` when the import began (for the report).
        description, progress, decode, unreadable: as for :func:`write_decoded`.

    Returns:
        ``(reused, report lines)``: whether the existing file was kept; the lines on duplicates and on the file.

    Raises:
        DataError: what :func:`reuse_prepared` and :func:`write_decoded` raise.
    """
    names = [[f"{split}/{name}/{file}" for file, _, _ in files] for name, split, _, files in classes]
    files = [image for _, _, _, images in classes for image in images]
    fingerprint = hashlib.sha256()
    for image, (_, where, _) in zip((n for class_names in names for n in class_names), files):
        st = os.stat(where)
        fingerprint.update(f"{image}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
    attrs = {
        **attrs,
        "partial": bool(is_partial),
        "variant": "partial" if is_partial else "full",
        "source_fingerprint": fingerprint.hexdigest(),
    }
    splits = [split for _, split, _, _ in classes]
    reused = reuse_prepared(
        path,
        title=title,
        is_partial=is_partial,
        same={"source_fingerprint": attrs["source_fingerprint"]},
        **{key: attrs[key] for key in ("dataset", "resize_filter", "image_size", "channels")},
    )
    if not reused:
        write_decoded(
            path,
            zip((n for class_names in names for n in class_names), (read for _, _, read in files)),
            class_names=[name for name, _, _, _ in classes],
            class_counts=[len(images) for _, _, _, images in classes],
            class_groups=[group for _, _, group, _ in classes],
            class_split=splits,
            attrs=attrs,
            description=description,
            progress=progress,
            decode=decode,
            hash_content=True,
            unreadable=unreadable,
        )
    say(progress, "Looking for pixel-identical images across splits")
    pairs, within = find_duplicates(path, names, splits)
    content = str((read_valid_attrs(path) or {}).get("content_sha256"))
    return reused, [*duplicate_lines(pairs, within), prepared_line(path, reused, time.monotonic() - started, content)]


# ----------------------------------------------------------------------------------------------- check
def read_valid_attrs(path: Path, **expected: Any) -> dict[str, Any] | None:
    """The attributes of a complete, consistent prepared file, or None.

    Args:
        path: the file.
        **expected: attribute values the file must have (e.g. ``dataset="miniimagenet"``,
            ``resize_filter="lanczos"``); ``image_size`` and ``channels`` are also checked against the shape.

    Returns:
        The attrs as a dict (numpy scalars left as they are) when the file exists, is in this format and
        version, has every expected value, and its datasets agree with ``num_classes``/``num_images``
        (``images`` ``[num_images, S, S, C]``, ``class_start`` from 0 to ``num_images``, ``class_names`` and
        ``class_groups`` (and ``class_split`` when present) of ``num_classes``). None otherwise.
    """
    try:
        with h5py.File(path, "r") as h5:
            attrs = dict(h5.attrs)
            if attrs.get("format") != FORMAT or int(attrs.get("format_version", -1)) != FORMAT_VERSION:
                return None
            for key, value in expected.items():
                if key not in attrs or _plain(attrs[key]) != _plain(value):
                    return None
            num_classes, num_images = int(attrs["num_classes"]), int(attrs["num_images"])
            size, channels = int(attrs["image_size"]), int(attrs["channels"])
            starts = h5["class_start"][:]
            ok = (
                h5["images"].shape == (num_images, size, size, channels)
                and starts.shape == (num_classes + 1,)
                and starts[0] == 0
                and starts[-1] == num_images
                and bool(np.all(np.diff(starts) >= 0))
                and h5["class_names"].shape == (num_classes,)
                and h5["class_groups"].shape == (num_classes,)
                and ("class_split" not in h5 or h5["class_split"].shape == (num_classes,))
            )
            return attrs if ok else None
    except (OSError, KeyError, ValueError, TypeError):
        return None


def reuse_prepared(path: Path, *, title: str, is_partial: bool, same: Mapping[str, Any], **expected: Any) -> bool:
    """Whether ``path`` already holds what an import would write, so it is kept as it is.

    Args:
        path: the prepared file.
        title: the dataset, for the message (``Mini-ImageNet``).
        is_partial: whether the copy being imported is partial.
        same: attributes naming the source (``content_sha256``, ...): the file is reused when all are equal.
        **expected: what :func:`read_valid_attrs` checks (dataset, filter, size, channels).

    Returns:
        True when ``path`` is a valid file with these attributes.

    Raises:
        DataError: the copy is partial and ``path`` holds a complete file of another source (importing would
            replace it).
    """
    existing = read_valid_attrs(path, **expected)
    if existing is None:
        return False
    if all(str(_plain(existing.get(key))) == str(value) for key, value in same.items()):
        return True
    if is_partial and not bool(existing.get("partial", True)):
        raise DataError(
            f"{path} holds a complete {title}; preparing this partial copy would replace it: "
            "use another --root, or delete that file first"
        )
    return False


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


# ----------------------------------------------------------------------------------------------- decode
def decode_image(data: bytes, *, image_size: int, channels: int, resize_filter: str = "lanczos") -> np.ndarray:
    """Decode one image file and bring it to ``image_size`` x ``image_size`` with ``channels`` channels.

    The rule, the same for every dataset built from image files:

    1. Decode fully (``Image.load()``): a truncated or corrupt file is an error, never half an image.
    2. Bring the mode to "L" (``channels == 1``) or "RGB" (``channels == 3``): transparency (RGBA, LA, P or L
       with a transparent colour) is composited on white first; 16-bit greys are scaled to 8 bits; other
       modes (CMYK, YCbCr, P ...) use PIL's conversion. A mode "1" image is handled as in Omniglot's reference
       preprocessing: resized with NEAREST while still 1-bit, then converted (0/255).
    3. Resize (skipped when the size already matches). Binary images -- every value 0 or 255 after step 2,
       like an Omniglot PNG saved as "L", "RGB" or "P" -- are resized with NEAREST whatever ``resize_filter``
       says, so they stay binary and give exactly the pixels of the 1-bit path (NEAREST samples the same
       source pixels in every mode). Other images use ``resize_filter`` (default Lanczos, as the Mini-ImageNet
       mirror's README states for its 84x84 copy). Non-square images are stretched, not cropped.

    EXIF orientation is ignored (as torchvision's ``ImageFolder`` does).

    Args:
        data: the file's bytes.
        image_size: output height and width.
        channels: 1 (grey, "L") or 3 ("RGB").
        resize_filter: one of :data:`RESIZE_FILTERS`.

    Returns:
        uint8 array ``[image_size, image_size, channels]``.

    Raises:
        DataError: not a readable image (unknown format, truncated, corrupt, unsupported mode); one line
            without the file name (callers add it).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    target = "L" if channels == 1 else "RGB"
    size = (image_size, image_size)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode == "1":
                out = img if img.size == size else img.resize(size, Image.Resampling.NEAREST)
                out = out.convert("L")
                if target == "RGB":
                    out = out.convert("RGB")
            else:
                out = _to_mode(img, target)
                if out.size != size:
                    arr = np.asarray(out)
                    binary = bool(np.all((arr == 0) | (arr == 255)))
                    method = Image.Resampling.NEAREST if binary else RESIZE_FILTERS[resize_filter]
                    out = out.resize(size, method)
            arr = np.asarray(out, dtype=np.uint8)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise DataError(f"not a readable image ({str(err) or type(err).__name__})") from None
    return arr.reshape(image_size, image_size, channels)


def _to_mode(img: Image.Image, target: str) -> Image.Image:
    """``img`` in mode ``target`` ("L" or "RGB"), transparency composited on white."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        if mode.startswith("I;16"):
            arr = (arr.astype(np.uint32) >> 8).astype(np.uint8)
        elif mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
            arr = (arr.astype(np.uint32) >> (8 if arr.max() > 255 else 0)).astype(np.uint8)
        else:
            raise DataError(f"unsupported image mode {mode} (32-bit or floating point pixels)")
        img, mode = Image.fromarray(arr, "L"), "L"
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert(target)
    return img if mode == target else img.convert(target)


def first_few(items: Sequence[str], limit: int = 3) -> str:
    """``"a, b, c and 7 more"``: the first ``limit`` items and how many are left out."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def images_by_class(path: Path) -> Iterable[tuple[int, np.ndarray]]:
    """Yield ``(class index, uint8 [n, H, W, C])`` for each class of a prepared file, one class in memory."""
    with h5py.File(path, "r") as h5:
        starts = h5["class_start"][:]
        images = h5["images"]
        for c in range(len(starts) - 1):
            yield c, images[int(starts[c]) : int(starts[c + 1])]


def decode_stream(
    items: Iterable[tuple[str, Callable[[], bytes]]],
    decode: Callable[[bytes], np.ndarray],
    *,
    shape: tuple[int, ...],
    errors: list[str],
    on_bytes: Callable[[str, bytes], None] | None = None,
    workers: int | None = None,
) -> Iterator[np.ndarray]:
    """Read and decode image files in order, collecting every failure instead of stopping at the first.

    Files are read in the calling thread (in order, so ``on_bytes`` can hash them) and decoded by a pool of
    ``workers`` threads, a batch at a time.

    Args:
        items: ``(name, read)`` pairs; ``read()`` returns the file's bytes; ``name`` is used in messages.
        decode: bytes -> uint8 array of ``shape``; raises DataError for an unreadable image.
        shape: the shape of every decoded image; a failed one yields zeros of this shape.
        errors: receives ``"NAME (reason)"`` for each file that could not be read or decoded.
        on_bytes: called with ``(name, bytes)`` for each file read, in order.
        workers: decoding threads; default :data:`DECODE_WORKERS`.

    Yields:
        One uint8 array of ``shape`` per item, in order (zeros where the file failed: check ``errors``).
    """
    workers = DECODE_WORKERS if workers is None else max(1, workers)
    blank = np.zeros(shape, dtype=np.uint8)

    def attempt(data: bytes | None) -> np.ndarray | str:
        if data is None:
            return ""
        try:
            return decode(data)
        except DataError as err:
            return str(err)

    iterator = iter(items)
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        while batch := list(islice(iterator, 16 * workers)):
            datas: list[bytes | None] = []
            for name, read in batch:
                try:
                    data = read()
                except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as err:
                    errors.append(f"{name} (cannot read the file: {err})")
                    datas.append(None)
                    continue
                if on_bytes is not None:
                    on_bytes(name, data)
                datas.append(data)
            results = pool.map(attempt, datas) if pool is not None else map(attempt, datas)
            for (name, _), data, result in zip(batch, datas, results):
                if isinstance(result, str):
                    if data is not None:
                        errors.append(f"{name} ({result})")
                    yield blank
                else:
                    yield result
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


# ----------------------------------------------------------------------------------------------- reports
def find_duplicates(
    path: Path, image_names: list[list[str]], class_splits: list[str]
) -> tuple[list[tuple[str, str]], int]:
    """Pixel-identical images in a prepared file.

    Args:
        path: the prepared file.
        image_names: per class, the names of its images in stored order (used in the result).
        class_splits: per class, its split.

    Returns:
        ``(pairs, within)``: ``pairs`` lists ``(a, b)`` for images in different splits with identical pixels
        (each image of a group paired with the group's first one, sorted); ``within`` counts the further
        copies of an image inside one split.
    """
    groups: dict[bytes, list[tuple[str, str]]] = {}
    for c, block in images_by_class(path):
        for i in range(len(block)):
            digest = hashlib.blake2b(block[i].tobytes(), digest_size=16).digest()
            groups.setdefault(digest, []).append((class_splits[c], image_names[c][i]))
    pairs: list[tuple[str, str]] = []
    within = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        splits = {s for s, _ in members}
        within += len(members) - len(splits)
        if len(splits) > 1:
            first = members[0]
            pairs += [(first[1], m[1]) for m in members[1:] if m[0] != first[0]]
    return sorted(pairs), within


def duplicate_lines(pairs: list[tuple[str, str]], within: int) -> list[str]:
    """Report lines for :func:`find_duplicates`' result."""
    if pairs:
        shown = [f"{a} = {b}" for a, b in pairs]
        lines = [
            f"{len(shown)} pixel-identical image pair(s) across splits (an upstream quirk; left as they are): "
            + "; ".join(shown)
        ]
    else:
        lines = ["no pixel-identical images across splits"]
    if within:
        lines.append(f"{within} further pixel-identical copies within a split")
    return lines


def prepared_line(path: Path, reused: bool, seconds: float, content_sha256: str) -> str:
    """The report's last line: the prepared file (or the one kept), its size, the time taken, its content hash."""
    verb = "already prepared, kept" if reused else "prepared"
    return (
        f"{verb}: {path} ({path.stat().st_size / 1e6:,.1f} MB, {seconds:.1f} s, "
        f"content sha256 {content_sha256[:16]}...)"
    )
