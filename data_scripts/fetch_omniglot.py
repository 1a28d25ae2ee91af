#!/usr/bin/env python3
"""Fetch the official Omniglot archives and the Vinyals split files, checksum-verified (standard library only).

For machines where `reptile` is not installed but the network is reachable (e.g. a cluster login node):

    python3 data_scripts/fetch_omniglot.py --dest DIR [--variant full|small] [--mirror URL_OR_DIR]

then, where `reptile` is installed:

    reptile data import omniglot DIR

DIR receives the official zips (md5-verified) and, for the full variant, splits/vinyals/{train,val,test,
trainval}.txt (sha256-verified). Files already present with the right checksum are not fetched again. Every
file is written to NAME.part and renamed only after its checksum matched, so a saved HTML error page or a
truncated download never takes the archive's name. On failure: one line on stderr, exit status 1.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import sys
import time
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlparse
from urllib.request import Request, url2pathname, urlopen

# Keep in step with reptile_cli/data/omniglot.py (a test checks they agree).
OFFICIAL_BASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
ARCHIVE_MD5 = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
    "images_background_small1.zip": "e704a628b5459e08445c13499850abc4",
    "images_background_small2.zip": "b75a71a51d3b13f821f212756fe481fd",
}
VARIANT_ARCHIVES = {
    "full": ("images_background.zip", "images_evaluation.zip"),
    "small": ("images_background_small1.zip", "images_background_small2.zip"),
}
SPLITS_BASE_URL = (
    "https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/data/omniglot/splits/vinyals/"
)
VINYALS_SPLIT_SHA256 = {
    "train.txt": "984522c194c30fb678ce53304a160a42faf5403ad4f9a67010f32dd3a35738e0",
    "val.txt": "11f99e54faee3e26f53d3231c1cceac5bf7b8730e9be31cb6dab256551dc0c1a",
    "test.txt": "845264cc5c156180828ccf17915668b17ee21424d0170df6e7d81676aa5d1204",
    "trainval.txt": "5276ae50c755596d0bff7f2284e85625695549a85ee6e36b6491ad1e5d1cc26a",
}
CHUNK = 1 << 20
RETRIES = 3


class FetchError(Exception):
    """A failure reported as one line."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def is_url(location: str) -> bool:
    return location.lower().startswith(("http://", "https://", "file://"))


def local_folder(mirror: str) -> Path | None:
    """The folder a mirror names, or None for an http(s) mirror."""
    if mirror.lower().startswith("file://"):
        return Path(url2pathname(urlparse(mirror).path))
    if is_url(mirror):
        return None
    return Path(mirror).expanduser()


def source_for(name: str, official_base: str, mirror: str | None) -> str:
    """URL or path of ``name`` on the mirror (a folder, file:// or http(s):// URL) or the official site."""
    if not mirror:
        return official_base + quote(name)
    folder = local_folder(mirror)
    if folder is None:
        return mirror.rstrip("/") + "/" + quote(name)
    if not folder.is_dir():
        raise FetchError(f"mirror folder {folder} does not exist")
    if not (folder / name).is_file():
        others = sorted(p.name for p in folder.glob(f"{Path(name).stem}.*.zip") if p.name != name)
        if others:
            raise FetchError(
                f"mirror {folder} has no {name}, only {', '.join(others)} (a repacked copy, md5 differs); "
                f"skip this script and run: reptile data import omniglot {folder}"
            )
        raise FetchError(f"mirror {folder} has no {name}; put the official file there or use another mirror")
    return str(folder / name)


