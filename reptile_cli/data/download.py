"""Generic, dataset-independent download helpers: fetch with checksum, mirrors, safe zip extraction.

Every file lands atomically: it is written to ``<name>.part`` beside its destination, flushed and fsynced,
its checksum verified, and only then renamed into place. A saved HTML error page or a truncated archive
therefore fails the checksum and is deleted; it is never unpacked (REFERENCE.md, "Known pitfalls").
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlparse
from urllib.request import Request, url2pathname, urlopen

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from reptile_cli import __version__
from reptile_cli.errors import DataError

MIRROR_ENV = "REPTILE_MIRROR"
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
# First pause before a retry, doubled at each further attempt (tests set it to 0).
BACKOFF_S = 1.0

console = Console(stderr=True)

_URL_SCHEMES = ("http://", "https://", "file://")


class _Incomplete(Exception):
    """The server closed the connection before sending the announced number of bytes."""


# ----------------------------------------------------------------------------------------------- digests
def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks.

    Args:
        path: the file.
        algorithm: a :mod:`hashlib` name, e.g. ``"md5"`` or ``"sha256"``.

    Returns:
        The lower-case hex digest.
    """
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def file_md5(path: Path) -> str:
    """MD5 hex digest of a file (the checksum the Omniglot release publishes)."""
    return file_digest(path, "md5")


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file."""
    return file_digest(path, "sha256")


def looks_like_html(path: Path) -> bool:
    """True when the file starts like an HTML page (``<!DOCTYPE`` or ``<html``, case and whitespace ignored)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    head = head.lstrip(b"\xef\xbb\xbf").lstrip().lower()
    return head.startswith((b"<!doctype", b"<html"))


def _expected(md5: str | None, sha256: str | None) -> list[tuple[str, str]]:
    return [(algo, value.lower()) for algo, value in (("md5", md5), ("sha256", sha256)) if value]


def _first_mismatch(path: Path, md5: str | None, sha256: str | None) -> tuple[str, str, str] | None:
    """``(algorithm, expected, actual)`` of the first failing checksum, or None when all match."""
    for algo, want in _expected(md5, sha256):
        got = file_digest(path, algo)
        if got != want:
            return algo, want, got
    return None


# ----------------------------------------------------------------------------------------------- URLs
def is_url(location: str | os.PathLike) -> bool:
    """True for ``http://``, ``https://`` and ``file://`` locations; False for plain paths."""
    return str(location).lower().startswith(_URL_SCHEMES)


def url_to_path(url: str) -> Path:
    """The local path of a ``file://`` URL (``file:///data/x.zip`` -> ``/data/x.zip``)."""
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise DataError(f"file URL {url} names a remote host; use file:///absolute/path or a plain path")
    return Path(url2pathname(parsed.path))


def resolve_url(
    file_name: str,
    official_base: str,
    mirror: str | os.PathLike | None = None,
    *,
    env_var: str = MIRROR_ENV,
) -> str:
    """Where to fetch ``file_name`` from: the mirror if one is given, else the official base URL.

    Args:
        file_name: the file's name, identical on the official site and on the mirror.
        official_base: the official folder URL (with or without a trailing slash).
        mirror: replaces ``official_base``: a local directory, a ``file://`` URL or an ``http(s)://`` URL
            holding the same file names. When None, the environment variable ``env_var`` is used if set.
        env_var: the environment variable consulted when ``mirror`` is None (default ``REPTILE_MIRROR``).

    Returns:
        A URL (``http(s)://`` or ``file://``) or a plain local path, as a string; :func:`fetch` takes all three.
    """
    if mirror is None or str(mirror) == "":
        mirror = os.environ.get(env_var) or None
    base = str(mirror) if mirror is not None else official_base
    if is_url(base):
        return base.rstrip("/") + "/" + quote(file_name)
    return str(Path(base).expanduser().absolute() / file_name)


# ----------------------------------------------------------------------------------------------- fetch
def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )


