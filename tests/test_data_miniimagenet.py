"""Mini-ImageNet: the real 100-per-class subset from the shared mirror (partial report), and synthetic copies
for the checks: missing class, truncated JPEG, misplaced images, duplicates across splits, the ImageNet +
CSV path (numeric index rule), zip vs folder, split-file fetching, and the standalone build script.

Real data comes from ../shared/data (skipped when absent); nothing reaches the internet.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from reptile_cli.data import download as dl
from reptile_cli.data import h5images
from reptile_cli.data import miniimagenet as mi
from reptile_cli.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SUBSET = SHARED / "miniimagenet" / "miniimagenet_84px_100per_class.zip"
SPLITS_MIRROR = SHARED / "splits"
SCRIPT = REPO / "data_scripts" / "make_miniimagenet.py"

needs_subset = pytest.mark.skipif(not SUBSET.is_file(), reason=f"shared data mirror {SUBSET} absent")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    for var in ("REPTILE_MIRROR", "REPTILE_SPLITS_MIRROR", "REPTILE_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(dl, "BACKOFF_S", 0.0)


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    return message


def read(path: Path, images: bool = True) -> dict:
    with h5py.File(path, "r") as h5:
        return {
            "images": h5["images"][:] if images else h5["images"],
            "shape": h5["images"].shape,
            "dtype": h5["images"].dtype,
            "class_start": h5["class_start"][:],
            "names": list(h5["class_names"].asstr()[:]),
            "groups": list(h5["class_groups"].asstr()[:]),
            "split": list(h5["class_split"].asstr()[:]),
            "attrs": dict(h5.attrs),
            "chunks": h5["images"].chunks,
            "compression": h5["images"].compression,
        }


# ----------------------------------------------------------------------------------------------- real subset
@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """The shared 100-per-class subset imported once (about 3 s)."""
    if not SUBSET.is_file():
        pytest.skip(f"shared data mirror {SUBSET} absent")
    root = tmp_path_factory.mktemp("mini")
    path, report = mi.import_copy(root, SUBSET, allow_partial=True, progress=False, splits_mirror=SPLITS_MIRROR)
    return root, path, report


@needs_subset
def test_shared_subset_is_reported_partial(subset):
    root, path, report = subset
    assert path == root / "miniimagenet" / "miniimagenet.h5" and report.partial and not report.reused
    assert report.layout == "folders" and report.split_csvs == "ravi-larochelle"
    for split, classes in mi.EXPECTED_CLASSES.items():
        s = report.splits[split]
        assert (s.classes_expected, s.classes_found) == (classes, classes)
        assert (s.images_expected, s.images_found) == (mi.IMAGES_PER_CLASS * classes, 100 * classes)
        assert s.images_missing == 500 * classes and s.incomplete_classes == classes and s.missing_classes == []
        assert len(s.missing_examples) == 3 and all(e.startswith(f"{split}/n") for e in s.missing_examples)
    assert report.classes == 100 and report.images == 10_000
    # none of the 7 known cross-split duplicates of the full set is among the first 100 images per class
    assert report.cross_split_duplicates == [] and report.within_split_duplicates == 0
    summary = "\n".join(report.summary())
    assert "50,000 of 60,000 listed images missing" in summary and "train 64/64 classes" in summary

    h5 = read(path, images=False)
    assert h5["shape"] == (10_000, 84, 84, 3) and h5["dtype"] == np.uint8
    assert h5["chunks"] == (1, 84, 84, 3) and h5["compression"] is None
    assert np.all(np.diff(h5["class_start"]) == 100) and h5["names"] == sorted(h5["names"])
    assert [h5["split"].count(s) for s in ("train", "val", "test")] == [64, 16, 20] and h5["groups"] == h5["split"]
    attrs = h5["attrs"]
    assert bool(attrs["partial"]) is True and attrs["variant"] == "partial" and attrs["dataset"] == "miniimagenet"
    assert attrs["resize_filter"] == "lanczos" and attrs["num_images"] == 10_000 and attrs["num_classes"] == 100
    assert attrs["content_sha256"] == report.content_sha256
    installed = {p.name: dl.file_sha256(p) for p in (root / "miniimagenet" / "splits").iterdir()}
    assert installed == mi.RAVI_SPLIT_SHA256

    # The file loads as an image store (per-class blocks, in memory: 212 MB)
    from reptile_cli.data.datasets import ImageStore

    store = ImageStore(path, "prepare it")
    assert store.image_shape == (84, 84, 3) and len(store.names) == 100


@needs_subset
def test_shared_subset_reimport_reuses_the_file(subset):
    root, path, report = subset
    mtime = path.stat().st_mtime_ns
    again_path, again = mi.import_copy(root, SUBSET, allow_partial=True, progress=False)  # splits installed
    assert again_path == path and again.reused and path.stat().st_mtime_ns == mtime
    assert again.content_sha256 == report.content_sha256 and again.splits == report.splits


@needs_subset
def test_shared_subset_needs_allow_partial(tmp_path):
    with pytest.raises(DataError) as err:
        mi.import_copy(tmp_path, SUBSET, progress=False, splits_mirror=SPLITS_MIRROR / "miniimagenet_ravi")
    message = one_line(err)
    assert "--allow-partial" in message and "50,000 of 60,000 listed images missing" in message
    assert "train/n01532829/n01532829" in message
    assert not (tmp_path / "miniimagenet" / "miniimagenet.h5").exists()


# ----------------------------------------------------------------------------------------------- synthetic
CLASSES = {"train": ["n00000003", "n00000001", "n00000002"], "val": ["n00000004"], "test": ["n00000005", "n00000006"]}
INDICES = [1, 3, 4, 7]  # the split lists these indices of each class


def csv_name(wnid: str, k: int) -> str:
    return f"{wnid}{k:08d}.jpg"


def colour(wnid: str, k: int) -> tuple[int, int, int]:
    return (30 * int(wnid[-1]) + 20, 25 * k + 5, 128)


def jpeg(colour_, size=(84, 84), quality=95) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour_).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_splits(folder: Path, classes=CLASSES, indices=INDICES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, wnids in classes.items():
        rows = ["filename,label"] + [f"{csv_name(w, k)},{w}" for w in wnids for k in indices]
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return folder


def make_copy(folder: Path, size=(84, 84)) -> Path:
    for split, wnids in CLASSES.items():
        for w in wnids:
            for k in INDICES:
                path = folder / split / w / csv_name(w, k)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(jpeg(colour(w, k), size))
    return folder


@pytest.fixture
def synthetic(tmp_path):
    return make_copy(tmp_path / "copy"), write_splits(tmp_path / "splits")


def centre(images: np.ndarray) -> np.ndarray:
    return images[:, 42, 42].astype(int)


def test_complete_synthetic_copy(tmp_path, synthetic):
    copy, splits = synthetic
    path, report = mi.import_copy(tmp_path / "root", copy, splits_dir=splits, progress=False)
    assert not report.partial and report.split_csvs == "custom" and report.split_files == []
    assert not (tmp_path / "root" / "miniimagenet" / "splits").exists()  # custom split files are not installed
    h5 = read(path)
    assert h5["names"] == [f"n0000000{i}" for i in range(1, 7)]
    assert h5["split"] == ["train", "train", "train", "val", "test", "test"]
    assert list(h5["class_start"]) == [0, 4, 8, 12, 16, 20, 24]
    expected = np.array([colour(w, k) for w in h5["names"] for k in INDICES])
    assert np.abs(centre(h5["images"]) - expected).max() <= 3
    assert h5["attrs"]["variant"] == "full" and bool(h5["attrs"]["partial"]) is False
    assert h5["attrs"]["split_csvs"] == "custom" and h5["attrs"]["source_layout"] == "folders"


def test_zip_with_top_folder_equals_the_folder_and_small_images_are_resized(tmp_path):
    copy = make_copy(tmp_path / "copy", size=(40, 30))
    splits = write_splits(tmp_path / "splits")
    archive = tmp_path / "mini.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(copy.rglob("*.jpg")):
            zf.write(p, "mini_84px/" + p.relative_to(copy).as_posix())
        zf.writestr("mini_84px/README.txt", "hello")
        zf.writestr("__MACOSX/mini_84px/._x.jpg", "junk")
    root = tmp_path / "root"
    path, from_zip = mi.import_copy(root, archive, splits_dir=splits, progress=False)
    assert read(path)["images"].shape == (24, 84, 84, 3) and from_zip.ignored_files == 1
    _, from_dir = mi.import_copy(root, copy, splits_dir=splits, progress=False)
    assert from_dir.reused and from_dir.content_sha256 == from_zip.content_sha256
    _, bilinear = mi.import_copy(root, copy, splits_dir=splits, progress=False, resize_filter="bilinear")
    assert bilinear.path.name == "miniimagenet_bilinear.h5" and not bilinear.reused


def test_missing_class_folder(tmp_path, synthetic):
    copy, splits = synthetic
    shutil.rmtree(copy / "test" / "n00000006")
    (copy / "train" / "n00000001" / csv_name("n00000001", 3)).unlink()
    with pytest.raises(DataError) as err:
        mi.import_copy(tmp_path / "root", copy, splits_dir=splits, progress=False)
    message = one_line(err)
    assert "1 class folder(s) missing (test/n00000006)" in message and "--allow-partial" in message
    path, report = mi.import_copy(tmp_path / "root", copy, splits_dir=splits, progress=False, allow_partial=True)
    assert report.partial and report.splits["test"].missing_classes == ["test/n00000006"]
    assert report.splits["test"].classes_found == 1 and report.splits["train"].incomplete_classes == 1
    assert report.splits["train"].missing_examples == ["train/n00000001/n0000000100000003.jpg"]
    h5 = read(path)
    assert len(h5["names"]) == 5 and "n00000006" not in h5["names"] and h5["attrs"]["num_images"] == 19


def test_partial_import_does_not_replace_a_complete_file(tmp_path, synthetic):
    copy, splits = synthetic
    path, _ = mi.import_copy(tmp_path / "root", copy, splits_dir=splits, progress=False)
    shutil.rmtree(copy / "val")
    with pytest.raises(DataError, match="holds a complete Mini-ImageNet"):
        mi.import_copy(tmp_path / "root", copy, splits_dir=splits, progress=False, allow_partial=True)
    assert bool(read(path)["attrs"]["partial"]) is False


@pytest.mark.parametrize("allow_partial", [False, True])
def test_truncated_jpeg_is_refused(tmp_path, synthetic, allow_partial):
    copy, splits = synthetic
    bad = copy / "val" / "n00000004" / csv_name("n00000004", 4)
    bad.write_bytes(bad.read_bytes()[:300])
    (copy / "test" / "n00000005" / csv_name("n00000005", 1)).write_bytes(b"\xff\xd8 not really")
    with pytest.raises(DataError) as err:
        mi.import_copy(tmp_path / "root", copy, splits_dir=splits, progress=False, allow_partial=allow_partial)
    message = one_line(err)
    assert "2 unreadable image(s)" in message and "val/n00000004/n0000000400000004.jpg" in message
    assert "test/n00000005/n0000000500000001.jpg" in message
    assert not list((tmp_path / "root" / "miniimagenet").glob("*.h5*"))


def test_duplicates_across_splits_are_listed(tmp_path, synthetic):
    copy, splits = synthetic
    source = copy / "train" / "n00000002" / csv_name("n00000002", 7)
    shutil.copy(source, copy / "test" / "n00000005" / csv_name("n00000005", 3))
    shutil.copy(source, copy / "val" / "n00000004" / csv_name("n00000004", 1))
    shutil.copy(
        copy / "val" / "n00000004" / csv_name("n00000004", 4), copy / "val" / "n00000004" / csv_name("n00000004", 7)
    )
    _, report = mi.import_copy(tmp_path / "root", copy, splits_dir=splits, progress=False)
    a = "train/n00000002/n0000000200000007.jpg"
    assert report.cross_split_duplicates == [
        (a, "test/n00000005/n0000000500000003.jpg"),
        (a, "val/n00000004/n0000000400000001.jpg"),
    ]
    assert report.within_split_duplicates == 1
    assert "2 pixel-identical image pair(s) across splits" in "\n".join(report.summary())


def test_duplicates_by_pixels_not_bytes(tmp_path):
    """Two different files with the same decoded pixels count; near-identical pixels do not."""
    img = np.random.RandomState(0).randint(0, 255, (84, 84, 3), dtype=np.uint8)
    other = img.copy()
    other[0, 0, 0] ^= 1
    path = tmp_path / "x.h5"
    h5images.write_images_h5(
        path,
        iter([img, other, img]),
        class_names=["a", "b"],
        class_counts=[2, 1],
        class_groups=["train", "test"],
        class_split=["train", "test"],
        attrs={"image_size": 84, "channels": 3},
        progress=False,
    )
    pairs, within = mi.find_duplicates(path, [["a/1.png", "a/2.bmp"], ["b/1.jpg"]], ["train", "test"])
    assert pairs == [("a/1.png", "b/1.jpg")] and within == 0


def test_misplaced_and_unlisted_images_are_refused(tmp_path, synthetic):
    copy, splits = synthetic
    moved = copy / "train" / "n00000004"
    shutil.move(copy / "val" / "n00000004", moved)
    with pytest.raises(DataError) as err:
        mi.import_copy(tmp_path / "root", copy, splits_dir=splits, progress=False, allow_partial=True)
    assert "class n00000004 is in val, not train" in one_line(err)
    shutil.move(moved, copy / "val" / "n00000004")
    (copy / "val" / "n00000004" / csv_name("n00000004", 2)).write_bytes(jpeg((0, 0, 0)))
    with pytest.raises(DataError, match="not listed in the split files"):
        mi.import_copy(tmp_path / "root", copy, splits_dir=splits, progress=False)
    (copy / "val" / "n00000004" / csv_name("n00000004", 2)).unlink()
    (copy / "val" / "n00000004" / "cat.jpg").write_bytes(jpeg((0, 0, 0)))
    with pytest.raises(DataError, match="named neither"):
        mi.import_copy(tmp_path / "root", copy, splits_dir=splits, progress=False)
    with pytest.raises(DataError, match="no Mini-ImageNet images"):
        mi.import_copy(tmp_path / "root", splits, splits_dir=splits, progress=False)


# ----------------------------------------------------------------------------------------------- ImageNet
NUMBERS = [100, 1, 2, 20, 3, 10, 5, 11]  # ImageNet's <n>; sorted as text the order would differ
NUMERIC = sorted(NUMBERS)  # 1 2 3 5 10 11 20 100: CSV index k -> NUMERIC[k - 1]


def imagenet_colour(wnid: str, n: int) -> tuple[int, int, int]:
    return (30 * int(wnid[-1]) + 20, 20 * NUMERIC.index(n) + 10, 200)


def make_imagenet(folder: Path, flat: bool = False, numbers=NUMBERS) -> Path:
    wnids = [w for ws in CLASSES.values() for w in ws] + ["n09999999"]  # one class not in the split
    for w in wnids:
        for n in numbers:
            base = folder if flat else folder / w
            base.mkdir(parents=True, exist_ok=True)
            (base / f"{w}_{n}.JPEG").write_bytes(
                jpeg(imagenet_colour(w, n) if w != "n09999999" else (0, 0, 0), (60, 45))
            )
    return folder


@pytest.mark.parametrize("flat", [False, True])
def test_imagenet_folder_maps_csv_index_to_numeric_order(tmp_path, flat):
    imagenet = make_imagenet(tmp_path / "train", flat=flat)
    splits = write_splits(tmp_path / "splits")
    path, report = mi.import_copy(tmp_path / "root", imagenet, splits_dir=splits, progress=False)
    assert report.layout == "imagenet" and not report.partial
    h5 = read(path)
    assert h5["names"] == [f"n0000000{i}" for i in range(1, 7)] and h5["images"].shape == (24, 84, 84, 3)
    expected = np.array([imagenet_colour(w, NUMERIC[k - 1]) for w in h5["names"] for k in INDICES])
    assert np.abs(centre(h5["images"]) - expected).max() <= 4
    # sorting the names as text would have picked other images for index 3 (n=3 numerically, n=100 as text)
    text_order = sorted(NUMBERS, key=lambda n: f"n00000001_{n}.JPEG")
    assert text_order[2] != NUMERIC[2]
    assert report.ignored_files == (8 if flat else 1)  # the class not in the split: its files, or its folder


def test_imagenet_folder_with_too_few_files_is_partial(tmp_path):
    imagenet = make_imagenet(tmp_path / "train", numbers=NUMBERS[:5])  # indices 7 is beyond 5 files
    splits = write_splits(tmp_path / "splits")
    with pytest.raises(DataError, match="--allow-partial"):
        mi.import_copy(tmp_path / "root", imagenet, splits_dir=splits, progress=False)
    _, report = mi.import_copy(tmp_path / "root", imagenet, splits_dir=splits, progress=False, allow_partial=True)
    assert report.partial and report.images == 18 and report.splits["train"].images_missing == 3


# ----------------------------------------------------------------------------------------------- split files
@needs_subset
def test_download_splits_from_mirror_and_checksum(tmp_path, monkeypatch):
    target = mi.download_splits(tmp_path / "a", SPLITS_MIRROR / "miniimagenet_ravi", progress=False)
    assert {p.name: dl.file_sha256(p) for p in target.iterdir()} == mi.RAVI_SPLIT_SHA256
    monkeypatch.setenv("REPTILE_SPLITS_MIRROR", (SPLITS_MIRROR / "miniimagenet_ravi").as_uri())
    assert len(list(mi.download_splits(tmp_path / "b", progress=False).iterdir())) == 3
    bad = tmp_path / "bad"
    shutil.copytree(SPLITS_MIRROR / "miniimagenet_ravi", bad)
    (bad / "val.csv").write_bytes((bad / "val.csv").read_bytes()[:-40])
    with pytest.raises(DataError, match="checksum mismatch for val.csv"):
        mi.download_splits(tmp_path / "c", bad, progress=False)
    assert not (tmp_path / "c" / "miniimagenet" / "splits" / "val.csv").exists()


def test_split_files_are_validated(tmp_path):
    splits = write_splits(tmp_path / "splits")
    assert mi.parse_split({n: (splits / n).read_bytes() for n in mi.RAVI_SPLIT_SHA256}, "x").official is False
    (splits / "val.csv").write_text("filename,label\nn0000000400000001.jpg,n00000005\n")
    with pytest.raises(DataError, match="not <wnid><8 digits>.jpg,<wnid>"):
        mi.import_copy(tmp_path / "root", make_copy(tmp_path / "copy"), splits_dir=splits, progress=False)
    (splits / "val.csv").write_text("name,class\n")
    with pytest.raises(DataError, match="header filename,label"):
        mi.parse_split({n: (splits / n).read_bytes() for n in mi.RAVI_SPLIT_SHA256}, "x")
    (splits / "val.csv").write_text(f"filename,label\n{csv_name('n00000001', 9)},n00000001\n")
    with pytest.raises(DataError, match="class n00000001 is in both"):
        mi.parse_split({n: (splits / n).read_bytes() for n in mi.RAVI_SPLIT_SHA256}, "x")


# ----------------------------------------------------------------------------------------------- script
def _load_script():
    spec = importlib.util.spec_from_file_location("make_miniimagenet", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_constants_match_package():
    script = _load_script()
    assert script.RAVI_SPLIT_SHA256 == mi.RAVI_SPLIT_SHA256 and script.IMAGE_SIZE == mi.IMAGE_SIZE
    source = SCRIPT.read_text()
    assert "import reptile_cli" not in source and "from reptile_cli" not in source


def test_script_builds_the_common_layout(tmp_path, capsys):
    imagenet = make_imagenet(tmp_path / "train")
    splits = write_splits(tmp_path / "splits")
    out = tmp_path / "out"
    script = _load_script()
    assert script.main(["--imagenet", str(imagenet), "--splits", str(splits), "--out", str(out), "--workers", "2"]) == 0
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert len(made) == 24 and made[0] == "test/n00000005/n0000000500000001.jpg"
    assert sorted(p.name for p in out.glob("*.csv")) == ["test.csv", "train.csv", "val.csv"]
    with Image.open(out / "train" / "n00000001" / csv_name("n00000001", 3)) as img:
        assert img.size == (84, 84) and img.mode == "RGB"
    # importing the script's output gives the images of the direct ImageNet import (up to JPEG error)
    path, report = mi.import_copy(tmp_path / "root", out, splits_dir=splits, progress=False)
    assert report.layout == "folders" and not report.partial
    expected = np.array([imagenet_colour(w, NUMERIC[k - 1]) for w in read(path)["names"] for k in INDICES])
    assert np.abs(centre(read(path)["images"]) - expected).max() <= 5
    # a second run keeps what is there; a missing source image is an error unless --allow-partial
    mtime = (out / "val" / "n00000004" / csv_name("n00000004", 1)).stat().st_mtime_ns
    for n in (100, 20):  # 6 files left: index 7 is missing
        (imagenet / "n00000004" / f"n00000004_{n}.JPEG").unlink()
    capsys.readouterr()
    args = ["--imagenet", str(imagenet), "--splits", str(splits), "--out", str(out), "--quiet"]
    assert script.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 1 of 24 listed images") and err.count("\n") == 1
    assert script.main(args + ["--allow-partial"]) == 0
    assert (out / "val" / "n00000004" / csv_name("n00000004", 1)).stat().st_mtime_ns == mtime


def test_script_runs_standalone(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "--imagenet" in run.stdout
    missing = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--imagenet",
            str(tmp_path),
            "--splits",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and missing.stderr.startswith("error: no ") and missing.stderr.count("\n") == 1


def test_content_hash_covers_split_files(tmp_path, synthetic):
    copy, splits = synthetic
    _, a = mi.import_copy(tmp_path / "root", copy, splits_dir=splits, progress=False)
    other = write_splits(
        tmp_path / "other", classes={"train": CLASSES["train"] + CLASSES["val"], "val": [], "test": CLASSES["test"]}
    )
    shutil.move(copy / "val" / "n00000004", copy / "train" / "n00000004")
    _, b = mi.import_copy(tmp_path / "root", copy, splits_dir=other, progress=False)
    assert a.content_sha256 != b.content_sha256 and not b.reused
    assert read(b.path)["split"][3] == "train"
    assert hashlib.sha256(b"").hexdigest() not in (a.content_sha256, b.content_sha256)
