#!/usr/bin/env python3
"""Build Mini-ImageNet (84x84 JPEGs) from an ImageNet training folder and the split CSVs (stdlib + Pillow).

For machines that hold ImageNet (ILSVRC-2012) but where `reptile` is not installed:

    python3 data_scripts/make_miniimagenet.py --imagenet ILSVRC2012/train --splits CSV_DIR --out DIR

then, where `reptile` is installed (DIR may first be zipped or copied):

    reptile data import miniimagenet DIR

CSV_DIR holds the Ravi & Larochelle split files train.csv, val.csv, test.csv (``filename,label``, e.g.
``n0153282900000005.jpg,n01532829``); their published sha256s are checked, and other files are accepted with
a warning. DIR receives ``{train,val,test}/<wnid>/<filename>`` and a copy of the three CSVs.

File names map to ImageNet files as in the widely used Mini-ImageNet scripts (A. Berenguel's
create_miniImagenet.py, yaoyao-liu/mini-imagenet-tools): the name is the wnid followed by an 8-digit index k;
the image is the k-th (1-based) of that class's files ``<wnid>_<n>.JPEG`` sorted by the number n (as a number,
not as text). The class's files are taken from ``IMAGENET/<wnid>/`` or, if that folder does not exist, from
``IMAGENET/<wnid>_*`` (all classes extracted into one folder). The class folder must be complete, as extracted
from ILSVRC-2012: a missing file shifts every later index.

Each image is decoded, converted to RGB (transparency composited on white), resized to 84x84 with Lanczos
(as the shared mirror's copy was made; images holding only 0 and 255 use NEAREST, as `reptile` does) and
saved as JPEG with Pillow's default quality 75 (the mirror's files carry the quality-75 tables). Every file is
written as NAME.part and renamed when complete; files already present and readable are kept, so an
interrupted run resumes. Exit status 0 when all listed images were made, 1 otherwise (one line on stderr
naming the first few problems); with --allow-partial, images missing from the ImageNet folder are only counted.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import re
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# Keep in step with reptile_cli/data/miniimagenet.py (a test checks they agree).
RAVI_SPLIT_SHA256 = {
    "train.csv": "498519cd8e49ce97ed26a4a3638966698ae41ab35e9c68538319fc9b46ba7d2f",
    "val.csv": "5658a59921ca027ee76af92949869c5d6f41d77592ff3b18db325a9d10c893b9",
    "test.csv": "2b7cfa78342995761a572a8158e539bc4e0a80f9bbd7d00c1e17a460fbbb93fa",
}
SPLITS = ("train", "val", "test")
IMAGE_SIZE = 84
JPEG_QUALITY = 75
FILTERS = {
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
}
_CSV_NAME_RE = re.compile(r"(n\d{8})(\d{8})\.jpg")
_IMAGENET_RE = re.compile(r"(n\d{8})_(\d+)\.(?:jpe?g|png)", re.IGNORECASE)


class Failure(Exception):
    """A problem worth one line on stderr and exit status 1."""


def read_splits(folder: Path) -> tuple[dict[str, dict[str, list[str]]], bool]:
    """``{split: {wnid: [file names in CSV order]}}`` and whether the files are the published ones."""
    out: dict[str, dict[str, list[str]]] = {}
    official = True
    for split in SPLITS:
        path = folder / f"{split}.csv"
        if not path.is_file():
            raise Failure(f"no {path}; --splits must be the folder holding train.csv, val.csv and test.csv")
        data = path.read_bytes()
        official &= hashlib.sha256(data).hexdigest() == RAVI_SPLIT_SHA256[path.name]
        rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
        if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
            raise Failure(f"{path} does not start with the header filename,label")
        classes: dict[str, list[str]] = {}
        for line, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            match = _CSV_NAME_RE.fullmatch(row[0].strip()) if len(row) == 2 else None
            if not match or match.group(1) != row[1].strip():
                raise Failure(f"{path} line {line}: {','.join(row)!r} is not <wnid><8 digits>.jpg,<wnid>")
            classes.setdefault(match.group(1), []).append(match.group(0))
        out[split] = classes
    return out, official


def class_files(imagenet: Path, wnid: str, flat: list[str] | None) -> list[Path]:
    """The class's ImageNet files sorted by their number n (``<wnid>_<n>.JPEG``), then by name."""
    folder = imagenet / wnid
    if folder.is_dir():
        names = [n for n in os.listdir(folder) if _IMAGENET_RE.fullmatch(n)]
        base = folder
    else:
        names = [n for n in (flat or []) if n.startswith(wnid + "_")]
        base = imagenet
    found = []
    for name in names:
        match = _IMAGENET_RE.fullmatch(name)
        if match and match.group(1) == wnid:
            found.append((int(match.group(2)), name))
    return [base / name for _, name in sorted(found)]