def download_http(url: str, part: Path) -> None:
    """Stream ``url`` into ``part``, retrying and resuming (HTTP Range) after a dropped connection."""
    failures = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        request = Request(url, headers={"User-Agent": "fetch_omniglot.py"})
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            with urlopen(request, timeout=60) as response:
                if have and not (
                    response.status == 206
                    and response.headers.get("Content-Range", "").startswith(f"bytes {have}-")
                ):
                    have = 0
                length = response.headers.get("Content-Length")
                end = have + int(length) if length and length.isdigit() else None
                with open(part, "ab" if have else "wb") as f:
                    while chunk := response.read(CHUNK):
                        f.write(chunk)
                        have += len(chunk)
                    f.flush()
                    os.fsync(f.fileno())
                if end is None or have >= end:
                    return
                reason = f"connection closed after {have} of {end} bytes"
        except HTTPError as err:
            if 400 <= err.code < 500 and err.code not in (408, 416, 429):
                raise FetchError(f"{url}: HTTP {err.code} {err.reason}; check the URL or mirror") from None
            if err.code == 416:
                part.unlink(missing_ok=True)
            reason = f"HTTP {err.code} {err.reason}"
        except (URLError, OSError, http.client.HTTPException) as err:
            reason = str(getattr(err, "reason", None) or err) or type(err).__name__
        failures += 1
        if failures > RETRIES:
            raise FetchError(
                f"{url}: failed after {failures} attempts ({reason}); check the network or use --mirror"
            )
        log(f"  retrying {url} ({reason})")
        time.sleep(2 ** (failures - 1))


def fetch(source: str, dest: Path, algorithm: str, expected: str) -> None:
    """Fetch ``source`` to ``dest`` through ``dest.part``; rename it into place only if its checksum matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    try:
        if source.lower().startswith(("http://", "https://")):
            download_http(source, part)
        else:
            src = local_folder(source) or Path(source)
            if not src.is_file():
                raise FetchError(f"{src} not found")
            with open(src, "rb") as fin, open(part, "wb") as fout:
                shutil.copyfileobj(fin, fout, CHUNK)
                fout.flush()
                os.fsync(fout.fileno())
        got = digest(part, algorithm)
        if got != expected:
            with open(part, "rb") as f:
                head = f.read(512).lstrip().lower()
            what = (
                "the server sent an HTML page, not the file"
                if head.startswith((b"<!doctype", b"<html"))
                else "truncated or not the official file"
            )
            raise FetchError(
                f"checksum mismatch for {dest.name} from {source}: expected {algorithm} {expected}, got {got} "
                f"({what}); nothing was kept: check the mirror and try again"
            )
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", required=True, type=Path, help="folder to write the archives into")
    parser.add_argument("--variant", choices=sorted(VARIANT_ARCHIVES), default="full")
    parser.add_argument(
        "--mirror",
        default=os.environ.get("REPTILE_MIRROR"),
        help="folder, file:// or http(s):// URL holding the official archive names (default $REPTILE_MIRROR)",
    )
    parser.add_argument(
        "--splits-mirror",
        default=os.environ.get("REPTILE_SPLITS_MIRROR"),
        help="folder or URL holding train.txt, val.txt, test.txt, trainval.txt (default $REPTILE_SPLITS_MIRROR)",
    )
    parser.add_argument("--no-splits", action="store_true", help="do not fetch the Vinyals split files")
    args = parser.parse_args(argv)
    try:
        jobs = [
            (name, OFFICIAL_BASE_URL, args.mirror, args.dest / name, "md5", ARCHIVE_MD5[name])
            for name in VARIANT_ARCHIVES[args.variant]
        ]
        if args.variant == "full" and not args.no_splits:
            jobs += [
                (
                    name,
                    SPLITS_BASE_URL,
                    args.splits_mirror,
                    args.dest / "splits" / "vinyals" / name,
                    "sha256",
                    sha,
                )
                for name, sha in VINYALS_SPLIT_SHA256.items()
            ]
        for name, base, mirror, dest, algorithm, expected in jobs:
            if dest.is_file() and digest(dest, algorithm) == expected:
                log(f"{dest}: {algorithm} verified, already present")
                continue
            source = source_for(name, base, mirror)
            fetch(source, dest, algorithm, expected)
            log(f"{dest}: {algorithm} verified, fetched from {source}")
    except FetchError as err:
        log(f"error: {err}")
        return 1
    except KeyboardInterrupt:
        log("error: interrupted; run the same command again to continue")
        return 1
    log(f"done; now run: reptile data import omniglot {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
