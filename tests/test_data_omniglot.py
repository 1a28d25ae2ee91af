"""Omniglot data layer: download (mirror folder, file://, local HTTP server), checksums, safe unpacking,
import of a copy on disk, the prepared HDF5 format, and the standalone fetch script.

Real data comes from the shared mirror ../shared/data (skipped when absent); nothing reaches the internet.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import h5py
import numpy as np
import pytest

from reptile_cli.data import download as dl
from reptile_cli.data import omniglot
from reptile_cli.data.paths import default_data_root
from reptile_cli.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OMNI = SHARED / "omniglot"
SPLITS = SHARED / "splits" / "omniglot_vinyals"
SCRIPT = REPO / "data_scripts" / "fetch_omniglot.py"
SMALL = ("images_background_small1.zip", "images_background_small2.zip")

needs_mirror = pytest.mark.skipif(not (OMNI / SMALL[0]).is_file(), reason=f"shared data mirror {OMNI} absent")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """No mirror or data root from the caller's environment, no proxy for 127.0.0.1, no retry pauses."""
    for var in ("REPTILE_MIRROR", "REPTILE_SPLITS_MIRROR", "REPTILE_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(dl, "BACKOFF_S", 0.0)


def read_h5(path: Path) -> dict:
    with h5py.File(path, "r") as h5:
        return {
            "images": h5["images"][:],
            "class_start": h5["class_start"][:],
            "class_names": list(h5["class_names"].asstr()[:]),
            "class_groups": list(h5["class_groups"].asstr()[:]),
            "attrs": dict(h5.attrs),
            "images_dtype": h5["images"].dtype,
        }


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message
    return message


# ----------------------------------------------------------------------------------------------- HTTP server
class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        srv = self.server
        name = unquote(self.path.lstrip("/"))
        srv.requests.append((name, self.headers.get("Range")))
        path = srv.root / name
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if self.headers.get("Range") and srv.ranges:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in srv.drop_once:
            srv.drop_once.discard(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # the deliberately dropped connection


@pytest.fixture
def http_mirror(tmp_path):
    """An HTTP server on 127.0.0.1 serving a temporary copy of the small archives (supports Range)."""
    served = tmp_path / "served"
    served.mkdir()
    for name in SMALL:
        shutil.copy(OMNI / name, served / name)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.root, server.requests, server.drop_once, server.ranges = served, [], set(), True
    server.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def small_download(tmp_path_factory):
    """The small variant downloaded once from the mirror folder."""
    if not (OMNI / SMALL[0]).is_file():
        pytest.skip(f"shared data mirror {OMNI} absent")
    root = tmp_path_factory.mktemp("small-dl")
    path = omniglot.download(root, "small", mirror=OMNI, progress=False)
    return root, path


# ----------------------------------------------------------------------------------------------- download
@needs_mirror
def test_download_small_from_mirror_folder(small_download):
    root, path = small_download
    assert path == root / "omniglot" / "omniglot_small.h5"
    for name in SMALL:
        assert dl.file_md5(root / "omniglot" / "downloads" / name) == omniglot.ARCHIVE_MD5[name]
    h = read_h5(path)
    names = h["class_names"]
    assert h["images"].shape == (4840, 28, 28, 1) and h["images_dtype"] == np.uint8
    assert len(names) == 242 and len(set(names)) == 242 and names == sorted(names)
    assert sum(n.startswith("Greek/") for n in names) == 24
    assert sum(n.startswith("Latin/") for n in names) == 26
    assert {n.split("/")[0] for n in names} == omniglot.SMALL_ALPHABETS
    assert "Greek/character03" in names
    assert h["class_start"].dtype == np.int64 and h["class_start"][0] == 0 and h["class_start"][-1] == 4840
    assert set(np.diff(h["class_start"]).tolist()) == {20}
    assert set(h["class_groups"]) == {"images_background_small1", "images_background_small2"}
    assert h["class_groups"][names.index("Greek/character01")] == "images_background_small1"
    assert h["class_groups"][names.index("Tagalog/character01")] == "images_background_small2"
    attrs = h["attrs"]
    assert attrs["format"] == "reptile-cli/images" and attrs["format_version"] == 1
    assert attrs["dataset"] == "omniglot" and attrs["variant"] == "small"
    assert attrs["image_size"] == 28 and attrs["channels"] == 1 and attrs["resize_filter"] == "nearest"
    assert attrs["num_classes"] == 242 and attrs["num_images"] == 4840
    assert len(attrs["content_sha256"]) == 64


@needs_mirror
def test_nearest_resize_gives_binary_images_with_white_background(small_download):
    images = read_h5(small_download[1])["images"]
    assert set(np.unique(images).tolist()) == {0, 255}
    assert (images == 255).mean() > 0.8  # white background dominates
    assert (images == 0).reshape(len(images), -1).any(axis=1).all()  # every image has ink
    # The same as decoding the PNG directly: first image of the first class (Balinese/character01).
    with zipfile.ZipFile(OMNI / SMALL[0]) as zf:
        png = zf.read("images_background_small1/Balinese/character01/0108_01.png")
    assert np.array_equal(images[0], omniglot.preprocess_png(png))


@needs_mirror
def test_download_small_from_file_url(tmp_path, small_download):
    path = omniglot.download(tmp_path, "small", mirror=OMNI.as_uri(), progress=False)
    h = read_h5(path)
    assert h["attrs"]["num_classes"] == 242 and h["images"].shape[0] == 4840
    assert h["attrs"]["content_sha256"] == read_h5(small_download[1])["attrs"]["content_sha256"]
    assert np.array_equal(h["images"], read_h5(small_download[1])["images"])


@needs_mirror
def test_download_is_idempotent(tmp_path, small_download):
    root = tmp_path
    path = omniglot.download(root, "small", mirror=OMNI, progress=False)
    archive = root / "omniglot" / "downloads" / SMALL[0]
    before = (path.stat().st_mtime_ns, archive.stat().st_mtime_ns)
    # A mirror that does not exist proves nothing is fetched.
    again = omniglot.download(root, "small", mirror=tmp_path / "nowhere", progress=False)
    assert again == path and (path.stat().st_mtime_ns, archive.stat().st_mtime_ns) == before
    # Without the prepared file, the kept archives are re-prepared, still without fetching.
    path.unlink()
    omniglot.download(root, "small", mirror=tmp_path / "nowhere", progress=False)
    assert archive.stat().st_mtime_ns == before[1]
    assert read_h5(path)["attrs"]["num_classes"] == 242


@needs_mirror
def test_download_over_http(tmp_path, http_mirror, small_download):
    path = omniglot.download(tmp_path / "root", "small", mirror=http_mirror.base_url, progress=False)
    assert read_h5(path)["attrs"]["content_sha256"] == read_h5(small_download[1])["attrs"]["content_sha256"]
    assert sorted(name for name, _ in http_mirror.requests) == sorted(SMALL)


@needs_mirror
def test_http_404_is_an_immediate_clear_error(tmp_path, http_mirror):
    with pytest.raises(DataError) as err:
        dl.fetch(f"{http_mirror.base_url}/missing.zip", tmp_path / "out" / "missing.zip", progress=False)
    message = one_line(err)
    assert "404" in message and "missing.zip" in message
    assert http_mirror.requests == [("missing.zip", None)]  # no retries
    assert all_files(tmp_path / "out") == []
    (http_mirror.root / SMALL[1]).unlink()
    with pytest.raises(DataError) as err:
        omniglot.download(tmp_path / "root", "small", mirror=http_mirror.base_url, progress=False)
    assert "404" in one_line(err) and "reptile data import omniglot" in str(err.value)


@needs_mirror
@pytest.mark.parametrize("ranges", [True, False])
def test_dropped_connection_is_retried(tmp_path, http_mirror, small_download, ranges):
    """Resumed with a Range request; a server without Range support sends it all again."""
    http_mirror.drop_once.add(SMALL[0])
    http_mirror.ranges = ranges
    path = omniglot.download(tmp_path / "root", "small", mirror=http_mirror.base_url, progress=False)
    assert read_h5(path)["attrs"]["num_classes"] == 242
    small1 = [rng for name, rng in http_mirror.requests if name == SMALL[0]]
    size = (OMNI / SMALL[0]).stat().st_size
    assert small1 == [None, f"bytes={size // 2}-"]  # asked to resume where the connection dropped
    assert (
        dl.file_md5(tmp_path / "root" / "omniglot" / "downloads" / SMALL[0]) == omniglot.ARCHIVE_MD5[SMALL[0]]
    )


@needs_mirror
@pytest.mark.parametrize("corruption", ["html", "truncated"])
def test_bad_download_fails_checksum_and_leaves_nothing(tmp_path, http_mirror, corruption):
    target = http_mirror.root / SMALL[0]
    if corruption == "html":
        target.write_text("<!DOCTYPE html>\n<html><body>Rate limit exceeded</body></html>\n")
    else:
        target.write_bytes((OMNI / SMALL[0]).read_bytes()[:500_000])
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        omniglot.download(root, "small", mirror=http_mirror.base_url, progress=False)
    message = one_line(err)
    assert SMALL[0] in message and omniglot.ARCHIVE_MD5[SMALL[0]] in message
    assert hashlib.md5(target.read_bytes()).hexdigest() in message
    if corruption == "html":
        assert "HTML" in message
    else:
        assert "truncated" in message and "HTML" not in message
    assert all_files(root) == []  # no archive, no .part, nothing unpacked, no .h5
    assert [p.name for p in root.rglob("*") if p.is_dir() and "images" in p.name] == []


@needs_mirror
def test_full_variant_from_shared_mirror_suggests_import(tmp_path):
    with pytest.raises(DataError) as err:
        omniglot.download(tmp_path, "full", mirror=OMNI, progress=False)
    message = one_line(err)
    assert "images_background.zip" in message and "images_background.repacked.zip" in message
    assert f"reptile data import omniglot {OMNI}" in message
    assert all_files(tmp_path) == []


def test_fetch_local_path_verifies_checksum(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello omniglot")
    good = hashlib.sha256(b"hello omniglot").hexdigest()
    out = dl.fetch(src, tmp_path / "out" / "a.bin", sha256=good, progress=False)
    assert out.read_bytes() == b"hello omniglot"
    with pytest.raises(DataError) as err:
        dl.fetch(src, tmp_path / "out" / "b.bin", md5="0" * 32, progress=False)
    assert "b.bin" in one_line(err) and "0" * 32 in str(err.value)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.bin"]
    with pytest.raises(DataError, match="not found"):
        dl.fetch(tmp_path / "absent.bin", tmp_path / "out" / "c.bin", progress=False)


def test_resolve_url(monkeypatch, tmp_path):
    base = "https://example.org/python/"
    assert dl.resolve_url("a.zip", base, None) == "https://example.org/python/a.zip"
    assert dl.resolve_url("a.zip", base, "http://127.0.0.1:8000/m") == "http://127.0.0.1:8000/m/a.zip"
    assert dl.resolve_url("a.zip", base, "file:///srv/m/") == "file:///srv/m/a.zip"
    assert dl.resolve_url("a.zip", base, tmp_path) == str(tmp_path / "a.zip")
    monkeypatch.setenv("REPTILE_MIRROR", str(tmp_path))
    assert dl.resolve_url("a.zip", base, None) == str(tmp_path / "a.zip")
    assert dl.resolve_url("a.zip", base, None, env_var="OTHER_VAR") == "https://example.org/python/a.zip"


def test_default_data_root(monkeypatch, tmp_path):
    assert default_data_root() == Path.home() / ".cache" / "reptile"
    monkeypatch.setenv("REPTILE_DATA", str(tmp_path))
    assert default_data_root() == tmp_path


# ----------------------------------------------------------------------------------------------- safe unpack
def _zip_with(path: Path, entries: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize(
    "bad, symlink",
    [("../x", None), ("ok/../../x", None), ("/tmp/abs_x", None), (None, "ok/link")],
)
def test_safe_extract_refuses_unsafe_entries(tmp_path, bad, symlink):
    work = tmp_path / "work"
    work.mkdir()
    entries = {"ok/a.txt": b"a", "ok/b.txt": b"b"}
    if bad:
        entries[bad] = b"evil"
    archive = _zip_with(tmp_path / "evil.zip", entries, symlink)
    with pytest.raises(DataError) as err:
        dl.safe_extract_zip(archive, work / "out")
    assert repr(bad or symlink) in one_line(err)
    assert list(work.iterdir()) == []  # neither the target nor a temporary folder is left
    assert not (tmp_path / "x").exists() and not Path("/tmp/abs_x").exists()
    # Import reads zips directly and refuses the same entries.
    with pytest.raises(DataError, match="refusing"):
        omniglot.import_copy(tmp_path / "root", [archive], progress=False)


def test_safe_extract_extracts_atomically(tmp_path):
    archive = _zip_with(tmp_path / "good.zip", {"top/a.txt": b"a", "top/sub/b.txt": b"bb"})
    files = dl.safe_extract_zip(archive, tmp_path / "out")
    assert files == [tmp_path / "out" / "top" / "a.txt", tmp_path / "out" / "top" / "sub" / "b.txt"]
    assert (tmp_path / "out" / "top" / "sub" / "b.txt").read_bytes() == b"bb"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.zip", "out"]
    with pytest.raises(DataError, match="already exists"):
        dl.safe_extract_zip(archive, tmp_path / "out")
    truncated = tmp_path / "trunc.zip"
    truncated.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(DataError, match="corrupt"):
        dl.safe_extract_zip(truncated, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


# ----------------------------------------------------------------------------------------------- import
@needs_mirror
def test_import_small_archives_together(tmp_path, small_download):
    path, report = omniglot.import_copy(tmp_path, [OMNI / SMALL[0], OMNI / SMALL[1]], progress=False)
    assert path == tmp_path / "omniglot" / "omniglot_small.h5"
    assert (report.variant, report.alphabets, report.classes, report.images) == ("small", 8, 242, 4840)
    assert report.duplicate_classes_merged == 50  # Greek (24) and Latin (26) are in both archives
    assert report.duplicate_files_merged == 1000
    assert report.groups == {"images_background_small1": 136, "images_background_small2": 106}
    assert report.ignored_files == 0 and not report.reused
    downloaded = read_h5(small_download[1])
    imported = read_h5(path)
    assert report.content_sha256 == downloaded["attrs"]["content_sha256"]
    assert imported["class_names"] == downloaded["class_names"]
    assert np.array_equal(imported["images"], downloaded["images"])
    assert any("merged 1000" in line for line in report.summary())
    # A second import of the same content keeps the file.
    mtime = path.stat().st_mtime_ns
    _, again = omniglot.import_copy(tmp_path, [OMNI / SMALL[1], OMNI / SMALL[0]], progress=False)
    assert again.reused and path.stat().st_mtime_ns == mtime
    listed = omniglot.list_prepared(tmp_path)
    assert [(d["name"], d["variant"], d["classes"], d["images"], d["resize_filter"]) for d in listed] == [
        ("omniglot_small.h5", "small", 242, 4840, "nearest")
    ]
    assert listed[0]["size_bytes"] == path.stat().st_size


@needs_mirror
def test_import_extracted_folders_matches_zips(tmp_path, small_download):
    for name in SMALL:
        dl.safe_extract_zip(OMNI / name, tmp_path / "copy" / Path(name).stem)
    (tmp_path / "copy" / "notes.txt").write_text("not a drawing")
    _, report = omniglot.import_copy(tmp_path / "root", [tmp_path / "copy"], progress=False)
    assert (report.variant, report.classes, report.duplicate_files_merged, report.ignored_files) == (
        "small",
        242,
        1000,
        1,
    )
    assert report.content_sha256 == read_h5(small_download[1])["attrs"]["content_sha256"]


@needs_mirror
def test_import_incomplete_sets_are_refused(tmp_path):
    with pytest.raises(DataError) as err:
        omniglot.import_copy(tmp_path / "root", [OMNI / SMALL[0]], progress=False)
    message = one_line(err)
    assert "found 5 alphabets and 136 characters" in message and "images_background_small2" in message
    # A character with a missing drawing (Tagalog is only in small2).
    dl.safe_extract_zip(OMNI / SMALL[1], tmp_path / "copy2")
    (tmp_path / "copy2" / "images_background_small2" / "Tagalog" / "character02" / "0894_05.png").unlink()
    with pytest.raises(DataError) as err:
        omniglot.import_copy(tmp_path / "root", [OMNI / SMALL[0], tmp_path / "copy2"], progress=False)
    message = one_line(err)
    assert "Tagalog/character02 (19 drawings)" in message
    assert not (tmp_path / "root" / "omniglot").exists()


@needs_mirror
def test_import_conflicting_duplicates_are_an_error(tmp_path):
    with zipfile.ZipFile(OMNI / SMALL[1]) as zf:
        other = zf.read("images_background_small2/Greek/character01/0394_02.png")
    fake = tmp_path / "copy" / "images_background_small2" / "Greek" / "character01" / "0394_01.png"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(other)
    with pytest.raises(DataError) as err:
        omniglot.import_copy(tmp_path / "root", [OMNI / SMALL[0], tmp_path / "copy"], progress=False)
    message = one_line(err)
    assert "two different copies of Greek/character01/0394_01.png" in message


@needs_mirror
def test_import_allow_partial(tmp_path):
    path, report = omniglot.import_copy(tmp_path, [OMNI / SMALL[0]], progress=False, allow_partial=True)
    assert path.name == "omniglot_partial.h5"
    assert (report.variant, report.alphabets, report.classes, report.images) == ("partial", 5, 136, 2720)
    assert read_h5(path)["attrs"]["variant"] == "partial"


@needs_mirror
def test_lanczos_filter_gets_its_own_file(tmp_path):
    path, _ = omniglot.import_copy(
        tmp_path, [OMNI / SMALL[0], OMNI / SMALL[1]], progress=False, resize_filter="lanczos"
    )
    assert path.name == "omniglot_small_lanczos.h5"
    h = read_h5(path)
    assert h["attrs"]["resize_filter"] == "lanczos" and h["images"].shape == (4840, 28, 28, 1)
    assert len(np.unique(h["images"])) > 2  # grey levels
    assert np.median(h["images"]) == 255
    with pytest.raises(DataError, match="unknown resize filter"):
        omniglot.import_copy(tmp_path, [OMNI / SMALL[0]], progress=False, resize_filter="cubic")


# ----------------------------------------------------------------------------------------------- splits, script
@pytest.mark.skipif(not SPLITS.is_dir(), reason="shared splits absent")
def test_download_splits_from_mirror(tmp_path):
    folder = omniglot.download_splits(tmp_path, mirror=SPLITS, progress=False)
    assert folder == tmp_path / "omniglot" / "splits" / "vinyals"
    lines = {n: (folder / f"{n}.txt").read_text().split() for n in ("train", "val", "test", "trainval")}
    assert (len(lines["train"]), len(lines["val"]), len(lines["test"])) == (4112, 688, 1692)
    assert lines["train"][0] == "Angelic/character01/rot000"


def _load_script():
    spec = importlib.util.spec_from_file_location("fetch_omniglot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_constants_match_package():
    script = _load_script()
    assert script.ARCHIVE_MD5 == omniglot.ARCHIVE_MD5
    assert script.VINYALS_SPLIT_SHA256 == omniglot.VINYALS_SPLIT_SHA256
    assert script.OFFICIAL_BASE_URL == omniglot.OFFICIAL_BASE_URL
    assert script.SPLITS_BASE_URL == omniglot.SPLITS_BASE_URL
    assert {k: tuple(v) for k, v in script.VARIANT_ARCHIVES.items()} == omniglot.VARIANT_ARCHIVES


@needs_mirror
def test_standalone_script_with_mirror_folder(tmp_path, small_download):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPTILE_")}
    dest = tmp_path / "dest"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--dest", str(dest), "--variant", "small", "--mirror", str(OMNI)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in dest.iterdir()) == sorted(SMALL)
    assert all(dl.file_md5(dest / n) == omniglot.ARCHIVE_MD5[n] for n in SMALL)
    assert run.stderr.count("md5 verified, fetched") == 2 and "reptile data import omniglot" in run.stderr
    again = subprocess.run(
        [sys.executable, str(SCRIPT), "--dest", str(dest), "--variant", "small", "--mirror", str(OMNI)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert again.returncode == 0 and again.stderr.count("already present") == 2
    _, report = omniglot.import_copy(tmp_path / "root", [dest], progress=False)
    assert report.content_sha256 == read_h5(small_download[1])["attrs"]["content_sha256"]

    full = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--dest",
            str(tmp_path / "full"),
            "--mirror",
            str(OMNI),
            "--splits-mirror",
            str(SPLITS),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert full.returncode == 1
    assert full.stderr.count("\n") == 1 and full.stderr.startswith("error: ")
    assert "repacked" in full.stderr and "reptile data import omniglot" in full.stderr


@needs_mirror
def test_standalone_script_splits_are_imported(tmp_path):
    script = _load_script()
    dest = tmp_path / "dest"
    for name, sha in script.VINYALS_SPLIT_SHA256.items():
        script.fetch(
            script.source_for(name, script.SPLITS_BASE_URL, str(SPLITS)),
            dest / "splits" / "vinyals" / name,
            "sha256",
            sha,
        )
    for name in SMALL:
        shutil.copy(OMNI / name, dest / name)
    _, report = omniglot.import_copy(tmp_path / "root", [dest], progress=False)
    assert report.split_files == ["test.txt", "train.txt", "trainval.txt", "val.txt"]
    assert report.ignored_files == 0
    assert (omniglot.splits_dir(tmp_path / "root") / "val.txt").read_bytes() == (
        SPLITS / "val.txt"
    ).read_bytes()


# ----------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
@pytest.mark.skipif(not (OMNI / "images_background.repacked.zip").is_file(), reason="repacked set absent")
def test_import_full_repacked_set(tmp_path):
    """Decodes all 32,460 PNGs (about 5 s on 2 cores)."""
    repacked = [OMNI / "images_background.repacked.zip", OMNI / "images_evaluation.repacked.zip"]
    path, report = omniglot.import_copy(tmp_path, repacked, progress=False)
    assert path == tmp_path / "omniglot" / "omniglot.h5"
    assert (report.variant, report.alphabets, report.classes, report.images) == ("full", 50, 1623, 32460)
    assert report.groups == {"images_background": 964, "images_evaluation": 659}
    assert report.duplicate_files_merged == 0
    h = read_h5(path)
    assert h["images"].shape == (32460, 28, 28, 1)
    assert h["class_groups"].count("images_background") == 964
    assert "Gurmukhi/character45" in h["class_names"]
    assert set(np.unique(h["images"]).tolist()) == {0, 255}
    # The whole mirror folder (repacked full set + overlapping small archives) is the same full set.
    _, whole = omniglot.import_copy(tmp_path, [OMNI], progress=False)
    assert whole.variant == "full" and whole.classes == 1623 and whole.reused
    assert whole.content_sha256 == report.content_sha256
    assert whole.duplicate_files_merged == 2720 + 3120 and whole.duplicate_classes_merged == 242
    assert whole.groups == {"images_background": 964, "images_evaluation": 659}
