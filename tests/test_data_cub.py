"""CUB-200-2011 on small synthetic copies in the official layout (the real 200 class names, 2 or 3 tiny JPEGs
each, classes.txt / images.txt, packed as CUB_200_2011.tgz): the shipped Chen et al. lists, import from the
archive and from the folder, the checks of the metadata against images/, partial copies, broken archives,
download through a mirror with md5, and a few meta-iterations of `reptile train dataset=cub`.

No real copy is used; nothing reaches the internet.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from reptile_cli.data import cub
from reptile_cli.data.listed import check_disjoint_lists, class_lists
from reptile_cli.errors import DataError
from tests.test_data_miniimagenet import _isolated, one_line, read  # noqa: F401 (_isolated: autouse, no mirror env)

LISTS = class_lists("cub")
NAMES = sorted(n for names in LISTS.values() for n in names)
RED, BLUE, KNOWN = (220, 20, 30), (10, 40, 230), (200, 30, 60)


def leftovers(root: Path) -> list[str]:
    """Everything under the data root (an import that failed must leave nothing)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def image_file(c: int, k: int) -> bytes:
    """Image k of class c: class 0 image 0 is 84x84 of KNOWN; image 1 of every class is 168x84, the left third
    RED and the rest BLUE (stretched, not cropped, to 84x84: the boundary moves to x = 28); others small."""
    if (c, k) == (0, 0):
        return jpeg(Image.new("RGB", (84, 84), KNOWN))
    if k == 1:
        img = Image.new("RGB", (168, 84), BLUE)
        img.paste(RED, (0, 0, 56, 84))
        return jpeg(img)
    return jpeg(Image.new("RGB", (24 + c % 7, 20), (c, 5 * k, 255 - c)))


