"""tieredImageNet: import a copy on disk (or build it from ImageNet), check it against the split, prepare HDF5.

tieredImageNet (Ren et al. 2018, "Meta-Learning for Semi-Supervised Few-Shot Classification"): 608 ImageNet
(ILSVRC-2012) classes grouped by 34 super-categories of the ImageNet hierarchy, split by category: 351 classes
in 20 categories train, 97 in 6 val, 160 in 8 test; every ImageNet training image of those classes (779,165;
448,695 / 124,261 / 206,209 per split), 84x84 RGB. The lists (from the authors' repository,
renmengye/few-shot-ssl-public, ``fewshot/data/tiered_imagenet_split/{train,val,test}.csv``) ship in
``reptile_cli/data/class_lists/tieredimagenet/``, one wnid a line with its category in the comment
(:func:`class_categories`).

ImageNet's terms do not allow redistributing the images, so there is no download: :func:`import_copy` takes a
folder holding

- (``folders`` layout) a copy of the 84x84 images, ``[top/]{train,val,test}/<wnid>/<any name>.jpg|.png``, each
  class in its split's folder; or
- (``imagenet`` layout) an ImageNet training folder ``<wnid>/<wnid>_<n>.JPEG`` (the 1000 classes, or only
  tieredImageNet's), resized here to 84x84.

The prepared file ``<root>/tieredimagenet/tieredimagenet_<filter>.h5`` (:func:`prepared_path`) is in the shared
format (:mod:`reptile_cli.data.h5images`): ``images`` uint8 ``[N, 84, 84, 3]``, uncompressed, one image per
chunk (about 16.5 GB for the whole set, read one task at a time); classes (wnids) sorted, images of a class
sorted by file name; ``class_groups`` holds each class's category wnid, ``class_split`` its split. attrs:
``dataset`` "tieredimagenet", ``variant`` "full" or "partial", ``partial`` (bool), ``split`` "ren",
``source_layout``, ``classes_missing``, ``resize_filter``, ``source_fingerprint`` (sha256 of each image's split,
wnid, file name, size and modification time: an import of an identical source keeps the file),
``content_sha256`` (sha256 of each image's name and bytes, in stored order). The import streams: files are
listed first (about 0.5 KB of memory per file), then read, decoded and written a batch at a time.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from reptile_cli.data import h5images
from reptile_cli.data.h5images import SPLIT_NAMES, first_few, say
from reptile_cli.data.listed import ListedDataset, class_lists
from reptile_cli.data.miniimagenet import (
    IMAGE_EXTS,
    IMAGENET_RE,
    WNID_RE,
    Entry,
    scan,
)
from reptile_cli.errors import DataError
from reptile_cli.locks import lock_preparation

DATASET = "tieredimagenet"
TITLE = "tieredImageNet"
SPLIT = "ren"
IMAGE_SIZE = 84
CHANNELS = 3
DEFAULT_FILTER = "lanczos"
EXPECTED_CLASSES = {"train": 351, "val": 97, "test": 160}
EXPECTED_CATEGORIES = {"train": 20, "val": 6, "test": 8}
# images of the published set per split (for the report only: a copy with other counts is not refused)
PUBLISHED_IMAGES = {"train": 448_695, "val": 124_261, "test": 206_209}

_CATEGORY_RE = re.compile(r"\s*(n\d{8})\s*#\s*category\s+(n\d{8})\b")
_WRONG_SIZE = f"not {IMAGE_SIZE}x{IMAGE_SIZE}"
_SOURCE_HELP = (
    "a folder of 84x84 images {train,val,test}/<wnid>/*.jpg, or an ImageNet training folder <wnid>/<wnid>_<n>.JPEG"
)


# ----------------------------------------------------------------------------------------------- paths, lists
def dataset_dir(root: Path) -> Path:
    """``<root>/tieredimagenet``: the prepared files."""
    return Path(root) / DATASET


def prepared_path(root: Path, resize_filter: str = DEFAULT_FILTER) -> Path:
    """The prepared HDF5 file ``<root>/tieredimagenet/tieredimagenet_<filter>.h5`` (a partial copy uses the same
    name; its ``partial`` attribute says so)."""
    return dataset_dir(root) / f"{DATASET}_{resize_filter}.h5"


def class_categories() -> dict[str, str]:
    """wnid -> the wnid of its super-category (``n01530575`` -> ``n01524359``, passerine), for the 608 classes,
    read from the comments of the shipped lists (``<wnid>  # category <wnid> (<name>): <class name>``).

    Raises:
        DataError: a listed class has no category (the package is broken).
    """
    folder = resources.files("reptile_cli.data") / "class_lists" / DATASET
    found: dict[str, str] = {}
    for split in SPLIT_NAMES:
        for line in (folder / f"{split}.txt").read_text(encoding="utf-8").splitlines():
            match = _CATEGORY_RE.match(line)
            if match:
                found[match.group(1)] = match.group(2)
    lacking = [w for names in class_lists(DATASET).values() for w in names if w not in found]
    if lacking:
        raise DataError(f"the shipped {DATASET} lists name no category for {first_few(lacking)}: reinstall reptile-cli")
    return found


# ----------------------------------------------------------------------------------------------- import
def import_copy(root: Path, paths: Sequence[Path], *, resize_filter: str = DEFAULT_FILTER,
                allow_partial: bool = False, progress: bool = True) -> Path:
    """Prepare tieredImageNet from a folder, checked against the shipped lists.

    Sources (hidden files and ``__MACOSX`` skipped; files that are not ``.jpg``/``.jpeg``/``.png`` ignored):

    - ``folders`` layout: ``[top/]{train,val,test}/<wnid>/<file>``, each image already 84x84 (any other size
      is an error naming the file: such a folder is not this copy). Every wnid folder must be a listed class,
      in its own split's folder, once.
    - ``imagenet`` layout: ``[top/]<wnid>/<file>`` (an ImageNet training folder, ``<wnid>_<n>.JPEG`` files);
      folders of classes not listed are skipped; every image of each listed class is used, converted to RGB
      and resized whole (stretched, not cropped) to 84x84 with ``resize_filter``. A file named for another
      class (``<other wnid>_<n>.JPEG``) is an error.

    A listed class without images makes the copy partial: refused without ``allow_partial``. Pixel-identical
    images across splits are reported.

    Args:
        root: the data root; the file goes to :func:`prepared_path`.
        paths: a list of one folder (as the CLI passes it).
        resize_filter: one of :data:`reptile_cli.data.h5images.RESIZE_FILTERS` (no effect on 84x84 images).
        allow_partial: accept classes missing (reported; attrs ``partial`` and ``classes_missing``).
        progress: show progress bars and the report on stderr.

    Returns:
        The prepared file: ``images`` uint8 ``[N, 84, 84, 3]``, ``class_split`` per class. An existing file
        prepared from an identical source with the same filter is kept as it is.

    Raises:
        DataError (one line, nothing left behind): not one path, or not a folder; no images in either layout,
            or both; a class folder not listed (folders layout), in the wrong split's folder, in two places, or
            holding a file of another class; an image of another size (folders layout); a partial copy without
            ``allow_partial``, or one that would replace a complete prepared file; unreadable images (all
            counted, the first few named).
    """
    h5images.check_resize_filter(resize_filter)
    if len(paths) != 1:
        raise DataError(f"{TITLE} is imported from one folder ({_SOURCE_HELP}); got {len(paths)} paths")
    with lock_preparation(dataset_dir(root), progress):  # one preparation at a time; another waits
        return _import(Path(root), Path(paths[0]).expanduser(), resize_filter, allow_partial, progress)


def _import(root: Path, source: Path, resize_filter: str, allow_partial: bool, progress: bool) -> Path:
    started = time.monotonic()
    if not source.is_dir():
        problem = "is not a folder (extract an archive first)" if source.exists() else "does not exist"
        raise DataError(f"{source} {problem}; give {_SOURCE_HELP}")
    lists = class_lists(DATASET)
    split_of = {w: s for s, names in lists.items() for w in names}
    category = class_categories()
    unlisted: list[str] = []

    def keep_dir(name: str) -> bool:  # an ImageNet folder has 392 other classes: not even listed
        if WNID_RE.fullmatch(name) and name not in split_of:
            unlisted.append(name)
            return False
        return True

    say(progress, f"Listing the images in {source}")
    entries, _ = scan(source, keep_dir)
    layout, found, ignored = _find_classes(entries, source, split_of, unlisted)
    if layout == "folders":
        if resize_filter != DEFAULT_FILTER:
            raise DataError(f"--resize-filter {resize_filter} does not apply to {source}: its images are already "
                            f"{IMAGE_SIZE}x{IMAGE_SIZE} and are stored as they are; drop the option")
        for wnid, files in found.items():  # one image a class now, to fail at once on a folder of other sizes
            _check_size(files[0], f"{split_of[wnid]}/{wnid}/{files[0].parts[-1]}", source)
    missing = [f"{s}/{w}" for s in SPLIT_NAMES for w in lists[s] if w not in found]
    if missing and not allow_partial:
        raise DataError(
            f"the {TITLE} copy in {source} is incomplete: {len(missing)} of {len(split_of)} listed classes have no "
            f"images ({first_few(missing)}); complete the copy, or pass --allow-partial to prepare it as a partial set"
        )

    _, tail = h5images.prepare_from_files(
        prepared_path(root, resize_filter),
        [(w, split_of[w], category[w], [(e.parts[-1], e.where, e.read) for e in found[w]]) for w in sorted(found)],
        title=TITLE,
        is_partial=bool(missing),
        attrs={"dataset": DATASET, "image_size": IMAGE_SIZE, "channels": CHANNELS, "resize_filter": resize_filter,
               "split": SPLIT, "source_layout": layout, "classes_missing": len(missing)},
        started=started,
        description=f"Decoding {TITLE} ({layout}, {resize_filter})",
        progress=progress,
        decode=_decode_84x84 if layout == "folders" else None,
        unreadable=lambda errors: _wrong_size_error(errors, source) or h5images.unreadable_error(errors, source),
    )
    counts = "; ".join(
        f"{s} {sum(split_of[w] == s for w in found)}/{EXPECTED_CLASSES[s]} classes, "
        f"{sum(len(found[w]) for w in found if split_of[w] == s):,} images (published: {PUBLISHED_IMAGES[s]:,})"
        for s in SPLIT_NAMES
    )
    kind = "partial" if missing else "complete"
    lines = [f"{TITLE} ({kind}, {layout} layout, {SPLIT} split) from {source}: {counts}"]
    if missing:
        lines.append(f"partial copy: {len(missing)} listed classes without images ({first_few(missing)})")
    if layout == "imagenet" and unlisted:
        lines.append(f"skipped {len(unlisted)} ImageNet class folders that are not in {TITLE}")
    if ignored:
        lines.append(f"ignored {ignored} files that are not images of a class folder")
    for line in lines + tail:
        say(progress, line)
    return prepared_path(root, resize_filter)


def _find_classes(
    entries: list[Entry], source: Path, split_of: dict[str, str], unlisted: list[str]
) -> tuple[str, dict[str, list[Entry]], int]:
    """``(layout, wnid -> its images in file-name order, number of files ignored)``, after the layout's checks."""
    by_layout: dict[str, list[Entry]] = {"folders": [], "imagenet": []}
    ignored, foreign = 0, []
    for entry in entries:
        parts = entry.parts
        in_class_folder = len(parts) >= 2 and WNID_RE.fullmatch(parts[-2])
        image = os.path.splitext(parts[-1])[1].lower() in IMAGE_EXTS
        if image and len(parts) >= 3 and parts[-3] in SPLIT_NAMES and not in_class_folder:
            foreign.append("/".join(parts[-3:-1]))  # a split's sub-folder that is no class: not this dataset
        if not in_class_folder or not image:
            ignored += 1
        else:
            by_layout["folders" if len(parts) >= 3 and parts[-3] in SPLIT_NAMES else "imagenet"].append(entry)
    if by_layout["folders"] and by_layout["imagenet"]:
        raise DataError(
            f"{source} mixes split folders ({by_layout['folders'][0].where}) and class folders outside them "
            f"({by_layout['imagenet'][0].where}); give either a {{train,val,test}}/<wnid> copy or an ImageNet "
            "training folder"
        )
    layout = "folders" if by_layout["folders"] else "imagenet"
    if layout == "folders" and foreign:
        raise DataError(
            f"{len(set(foreign))} folder(s) of images in {source} are not {TITLE} classes "
            f"({first_few(sorted(set(foreign)))}): a split folder holds only <wnid> class folders; check the copy"
        )
    items = by_layout[layout]
    if not items:
        tars = any(re.fullmatch(r"n\d{8}\.tar", e.parts[-1]) for e in entries)
        hint = "; extract the per-class tar files first" if tars else ""
        raise DataError(f"no images of {TITLE} classes found in {source}: expected {_SOURCE_HELP}{hint}")
    if layout == "folders" and unlisted:
        raise DataError(
            f"{len(unlisted)} class folder(s) of {source} are not in the {TITLE} lists "
            f"({first_few(sorted(unlisted))}); this is not a copy of {TITLE} with Ren et al.'s split: check the copy"
        )
    homes: dict[str, dict[tuple[str, ...], list[Entry]]] = {}
    for entry in items:
        homes.setdefault(entry.parts[-2], {}).setdefault(entry.parts[:-1], []).append(entry)
    for wnid, folders in sorted(homes.items()):
        if len(folders) > 1:
            where = [f"{'/'.join(f)}/" for f in folders]
            splits = {f[-2] for f in folders} if layout == "folders" else set()
            both = f"both the {' and '.join(sorted(splits))} split folders" if len(splits) > 1 else "two folders"
            raise DataError(
                f"class {wnid} sits in {both} of {source} ({', '.join(where)}): a class may sit in one place and "
                "one split only; remove the extra copy"
            )
        (folder,) = folders
        if layout == "folders" and folder[-2] != split_of[wnid]:
            raise DataError(
                f"class folder {'/'.join(folder)} of {source} is in the {folder[-2]} folder but Ren et al.'s split "
                f"puts {wnid} in {split_of[wnid]}: move it (for an ImageNet training folder, give the folder holding "
                "the <wnid> folders itself)"
            )
        for entry in folders[folder]:
            match = IMAGENET_RE.fullmatch(os.path.splitext(entry.parts[-1])[0])
            if match and match.group(1) != wnid:
                raise DataError(
                    f"{entry.where} is an image of class {match.group(1)} in the folder of class {wnid}: check the copy"
                )
    found = {w: sorted(next(iter(f.values())), key=lambda e: e.parts[-1]) for w, f in homes.items()}
    return layout, found, ignored


def _size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image file's header, or None when it cannot be read (the decoder says why)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def _check_size(entry: Entry, name: str, source: Path) -> None:
    """Refuse an image of the folders layout that is not 84x84."""
    size = _size(entry.read())
    if size is not None and size != (IMAGE_SIZE, IMAGE_SIZE):
        raise _wrong_size_error([f"{name} ({size[0]}x{size[1]} pixels, {_WRONG_SIZE})"], source)


def _decode_84x84(data: bytes) -> np.ndarray:
    """:func:`reptile_cli.data.h5images.decode_image` of an image that must already be 84x84."""
    size = _size(data)
    if size is not None and size != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{size[0]}x{size[1]} pixels, {_WRONG_SIZE}")
    return h5images.decode_image(data, image_size=IMAGE_SIZE, channels=CHANNELS)


def _wrong_size_error(errors: list[str], source: Path | str) -> DataError | None:
    """The error for images of the folders layout that are not 84x84, or None when there are none."""
    wrong = [e for e in errors if e.endswith(f"{_WRONG_SIZE})")]
    if not wrong:
        return None
    others = f" (and {len(errors) - len(wrong)} unreadable)" if len(errors) > len(wrong) else ""
    return DataError(
        f"{len(wrong)} image(s) of {source} are not {IMAGE_SIZE}x{IMAGE_SIZE}{others}, e.g. {first_few(wrong)}: the "
        f"{{train,val,test}}/<wnid> layout takes the {IMAGE_SIZE}x{IMAGE_SIZE} {TITLE} images; to build them from "
        "ImageNet, give an ImageNet training folder (<wnid>/<wnid>_<n>.JPEG)"
    )


SPEC = ListedDataset(name=DATASET, title=TITLE, split=SPLIT, prepared_path=prepared_path, import_copy=import_copy,
                     download=None, default_filter=DEFAULT_FILTER, source_help=_SOURCE_HELP)
DATASETS = (SPEC,)