def convert(data: bytes, size: int, resize_filter: str) -> Image.Image:
    """Decode fully, convert to RGB (alpha on white), resize to size x size."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        if img.mode == "1":
            out = img.resize((size, size), Image.Resampling.NEAREST) if img.size != (size, size) else img
            return out.convert("RGB")
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
            rgba = img.convert("RGBA")
            out = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        else:
            out = img.convert("RGB")
    if out.size == (size, size):
        return out
    histogram = out.histogram()  # 256 counts per band
    binary = not any(any(histogram[b * 256 + 1 : b * 256 + 255]) for b in range(len(out.getbands())))
    method = Image.Resampling.NEAREST if binary else FILTERS[resize_filter]
    return out.resize((size, size), method)


def readable(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            img.load()
        return True
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError):
        return False


def make_one(src: Path, dest: Path, size: int, resize_filter: str) -> str | None:
    """Write one image; None on success, else the reason."""
    if dest.is_file() and readable(dest):
        return None
    try:
        img = convert(src.read_bytes(), size, resize_filter)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        return f"{src} is unreadable ({str(err) or type(err).__name__})"
    part = dest.with_name(dest.name + ".part")
    img.save(part, "JPEG", quality=JPEG_QUALITY)
    os.replace(part, dest)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--imagenet", type=Path, required=True, help="ImageNet training folder (<wnid>/<wnid>_<n>.JPEG)"
    )
    parser.add_argument("--splits", type=Path, required=True, help="folder holding train.csv, val.csv, test.csv")
    parser.add_argument("--out", type=Path, required=True, help="output folder ({train,val,test}/<wnid>/*.jpg)")
    parser.add_argument("--size", type=int, default=IMAGE_SIZE, help="output width and height (default 84)")
    parser.add_argument("--filter", choices=sorted(FILTERS), default="lanczos", help="resize filter (default lanczos)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="parallel threads")
    parser.add_argument("--allow-partial", action="store_true", help="exit 0 even if ImageNet lacks some images")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    args = parser.parse_args(argv)
    try:
        if not args.imagenet.is_dir():
            raise Failure(f"{args.imagenet} is not a folder; give the ImageNet training folder")
        splits, official = read_splits(args.splits)
        if not official and not args.quiet:
            print(
                "note: the split files are not the published Ravi & Larochelle ones (sha256 differs)", file=sys.stderr
            )
        flat = None
        if not any((args.imagenet / w).is_dir() for classes in splits.values() for w in classes):
            flat = sorted(os.listdir(args.imagenet))
        jobs, missing = [], []
        for split, classes in splits.items():
            for wnid, names in classes.items():
                files = class_files(args.imagenet, wnid, flat)
                dest_dir = args.out / split / wnid
                dest_dir.mkdir(parents=True, exist_ok=True)
                for name in names:
                    index = int(name[len(wnid) : len(wnid) + 8])
                    if 1 <= index <= len(files):
                        jobs.append((files[index - 1], dest_dir / name))
                    else:
                        missing.append(f"{split}/{wnid}/{name} (class has {len(files)} files, index {index})")
        total = len(jobs) + len(missing)
        failures = []
        with ThreadPoolExecutor(max(1, args.workers)) as pool:
            for done, result in enumerate(pool.map(lambda j: make_one(*j, args.size, args.filter), jobs), 1):
                if result:
                    failures.append(result)
                if not args.quiet and (done % 1000 == 0 or done == len(jobs)):
                    print(f"\r{done:,}/{len(jobs):,} images", end="", file=sys.stderr, flush=True)
        if not args.quiet and jobs:
            print(file=sys.stderr)
        for split in SPLITS:
            shutil.copyfile(args.splits / f"{split}.csv", args.out / f"{split}.csv")
        if failures:
            raise Failure(f"{len(failures)} ImageNet image(s) unreadable, e.g. {'; '.join(failures[:3])}")
        if missing and not args.allow_partial:
            raise Failure(
                f"{len(missing)} of {total:,} listed images are not in {args.imagenet}, e.g. {'; '.join(missing[:3])}; "
                "is the ImageNet folder complete? (--allow-partial accepts it)"
            )
        if not args.quiet:
            print(
                f"wrote {len(jobs):,} of {total:,} images to {args.out}"
                + (f" ({len(missing):,} missing)" if missing else ""),
                file=sys.stderr,
            )
        return 0
    except Failure as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