def make_cub(folder: Path) -> Path:
    """``folder/CUB_200_2011`` in the official layout (plus files the import does not read), 2 or 3 images a
    class; returns ``folder``."""
    top = folder / "CUB_200_2011"
    image_lines = []
    for c, name in enumerate(NAMES):
        species = name.split(".", 1)[1]
        for k in range(2 + c % 2):
            rel = f"{name}/{species}_{k:04d}_{100 + c}.jpg"
            path = top / "images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image_file(c, k))
            image_lines.append(f"{len(image_lines) + 1} {rel}")
    (top / "classes.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(NAMES, start=1)))
    (top / "images.txt").write_text("\n".join(image_lines) + "\n")
    (top / "bounding_boxes.txt").write_text("1 0 0 1 1\n")
    (top / "parts").mkdir()
    (top / "parts" / "parts.txt").write_text("1 back\n")
    (folder / "attributes.txt").write_text("1 has_bill_shape::curved\n")
    return folder


def make_tgz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder / "attributes.txt", "attributes.txt")
        tar.add(folder / "CUB_200_2011", "CUB_200_2011")
    return archive


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(extracted folder, CUB_200_2011.tgz) of the synthetic copy."""
    base = tmp_path_factory.mktemp("cub")
    folder = make_cub(base / "extracted")
    return folder, make_tgz(folder, base / "CUB_200_2011.tgz")


SYNTHETIC_IMAGES = 500  # 2 or 3 photos for each of the 200 species


REAL_COUNT = cub.OFFICIAL_IMAGES


@pytest.fixture(autouse=True)
def synthetic_release(monkeypatch):
    """The synthetic copy stands for the official release (its 500 photos for the 11,788)."""
    monkeypatch.setattr(cub, "OFFICIAL_IMAGES", SYNTHETIC_IMAGES)


def test_a_trimmed_release_is_partial(tmp_path, official, monkeypatch):
    """Files that agree with each other but hold fewer photos than the official 11,788 are not CUB-200-2011:
    refused unless --allow-partial, then marked partial."""
    assert REAL_COUNT == 11_788
    monkeypatch.setattr(cub, "OFFICIAL_IMAGES", REAL_COUNT)
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        cub.import_copy(root, [official[1]], progress=False)
    assert "images.txt lists 500 images, the official release 11,788" in one_line(err)
    assert "--allow-partial" in str(err.value)
    assert not list(root.rglob("*.h5"))
    path = cub.import_copy(root, [official[1]], allow_partial=True, progress=False)
    with h5py.File(path) as h5:
        assert bool(h5.attrs["partial"]) and h5.attrs["variant"] == "partial"


@pytest.fixture
def copy(tmp_path, official):
    """A private copy of the extracted folder, to break."""
    return Path(shutil.copytree(official[0], tmp_path / "copy"))


# ----------------------------------------------------------------------------------------------- lists
def test_shipped_lists_are_chen_et_al():
    assert {s: len(n) for s, n in LISTS.items()} == {"train": 100, "val": 50, "test": 50}
    assert len(NAMES) == 200 and NAMES[0] == "001.Black_footed_Albatross" and NAMES[-1] == "200.Common_Yellowthroat"
    assert [int(n[:3]) for n in NAMES] == list(range(1, 201))
    assert LISTS["train"] == NAMES[0::2] and LISTS["val"] == NAMES[1::4] and LISTS["test"] == NAMES[3::4]
    broken = {**LISTS, "test": LISTS["test"] + [LISTS["val"][0]]}
    with pytest.raises(DataError) as err:
        check_disjoint_lists(broken, "the test lists")
    assert "002.Laysan_Albatross is in both 'val' and 'test'" in one_line(err)


# ----------------------------------------------------------------------------------------------- import
def test_import_archive_then_folder(tmp_path, official):
    folder, archive = official
    root = tmp_path / "root"
    path = cub.import_copy(root, [archive], progress=False)
    assert path == root / "cub" / "cub_lanczos.h5" and leftovers(root) == ["cub", "cub/cub_lanczos.h5"]
    h5 = read(path)
    assert h5["names"] == NAMES and h5["groups"] == h5["split"]
    split_of = {n: s for s, names in LISTS.items() for n in names}
    assert h5["split"] == [split_of[n] for n in NAMES]
    assert {s: h5["split"].count(s) for s in LISTS} == {"train": 100, "val": 50, "test": 50}
    counts = np.diff(h5["class_start"])
    assert list(counts) == [2 + c % 2 for c in range(200)] and h5["images"].shape == (500, 84, 84, 3)
    attrs = h5["attrs"]
    assert attrs["dataset"] == "cub" and attrs["split"] == "chen" and bool(attrs["partial"]) is False
    assert attrs["source_layout"] == "archive" and attrs["images_listed"] == 500 and attrs["variant"] == "full"
    images = h5["images"].astype(int)
    assert np.abs(images[0] - KNOWN).max() <= 3  # an 84x84 image keeps its pixels
    wide = images[1]  # 168x84, left third red: stretched to 84x84, not cropped
    assert np.abs(wide[42, 10] - RED).max() <= 12 and np.abs(wide[42, 60] - BLUE).max() <= 12

    before = (path.stat().st_mtime_ns, attrs["content_sha256"])
    assert cub.import_copy(root, [folder], progress=False) == path  # the same files: kept as they are
    assert (path.stat().st_mtime_ns, read(path)["attrs"]["content_sha256"]) == before
    assert cub.import_copy(root, [folder / "CUB_200_2011"], progress=False) == path
    bilinear = cub.import_copy(root, [folder], resize_filter="bilinear", progress=False)
    assert bilinear.name == "cub_bilinear.h5" and read(bilinear)["attrs"]["source_layout"] == "folder"


def test_dataset_family_uses_the_stored_split(tmp_path, official):
    from omegaconf import OmegaConf

    from reptile_cli.config import EpisodeConfig, ImageDataConfig
    from reptile_cli.data.datasets import build_data_family

    root = tmp_path / "root"
    cub.import_copy(root, [official[1]], progress=False)
    cfg = ImageDataConfig(name="cub", split="chen", root=str(root), rotations=False, resize_filter="lanczos",
                          image_size=84, channels=3)
    family = build_data_family(OmegaConf.structured(cfg), OmegaConf.structured(EpisodeConfig(train_shots=2)))
    assert {s: len(p) for s, p in family.pools.items()} == {"train": 100, "val": 50, "test": 50}
    assert family.pools["test"].names == LISTS["test"]


@pytest.mark.parametrize("damage", ["truncated", "tail_cut", "zip", "other_tar", "not_an_archive"])
def test_broken_archive_is_refused_and_leaves_nothing(tmp_path, official, damage):
    archive = tmp_path / "CUB_200_2011.tgz"
    data = official[1].read_bytes()
    if damage == "truncated":
        archive.write_bytes(data[: len(data) // 2])
    elif damage == "tail_cut":  # every member whole, the gzip stream's end missing: tar alone would not notice
        archive.write_bytes(data[:-20])
    elif damage == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("CUB_200_2011/classes.txt", "1 001.Black_footed_Albatross\n")
    elif damage == "other_tar":  # a valid archive of something else, under the right name
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "images").mkdir()
        (tmp_path / "other" / "images" / "readme.txt").write_text("not birds")
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(tmp_path / "other", "other")
    else:
        archive.write_bytes(b"<html>not found</html>")
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        cub.import_copy(root, [archive], progress=False)
    message = one_line(err)
    if damage == "other_tar":
        assert "holds no CUB_200_2011/classes.txt" in message
    else:
        assert "cannot unpack" in message and "truncated, corrupt or not a tar archive" in message
    assert leftovers(root) == []


def _edit(path: Path, edit) -> None:
    path.write_text(edit(path.read_text()))


@pytest.mark.parametrize(
    "breakage, expected",
    [
        ("extra_file", "1 file(s) under CUB_200_2011/images of"),
        ("unknown_class", "outside the folder of a class of classes.txt"),
        ("listed_twice", "lists 001.Black_footed_Albatross/Black_footed_Albatross_0000_100.jpg twice"),
        ("bad_line", "line 3 of CUB_200_2011/images.txt"),
        ("class_missing_from_classes_txt", "lacks 200.Common_Yellowthroat"),
        ("renamed_class", "has unknown classes 017.Cardinal_bird"),
    ],
)
def test_metadata_must_agree_with_the_images(tmp_path, copy, breakage, expected):
    top = copy / "CUB_200_2011"
    if breakage == "extra_file":
        shutil.copy(top / "images" / NAMES[5] / os.listdir(top / "images" / NAMES[5])[0],
                    top / "images" / NAMES[5] / "stray.jpg")
    elif breakage == "unknown_class":
        _edit(top / "images.txt", lambda t: t + "501 999.Dodo/Dodo_0001.jpg\n")
    elif breakage == "listed_twice":
        _edit(top / "images.txt", lambda t: t + f"501 {t.split()[1]}\n")
    elif breakage == "bad_line":
        _edit(top / "images.txt", lambda t: t.replace("\n3 ", "\nthree ", 1))
    elif breakage == "class_missing_from_classes_txt":
        _edit(top / "classes.txt", lambda t: t.replace("200 200.Common_Yellowthroat\n", ""))
    else:
        _edit(top / "classes.txt", lambda t: t.replace("017.Cardinal", "017.Cardinal_bird"))
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        cub.import_copy(root, [copy], progress=False)
    assert expected in one_line(err)
    assert leftovers(root) == []


def test_missing_images_make_a_partial_copy(tmp_path, copy, official):
    top = copy / "CUB_200_2011"
    shutil.rmtree(top / "images" / NAMES[3])  # a whole test class
    (top / "images" / NAMES[0] / "Black_footed_Albatross_0001_100.jpg").unlink()
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        cub.import_copy(root, [copy], progress=False)
    message = one_line(err)
    assert "1 class folder(s) missing (test/004.Groove_billed_Ani)" in message and "--allow-partial" in message
    assert "train/001.Black_footed_Albatross/Black_footed_Albatross_0001_100.jpg" in message
    assert leftovers(root) == []
    path = cub.import_copy(root, [copy], allow_partial=True, progress=False)
    h5 = read(path)
    assert h5["attrs"]["variant"] == "partial"
    assert bool(h5["attrs"]["partial"]) and NAMES[3] not in h5["names"] and len(h5["names"]) == 199
    assert h5["images"].shape[0] == 500 - 3 - 1

    complete = tmp_path / "complete"
    full = cub.import_copy(complete, [official[1]], progress=False)
    with pytest.raises(DataError) as err:
        cub.import_copy(complete, [copy], allow_partial=True, progress=False)
    assert "holds a complete CUB-200-2011" in one_line(err)
    assert bool(read(full)["attrs"]["partial"]) is False


def test_unreadable_jpeg_is_refused(tmp_path, copy):
    bad = copy / "CUB_200_2011" / "images" / NAMES[7] / os.listdir(copy / "CUB_200_2011" / "images" / NAMES[7])[0]
    bad.write_bytes(bad.read_bytes()[:200])
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        cub.import_copy(root, [copy], progress=False)
    message = one_line(err)
    assert f"1 unreadable image(s) in {copy} (truncated or corrupt)" in message
    assert f"test/{NAMES[7]}/{bad.name}" in message
    assert leftovers(root) == []


# ----------------------------------------------------------------------------------------------- download
def test_download_from_mirrors_with_md5(tmp_path, official, monkeypatch):
    archive = official[1]
    monkeypatch.setattr(cub, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(archive, mirror / "CUB_200_2011.tgz")

    path = cub.download(tmp_path / "a", str(mirror), progress=False)
    assert leftovers(tmp_path / "a") == ["cub", "cub/CUB_200_2011.tgz", "cub/cub_lanczos.h5"]
    assert read(path)["names"] == NAMES
    shutil.rmtree(mirror)  # prepared: a second download fetches nothing
    assert cub.download(tmp_path / "a", str(mirror), progress=False) == path

    url_mirror = tmp_path / "url-mirror"
    url_mirror.mkdir()
    shutil.copy(archive, url_mirror / "CUB_200_2011.tgz")
    monkeypatch.setenv("REPTILE_MIRROR", url_mirror.as_uri())
    assert read(cub.download(tmp_path / "b", progress=False))["names"] == NAMES

    monkeypatch.setattr(cub, "ARCHIVE_MD5", "0" * 32)
    with pytest.raises(DataError) as err:
        cub.download(tmp_path / "c", url_mirror.as_uri(), progress=False)
    message = one_line(err)
    assert "checksum mismatch for CUB_200_2011.tgz" in message and "reptile data import cub" in message
    assert leftovers(tmp_path / "c") == []


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_train_a_few_meta_iterations(cli, tmp_path, official, capsys):
    root = tmp_path / "data"
    cub.import_copy(root, [official[1]], progress=True)  # what `reptile data import cub` prints
    report = capsys.readouterr().err
    assert "CUB-200-2011 (complete, chen split)" in report and "train 100/100 classes, 200/200 images" in report
    run = tmp_path / "run"
    r = cli("train", "dataset=cub", f"dataset.root={root}", "model=conv4_miniimagenet", "model.filters=8",
            "episode.train_shots=2", "trainer.meta_iters=3", "trainer.meta_batch_size=1", "trainer.inner_steps=1",
            "trainer.log_every=1", "eval.val_episodes=2", "eval.inner_steps=1", "trainer.progress=false",
            f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (run / "last.pt").is_file()
    val = json.loads((run / "eval.json").read_text())
    assert val["split"] == "val" and 0 <= val["mean"] <= 1
