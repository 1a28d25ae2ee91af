"""Datasets defined by published class lists (CIFAR-FS, FC100, CUB, tieredImageNet): the small interface
:mod:`reptile_cli.data.datasets` and the CLI call, and the class lists shipped with the package.

Each such dataset module (:mod:`reptile_cli.data.cifar`, :mod:`reptile_cli.data.cub`,
:mod:`reptile_cli.data.tiered`) exports ``DATASETS``, a tuple of :class:`ListedDataset`. Its importer writes
one HDF5 file in the shared format (:mod:`reptile_cli.data.h5images`) whose ``class_split`` records each
class's split, so opening it needs no list (``dataset.split`` names the published split).

The lists live in ``reptile_cli/data/class_lists/<list>/{train,val,test}.txt`` (one class per line; ``#``
starts a comment) with ``SOURCES.md`` saying where each came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from reptile_cli.data.h5images import SPLIT_NAMES
from reptile_cli.errors import DataError


@dataclass(frozen=True)
class ListedDataset:
    """One dataset picked by ``dataset=<name>`` and prepared by ``reptile data import|download <name>``.

    Attributes:
        name: the config / CLI name (``cifarfs``).
        title: for messages (``CIFAR-FS``).
        split: the value of ``dataset.split`` that selects the published split (``bertinetto``).
        prepared_path: ``(root, resize_filter) -> Path`` of the prepared HDF5 file.
        import_copy: ``(root, paths: list[Path], *, resize_filter, allow_partial, progress) -> Path``; prints
            its report, raises DataError with a one-line message on bad input, leaves nothing half-written.
        download: ``(root, mirror, *, resize_filter, progress) -> Path`` fetching the official archive
            (checksummed), or None where no official download exists.
        default_filter: resize filter used when none is given.
        source_help: what ``reptile data import <name>`` takes, for hints (``"the CUB_200_2011.tgz archive
            or its extracted folder"``).
        resizes: whether preparing resizes images (False: they are stored at their own size, and the CLI refuses
            ``--resize-filter``).
    """

    name: str
    title: str
    split: str
    prepared_path: Callable[..., Path]
    import_copy: Callable[..., Path]
    download: Callable[..., Path] | None
    default_filter: str
    source_help: str
    resizes: bool = True

    def hint(self, root: Path) -> str:
        """How to prepare this dataset under ``root`` (for "no prepared dataset" errors)."""
        how = f"run `reptile data import {self.name} PATH --root {root}` ({self.source_help})"
        if self.download is not None:
            how = f"run `reptile data download {self.name} --root {root}` (--mirror DIR offline) or " + how[4:]
        return how


def class_lists(list_name: str) -> dict[str, list[str]]:
    """The shipped class lists ``{"train": [...], "val": [...], "test": [...]}`` of ``list_name`` (in file
    order).

    Raises:
        DataError: a list file is missing, or a class is listed twice or in two splits (the package is broken).
    """
    folder = resources.files("reptile_cli.data") / "class_lists" / list_name
    lists: dict[str, list[str]] = {}
    for split in SPLIT_NAMES:
        entry = folder / f"{split}.txt"
        if not entry.is_file():
            raise DataError(f"the class list {list_name}/{split}.txt is missing from the installed package: "
                            f"reinstall reptile-cli")
        lines = (line.split("#", 1)[0].strip() for line in entry.read_text(encoding="utf-8").splitlines())
        lists[split] = [line for line in lines if line]
    check_disjoint_lists(lists, f"the shipped {list_name} lists")
    return lists


def check_disjoint_lists(lists: dict[str, list[str]], where: str) -> None:
    """Refuse class lists where a class appears twice, in one split or in two.

    Raises:
        DataError: naming the first class found twice and its splits.
    """
    seen: dict[str, str] = {}
    for split, names in lists.items():
        for name in names:
            if name in seen:
                both = f"twice in {split!r}" if seen[name] == split else f"in both {seen[name]!r} and {split!r}"
                raise DataError(f"class {name} is {both} in {where}: a class may sit in one split only; fix the "
                                f"lists")
            seen[name] = split