def fetch(
    url: str | os.PathLike,
    dest: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    retries: int = 3,
) -> Path:
    """Fetch one file to ``dest`` and verify its checksum before it appears there.

    If ``dest`` already exists and matches the given checksum(s), nothing is fetched. Otherwise the file is
    written to ``dest.name + ".part"`` in ``dest``'s folder, flushed and fsynced, checked, and renamed into
    place with :func:`os.replace`. Over HTTP(S) the body is streamed in 1 MiB chunks; after a dropped
    connection or a 5xx answer the download is retried (pause :data:`BACKOFF_S` seconds, doubling) and resumed
    with an HTTP ``Range`` request when the server supports it. A 4xx answer (404 ...) fails at once.

    Args:
        url: ``http(s)://`` URL, ``file://`` URL or plain local path.
        dest: final path of the file; its folder is created if needed.
        md5: expected MD5 hex digest, or None.
        sha256: expected SHA-256 hex digest, or None. With neither, the file is not verified.
        progress: show a rich progress bar on stderr.
        retries: further attempts after the first one for network failures.

    Returns:
        ``dest``.

    Raises:
        DataError: not found (HTTP 4xx or missing local file), network failure after all retries, or a checksum
            mismatch (the partial file is deleted; the message says if the server sent an HTML page).
    """
    dest = Path(dest)
    source = str(url)
    if dest.is_file() and _expected(md5, sha256) and _first_mismatch(dest, md5, sha256) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        if source.lower().startswith(("http://", "https://")):
            _fetch_http(source, part, label=dest.name, progress=progress, retries=retries)
        else:
            local = url_to_path(source) if source.lower().startswith("file://") else Path(source).expanduser()
            _copy_local(local, part, label=dest.name, progress=progress)
        mismatch = _first_mismatch(part, md5, sha256)
        if mismatch is not None:
            algo, want, got = mismatch
            if looks_like_html(part):
                hint = (
                    "the server sent an HTML page (an error or login page), not the file: "
                    "check the URL or mirror"
                )
            else:
                hint = (
                    "the file is truncated or not the expected one (interrupted download, wrong mirror "
                    "or a repacked copy): check the mirror and try again"
                )
            raise DataError(
                f"checksum mismatch for {dest.name} from {source}: expected {algo} {want}, got {got}; "
                f"the download was deleted; {hint}"
            )
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    _fsync_dir(dest.parent)
    return dest


def _copy_local(src: Path, part: Path, *, label: str, progress: bool) -> None:
    if not src.is_file():
        raise DataError(f"{src} not found; check the path or mirror")
    with _progress_bar(progress) as bar, open(src, "rb") as fin, open(part, "wb") as fout:
        task = bar.add_task(label, total=src.stat().st_size)
        while chunk := fin.read(CHUNK_BYTES):
            fout.write(chunk)
            bar.advance(task, len(chunk))
        fout.flush()
        os.fsync(fout.fileno())


def _fetch_http(url: str, part: Path, *, label: str, progress: bool, retries: int) -> None:
    part.unlink(missing_ok=True)
    failures = 0
    with _progress_bar(progress) as bar:
        task = bar.add_task(label, total=None)
        while True:
            have = part.stat().st_size if part.exists() else 0
            request = Request(url, headers={"User-Agent": f"reptile-cli/{__version__}"})
            if have:
                request.add_header("Range", f"bytes={have}-")
            try:
                with urlopen(request, timeout=TIMEOUT_S) as response:
                    content_range = response.headers.get("Content-Range", "")
                    if have and not (response.status == 206 and content_range.startswith(f"bytes {have}-")):
                        have = 0  # the server ignored the Range request: start over
                    length = response.headers.get("Content-Length")
                    end = have + int(length) if length and length.isdigit() else None
                    bar.update(task, total=end, completed=have)
                    with open(part, "ab" if have else "wb") as f:
                        while chunk := response.read(CHUNK_BYTES):
                            f.write(chunk)
                            have += len(chunk)
                            bar.update(task, completed=have)
                        f.flush()
                        os.fsync(f.fileno())
                    if end is not None and have < end:
                        raise _Incomplete(f"connection closed after {have} of {end} bytes")
                    return
            except HTTPError as err:
                if err.code == 416:  # our partial file does not fit the server's: start over
                    part.unlink(missing_ok=True)
                    reason = "HTTP 416 on resume"
                elif 400 <= err.code < 500 and err.code not in (408, 429):
                    raise DataError(
                        f"download of {url} failed: HTTP {err.code} {err.reason}; "
                        "the file is not at that address: check the URL or mirror"
                    ) from None
                else:
                    reason = f"HTTP {err.code} {err.reason}"
            except (URLError, OSError, http.client.HTTPException, _Incomplete) as err:
                reason = str(getattr(err, "reason", None) or err) or type(err).__name__
            failures += 1
            if failures > retries:
                raise DataError(
                    f"download of {url} failed after {failures} attempts ({reason}); "
                    "check the network, or download the file elsewhere and use a mirror folder"
                )
            time.sleep(BACKOFF_S * 2 ** (failures - 1))


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort; not all platforms can open a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------- zips
def open_zip(path: Path) -> zipfile.ZipFile:
    """Open a zip archive for reading.

    Raises:
        DataError: the file is missing or not a valid zip (e.g. truncated).
    """
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise DataError(f"{path} not found") from None
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(
            f"{path} is not a readable zip archive ({err}); it is truncated or corrupt: fetch it again"
        ) from None


