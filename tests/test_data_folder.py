"""Folder datasets: layout rules, mode conversion (Omniglot-identical binary path), corrupt-image listing,
nested groups, split folders and the fingerprinted cache. Small synthetic folders, plus a few real Omniglot
PNGs from the shared mirror ../shared/data when present."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from reptile_cli.data import folder as fd
from reptile_cli.data import h5images, omniglot
from reptile_cli.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SMALL1 = SHARED / "omniglot" / "images_background_small1.zip"


def save(path: Path, img: Image.Image, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt)
    return path


def solid(mode: str, size: tuple[int, int], color) -> Image.Image:
    return Image.new(mode, size, color)


def read(path: Path) -> dict:
    with h5py.File(path, "r") as h5:
        return {
            "images": h5["images"][:],
            "class_start": h5["class_start"][:],
            "names": list(h5["class_names"].asstr()[:]),
            "groups": list(h5["class_groups"].asstr()[:]),
            "split": list(h5["class_split"].asstr()[:]),
            "attrs": dict(h5.attrs),
            "chunks": h5["images"].chunks,
        }


def prep(root: Path, folder: Path, **kw) -> Path:
    kw = {"image_size": 28, "channels": 1, "split_seed": 0, "progress": False, "fractions": (1, 0, 0), **kw}
    return fd.prepare_folder(root, folder, **kw)


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    return message


def binary_image(seed: int, size: int = 105) -> np.ndarray:
    """A random 0/255 drawing-like image (a few black blobs on white)."""
    rs = np.random.RandomState(seed)
    arr = np.full((size, size), 255, np.uint8)
    for _ in range(6):
        y, x = rs.randint(0, size - 12, size=2)
        arr[y : y + rs.randint(3, 12), x : x + rs.randint(3, 12)] = 0
    return arr


# ----------------------------------------------------------------------------------------------- modes
def test_mixed_modes_are_converted_consistently(tmp_path):
    src = tmp_path / "ds"
    red = (255, 0, 0)
    save(src / "a" / "1_rgb.png", solid("RGB", (40, 30), red))
    save(src / "a" / "2_l.png", solid("L", (10, 10), 100))
    save(src / "a" / "3_rgba_transparent.png", solid("RGBA", (12, 12), (0, 0, 0, 0)))
    save(src / "a" / "4_la_half.png", solid("LA", (12, 12), (0, 128)))
    p = solid("P", (12, 12), 0)
    p.putpalette([0, 0, 255] + [0] * 765)
    save(src / "b" / "5_p.png", p)
    save(src / "b" / "6_one_bit.png", solid("1", (12, 12), 1))
    save(src / "b" / "7.jpg", solid("RGB", (50, 50), (10, 200, 30)), "JPEG")
    save(src / "b" / "8_gray.bmp", solid("L", (28, 28), 7))

    rgb = read(prep(tmp_path / "root", src, channels=3))
    assert rgb["images"].shape == (8, 28, 28, 3) and rgb["images"].dtype == np.uint8
    px = rgb["images"][:, 14, 14]
    assert tuple(px[0]) == red  # stretched, solid colour kept
    assert tuple(px[1]) == (100, 100, 100)
    assert tuple(px[2]) == (255, 255, 255)  # transparent -> white
    assert tuple(px[3]) == (127, 127, 127) or tuple(px[3]) == (128, 128, 128)  # black at alpha 128 over white
    assert tuple(px[4]) == (0, 0, 255)
    assert tuple(px[5]) == (255, 255, 255)
    assert np.abs(px[6].astype(int) - (10, 200, 30)).max() <= 3  # JPEG
    assert tuple(px[7]) == (7, 7, 7)

    grey = read(prep(tmp_path / "root", src, channels=1))
    assert grey["images"].shape == (8, 28, 28, 1)
    g = grey["images"][:, 14, 14, 0]
    assert g[0] == 76 and g[1] == 100 and g[2] == 255 and g[4] == 29 and g[5] == 255 and g[7] == 7
    assert grey["names"] == ["a", "b"] and list(grey["class_start"]) == [0, 4, 8]
    assert grey["split"] == ["", ""] and grey["groups"] == ["", ""]


@pytest.mark.parametrize("mode", ["L", "RGB", "P"])
def test_binary_png_in_any_mode_equals_the_one_bit_path(tmp_path, mode):
    """An Omniglot-like 1-bit drawing saved as L, RGB or P gives exactly the pixels of the 1-bit path."""
    ones, others = tmp_path / "ones", tmp_path / f"as_{mode}"
    for i in range(4):
        one_bit = Image.fromarray(binary_image(i)).convert("1")
        save(ones / "c" / f"{i:04d}_01.png", one_bit)
        save(others / "c" / f"{i:04d}_01.png", one_bit.convert(mode))
    a = read(prep(tmp_path / "root", ones))["images"]
    b = read(prep(tmp_path / "root", others))["images"]
    reference = np.stack([omniglot.preprocess_png((ones / "c" / f"{i:04d}_01.png").read_bytes()) for i in range(4)])
    assert np.array_equal(a, reference) and np.array_equal(b, reference)
    assert set(np.unique(a)) <= {0, 255}
    # Lanczos (the default) is not used for binary images; for grey ones it is
    grey = Image.fromarray((binary_image(9).astype(np.float64) * 0.5 + 60).astype(np.uint8))
    out = h5images.decode_image(_png(grey), image_size=28, channels=1)
    assert len(np.unique(out)) > 2


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.skipif(not SMALL1.is_file(), reason=f"shared data mirror {SMALL1} absent")
def test_omniglot_folder_matches_builtin_omniglot(tmp_path):
    """A folder of real Omniglot PNGs (1-bit, and re-saved as L/RGB/P) gives the pixels of `reptile data import
    omniglot` (class names, order and images)."""
    src = tmp_path / "images_background_small1"
    with zipfile.ZipFile(SMALL1) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png") and "/Balinese/" in n)
        for n in names:
            rel = Path(n).relative_to("images_background_small1")
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(zf.read(n))
    _, report = omniglot.import_copy(tmp_path / "omni", [src], progress=False, allow_partial=True)
    with h5py.File(report.path, "r") as h5:
        builtin = {
            "images": h5["images"][:],
            "names": list(h5["class_names"].asstr()[:]),
            "class_start": h5["class_start"][:],
        }
    got = read(prep(tmp_path / "root", src))
    assert got["names"] == builtin["names"] and got["names"][0] == "Balinese/character01"
    assert np.array_equal(got["class_start"], builtin["class_start"])
    assert np.array_equal(got["images"], builtin["images"])
    assert got["groups"][0] == "Balinese"
    # re-saved in other modes (first character only, to stay fast)
    first = sorted((src / "Balinese" / "character01").glob("*.png"))
    for mode in ("L", "RGB", "P"):
        other = tmp_path / f"resaved_{mode}" / "Balinese" / "character01"
        for f in first:
            save(other / f.name, Image.open(f).convert(mode))
        resaved = read(prep(tmp_path / "root", other.parent.parent))
        assert np.array_equal(resaved["images"], builtin["images"][: len(first)]), mode


# ----------------------------------------------------------------------------------------------- layout
def test_nested_groups_and_sorting(tmp_path):
    src = tmp_path / "alphabets"
    for group in ("Beta", "Alpha"):
        for char in ("character02", "character01"):
            for i in (3, 1, 2):
                value = 10 * i + (1 if char.endswith("2") else 0) + (100 if group == "Beta" else 0)
                save(src / group / char / f"{i:02d}.png", solid("L", (28, 28), value))
    save(src / "Gamma" / "deeper" / "character01" / "01.png", solid("L", (28, 28), 200))
    (src / "README.txt").write_text("not an image")
    (src / ".hidden").mkdir()
    save(src / ".hidden" / "x" / "1.png", solid("L", (4, 4), 0))
    out = read(prep(tmp_path / "root", src))
    assert out["names"] == [
        "Alpha/character01",
        "Alpha/character02",
        "Beta/character01",
        "Beta/character02",
        "Gamma/deeper/character01",
    ]
    assert out["groups"] == ["Alpha", "Alpha", "Beta", "Beta", "Gamma/deeper"]
    assert out["split"] == [""] * 5
    assert list(out["images"][:6, 0, 0, 0]) == [10, 20, 30, 11, 21, 31]  # files sorted by name within a class
    assert out["attrs"]["ignored_files"] == 1 and out["attrs"]["dataset"] == "folder"
    assert bool(out["attrs"]["partial"]) is False and out["attrs"]["variant"] == "alphabets"


def test_split_folders_are_recorded(tmp_path):
    src = tmp_path / "ds"
    for split, classes in {"train": ["x", "y"], "val": ["z"], "test": ["w/v"]}.items():
        for c in classes:
            save(src / split / c / "1.png", solid("RGB", (8, 8), (1, 2, 3)))
    out = read(prep(tmp_path / "root", src, channels=3, image_size=8))
    assert out["names"] == ["w/v", "x", "y", "z"]
    assert out["split"] == ["test", "train", "train", "val"]
    assert out["groups"] == ["w", "", "", ""]


@pytest.mark.parametrize(
    "layout, expected",
    [
        ({"train/cat/1.png", "test/cat/2.png"}, "class cat is in both test/ and train/"),
        ({"train/cat/1.png", "misc/dog/1.png"}, "split folders"),
        ({"a/1.png", "a/b/1.png"}, "hold images and also sub-folders"),
        ({"1.png"}, "holds images directly"),
        ({"train/1.png", "test/x/1.png"}, "holds images directly"),
        ({"notes.txt"}, "no images"),
    ],
)
def test_bad_layouts_are_refused(tmp_path, layout, expected):
    src = tmp_path / "ds"
    src.mkdir()
    for rel in layout:
        if rel.endswith(".png"):
            save(src / rel, solid("L", (4, 4), 0))
        else:
            (src / rel).write_text("x")
    with pytest.raises(DataError) as err:
        prep(tmp_path / "root", src)
    assert expected in one_line(err)


def test_arguments_are_checked(tmp_path):
    src = tmp_path / "ds"
    save(src / "a" / "1.png", solid("L", (4, 4), 0))
    save(src / "b" / "1.png", solid("L", (4, 4), 0))
    with pytest.raises(DataError, match="too few to split"):
        prep(tmp_path / "root", src, fractions=(0.6, 0.2, 0.2))
    assert prep(tmp_path / "root", src, fractions=(0.5, 0.0, 0.5)).is_file()
    for bad in [{"fractions": (0.5, 0.5, 0.5)}, {"channels": 2}, {"image_size": 0}, {"resize_filter": "cubic"}]:
        with pytest.raises(DataError):
            prep(tmp_path / "root", src, **{"fractions": (0.5, 0, 0.5), **bad})
    with pytest.raises(DataError, match="not a folder"):
        prep(tmp_path / "root", tmp_path / "missing")


# ----------------------------------------------------------------------------------------------- errors
def test_corrupt_images_are_all_listed(tmp_path):
    src = tmp_path / "ds"
    for c in "abc":
        save(src / c / "good.png", solid("L", (10, 10), 5))
    jpeg = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (60, 60, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    png = _png(Image.fromarray(binary_image(0)))
    bad = {
        "a/truncated.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2],
        "a/truncated.png": png[: len(png) // 2],
        "b/empty.png": b"",
        "b/text.jpg": b"hello, not an image",
        "c/zz_html.png": b"<!DOCTYPE html><html></html>",
    }
    for rel, data in bad.items():
        (src / rel).write_bytes(data)
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        prep(root, src)
    message = one_line(err)
    assert "5 unreadable or corrupt image(s)" in message and "and 2 more" in message
    assert "a/truncated.jpg" in message
    listed = (root / "folder").glob("*.errors.txt")
    text = next(listed).read_text()
    assert all(rel in text for rel in bad) and "good.png" not in text
    assert not list((root / "folder").glob("*.h5")) and not list((root / "folder").glob("*.tmp*"))


# ----------------------------------------------------------------------------------------------- cache
def test_fingerprint_reuse_and_rebuild(tmp_path, monkeypatch):
    src = tmp_path / "my data"
    for c in "ab":
        for i in range(3):
            save(src / c / f"{i}.png", solid("L", (10, 10), 40 * i))
    root = tmp_path / "root"
    first = prep(root, src)
    assert first.parent == root / "folder" and first.name.startswith("my_data-") and first.suffix == ".h5"
    assert first == fd.cache_path(root, src, 28, 1)
    attrs = read(first)["attrs"]
    assert attrs["source_path"] == str(src.resolve()) and len(attrs["content_sha256"]) == 64
    assert read(first)["chunks"] == (6, 28, 28, 1)  # small file: gzip, chunks of up to 1000 images

    calls = []
    real_write = h5images.write_images_h5
    monkeypatch.setattr(h5images, "write_images_h5", lambda *a, **k: (calls.append(1), real_write(*a, **k)))
    assert prep(root, src) == first and calls == []  # unchanged: reused

    os.utime(src / "a" / "0.png", ns=(1, 1))  # a changed mtime: rebuilt
    assert prep(root, src) == first and len(calls) == 1
    save(src / "b" / "9.png", solid("L", (10, 10), 1))  # a new file: rebuilt
    assert prep(root, src) == first and len(calls) == 2 and read(first)["attrs"]["num_images"] == 7
    assert prep(root, src) == first and len(calls) == 2

    other = prep(root, src, image_size=14)  # other settings: another file
    assert other != first and read(other)["images"].shape == (7, 14, 14, 1)
    assert read(first)["images"].shape == (7, 28, 28, 1)
    content = read(first)["attrs"]["content_sha256"]
    copy = tmp_path / "copy"
    os.rename(src, copy)
    assert read(prep(root, copy))["attrs"]["content_sha256"] == content  # same bytes, same content hash