def check_zip_entry(info: zipfile.ZipInfo, archive: Path | str) -> PurePosixPath:
    """Refuse an archive entry that could write outside the folder it is extracted into.

    Args:
        info: the entry.
        archive: the archive, named in the error message.

    Returns:
        The entry's relative path (backslashes read as separators).

    Raises:
        DataError: the entry is absolute, contains ``..``, or is a symbolic link.
    """
    name = info.filename.replace("\\", "/")
    rel = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        problem = "is an absolute path"
    elif ".." in rel.parts:
        problem = "contains '..'"
    elif stat.S_ISLNK(info.external_attr >> 16):
        problem = "is a symbolic link"
    else:
        return rel
    raise DataError(
        f"refusing to unpack {archive}: entry {info.filename!r} {problem}; "
        "the archive is malformed or malicious: fetch it from the official source"
    )


def safe_extract_zip(zip_path: Path, target_dir: Path) -> list[Path]:
    """Extract a zip archive, refusing entries that would land outside ``target_dir``.

    Every entry is checked before anything is written. The archive is unpacked into a temporary sibling
    folder which is renamed to ``target_dir`` at the end, so a failure leaves nothing half-unpacked.

    Args:
        zip_path: the archive.
        target_dir: the folder to create; it must not exist or be empty.

    Returns:
        The extracted files (not folders), as paths under ``target_dir``, in archive order.

    Raises:
        DataError: an entry is absolute, contains ``..``, resolves outside ``target_dir`` or is a symbolic
            link; the archive is corrupt; or ``target_dir`` exists and is not empty.
    """
    zip_path, target_dir = Path(zip_path), Path(target_dir)
    if target_dir.exists() and (not target_dir.is_dir() or any(target_dir.iterdir())):
        raise DataError(f"cannot unpack {zip_path.name}: {target_dir} already exists; remove it first")
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    with open_zip(zip_path) as zf:
        entries = [(info, check_zip_entry(info, zip_path)) for info in zf.infolist()]
        tmp = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.unpack-", dir=target_dir.parent))
        tmp_resolved = tmp.resolve()
        try:
            files = []
            for info, rel in entries:
                out = tmp.joinpath(*rel.parts)
                if not out.resolve().is_relative_to(tmp_resolved):
                    raise DataError(
                        f"refusing to unpack {zip_path}: entry {info.filename!r} resolves outside the target "
                        "folder; the archive is malformed or malicious"
                    )
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as fin, open(out, "wb") as fout:
                    shutil.copyfileobj(fin, fout, CHUNK_BYTES)
                files.append(rel)
            if target_dir.exists():
                target_dir.rmdir()
            os.replace(tmp, target_dir)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(
                f"cannot unpack {zip_path} ({err}); the archive is truncated or corrupt: fetch it again"
            ) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return [target_dir.joinpath(*rel.parts) for rel in files]
