"""tieredImageNet on small synthetic copies: the shipped Ren et al. lists (class and category counts, categories
disjoint across splits), the {train,val,test}/<wnid> layout of 84x84 images (the real 608 wnids, 2 PNGs each)
with its checks (another size, a class in two split folders or in the wrong one, an unlisted class, missing
classes), and an ImageNet-style training folder of other sizes, resized.

No real copy is used (none is available here).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reptile_cli.data import tiered
from reptile_cli.data.listed import check_disjoint_lists, class_lists
from reptile_cli.errors import DataError
from tests.test_data_cub import leftovers
from tests.test_data_miniimagenet import one_line, read

LISTS = class_lists("tieredimagenet")
SPLIT_OF = {w: s for s, names in LISTS.items() for w in names}
WNIDS = sorted(SPLIT_OF)
CATEGORY = tiered.class_categories()


def colour(c: int, k: int) -> tuple[int, int, int]:
    return (c % 256, (c // 256) * 40 + 100 * k, 77)


def write_image(path: Path, size: tuple[int, int], rgb: tuple[int, int, int], fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, rgb)
    img.putpixel((0, 0), (1, 2, 3))
    img.save(path, fmt)


def make_copy(folder: Path) -> Path:
    """``folder/tiered_imagenet/{train,val,test}/<wnid>/<wnid>_<k>.png``, 2 images of 84x84 a class."""
    for c, wnid in enumerate(WNIDS):
        for k in range(2):
            write_image(folder / "tiered_imagenet" / SPLIT_OF[wnid] / wnid / f"{wnid}_{k}.png", (84, 84), colour(c, k))
    (folder / "tiered_imagenet" / "README.txt").write_text("synthetic")
    return folder


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(the synthetic copy, a data root holding it prepared)."""
    base = tmp_path_factory.mktemp("tiered")
    folder = make_copy(base / "copy")
    tiered.import_copy(base / "root", [folder], progress=False)
    return folder, base / "root"


@pytest.fixture
def copy(tmp_path, official):
    return Path(shutil.copytree(official[0], tmp_path / "copy")) / "tiered_imagenet"


# ----------------------------------------------------------------------------------------------- lists
def test_shipped_lists_are_ren_et_al():
    assert {s: len(n) for s, n in LISTS.items()} == {"train": 351, "val": 97, "test": 160}
    categories = {s: {CATEGORY[w] for w in names} for s, names in LISTS.items()}
    assert {s: len(c) for s, c in categories.items()} == {"train": 20, "val": 6, "test": 8}
    assert not (categories["train"] & categories["val"] or categories["train"] & categories["test"]
                or categories["val"] & categories["test"])
    assert LISTS["train"][0] == "n01530575" and CATEGORY["n01530575"] == "n01524359"  # brambling, passerine
    broken = {**LISTS, "val": LISTS["val"] + [LISTS["train"][3]]}
    with pytest.raises(DataError) as err:
        check_disjoint_lists(broken, "the test lists")
    assert f"{LISTS['train'][3]} is in both 'train' and 'val'" in one_line(err)


# ----------------------------------------------------------------------------------------------- folders layout
def test_folders_layout(official):
    folder, root = official
    path = tiered.prepared_path(root)
    assert path == root / "tieredimagenet" / "tieredimagenet_lanczos.h5"
    assert leftovers(root) == ["tieredimagenet", "tieredimagenet/tieredimagenet_lanczos.h5"]
    h5 = read(path)
    assert h5["names"] == WNIDS and h5["split"] == [SPLIT_OF[w] for w in WNIDS]
    assert {s: h5["split"].count(s) for s in LISTS} == {"train": 351, "val": 97, "test": 160}
    assert h5["groups"] == [CATEGORY[w] for w in WNIDS]
    assert h5["images"].shape == (2 * 608, 84, 84, 3) and list(np.diff(h5["class_start"])) == [2] * 608
    for c in (0, 300, 607):  # PNGs of the right size keep every pixel
        for k in range(2):
            image = h5["images"][2 * c + k]
            assert tuple(image[40, 50]) == colour(c, k) and tuple(image[0, 0]) == (1, 2, 3)
    attrs = h5["attrs"]
    assert attrs["dataset"] == "tieredimagenet" and attrs["split"] == "ren" and attrs["source_layout"] == "folders"
    assert bool(attrs["partial"]) is False and attrs["classes_missing"] == 0

    before = path.stat().st_mtime_ns
    assert tiered.import_copy(root, [folder], progress=False) == path  # an identical source: kept
    assert path.stat().st_mtime_ns == before


def test_dataset_family_uses_the_stored_split(official):
    from omegaconf import OmegaConf

    from reptile_cli.config import EpisodeConfig, ImageDataConfig
    from reptile_cli.data.datasets import build_data_family

    cfg = ImageDataConfig(name="tieredimagenet", split="ren", root=str(official[1]), rotations=False,
                          resize_filter="lanczos", image_size=84, channels=3)
    family = build_data_family(OmegaConf.structured(cfg), OmegaConf.structured(EpisodeConfig(train_shots=2)))
    assert {s: len(p) for s, p in family.pools.items()} == {"train": 351, "val": 97, "test": 160}


@pytest.mark.parametrize("which", [0, 1])  # the first image of a class (checked before decoding) or another
def test_an_image_of_another_size_is_refused(tmp_path, copy, which):
    wnid = LISTS["val"][5]
    bad = copy / "val" / wnid / f"{wnid}_{which}.png"
    write_image(bad, (80, 84), (9, 9, 9))
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        tiered.import_copy(root, [copy], progress=False)
    message = one_line(err)
    assert f"1 image(s) of {copy} are not 84x84" in message and f"val/{wnid}/{bad.name} (80x84 pixels" in message
    assert "give an ImageNet training folder" in message
    assert leftovers(root) == []


def test_class_in_two_split_folders_or_the_wrong_one(tmp_path, copy):
    wnid = LISTS["train"][10]
    shutil.copytree(copy / "train" / wnid, copy / "val" / wnid)
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        tiered.import_copy(root, [copy], progress=False)
    assert f"class {wnid} sits in both the train and val split folders" in one_line(err)
    shutil.rmtree(copy / "train" / wnid)
    with pytest.raises(DataError) as err:
        tiered.import_copy(root, [copy], progress=False)
    assert f"is in the val folder but Ren et al.'s split puts {wnid} in train" in one_line(err)
    assert leftovers(root) == []


def test_unlisted_class_and_file_of_another_class_are_refused(tmp_path, copy):
    root = tmp_path / "root"
    write_image(copy / "test" / "n99999999" / "x.png", (84, 84), (0, 0, 0))
    with pytest.raises(DataError) as err:
        tiered.import_copy(root, [copy], progress=False)
    assert "1 class folder(s) of" in one_line(err) and "not in the tieredImageNet lists (n99999999)" in str(err.value)
    shutil.rmtree(copy / "test" / "n99999999")
    a, b = LISTS["test"][0], LISTS["test"][1]
    shutil.copy(copy / "test" / a / f"{a}_0.png", copy / "test" / b / f"{a}_7.png")
    with pytest.raises(DataError) as err:
        tiered.import_copy(root, [copy], progress=False)
    assert f"is an image of class {a} in the folder of class {b}" in one_line(err)
    assert leftovers(root) == []


def test_folder_that_is_no_class_and_a_resize_filter_are_refused(tmp_path, copy):
    """A split's sub-folder whose name is no wnid is not skipped; the 84x84 layout is stored as it is, so a
    resize filter does not apply to it."""
    root = tmp_path / "root"
    write_image(copy / "train" / "nfoo" / "y.png", (84, 84), (0, 0, 0))
    with pytest.raises(DataError) as err:
        tiered.import_copy(root, [copy], allow_partial=True, progress=False)
    message = one_line(err)
    assert "1 folder(s) of images in" in message and "are not tieredImageNet classes (train/nfoo)" in message
    shutil.rmtree(copy / "train" / "nfoo")
    with pytest.raises(DataError) as err:
        tiered.import_copy(root, [copy], resize_filter="nearest", progress=False)
    assert "--resize-filter nearest does not apply" in one_line(err) and "drop the option" in str(err.value)
    assert leftovers(root) == []


def test_wrong_size_is_reported_before_missing_classes(tmp_path):
    """A copy of one class with an image of another size: the size is what is wrong, whatever else is missing."""
    wnid = LISTS["train"][0]
    write_image(tmp_path / "copy" / "train" / wnid / "x.jpg", (10, 10), (5, 5, 5), "JPEG")
    with pytest.raises(DataError) as err:
        tiered.import_copy(tmp_path / "root", [tmp_path / "copy"], progress=False)
    assert "are not 84x84" in one_line(err) and "(10x10 pixels" in str(err.value)


def test_missing_classes_make_a_partial_copy(tmp_path, copy, official):
    gone = [LISTS["val"][0], LISTS["test"][-1]]
    for wnid in gone:
        shutil.rmtree(copy / SPLIT_OF[wnid] / wnid)
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        tiered.import_copy(root, [copy], progress=False)
    message = one_line(err)
    assert "2 of 608 listed classes have no images" in message and f"val/{gone[0]}" in message
    assert "--allow-partial" in message and leftovers(root) == []
    h5 = read(tiered.import_copy(root, [copy], allow_partial=True, progress=False))
    assert bool(h5["attrs"]["partial"]) and h5["attrs"]["classes_missing"] == 2 and len(h5["names"]) == 606
    assert {s: h5["split"].count(s) for s in LISTS} == {"train": 351, "val": 96, "test": 159}

    complete = tmp_path / "complete"
    tiered.import_copy(complete, [official[0]], progress=False)
    with pytest.raises(DataError) as err:
        tiered.import_copy(complete, [copy], allow_partial=True, progress=False)
    assert "holds a complete tieredImageNet" in one_line(err)


# ----------------------------------------------------------------------------------------------- ImageNet layout
def test_imagenet_training_folder_is_resized(tmp_path):
    train = tmp_path / "ILSVRC2012_train"
    for c, wnid in enumerate(WNIDS):
        for k, n in enumerate((10026, 9)):
            write_image(train / wnid / f"{wnid}_{n}.JPEG", (50 + c % 3, 40), colour(c, k), "JPEG")
    write_image(train / "n99999998" / "n99999998_1.JPEG", (50, 40), (0, 0, 0), "JPEG")  # not in tieredImageNet
    root = tmp_path / "root"
    h5 = read(tiered.import_copy(root, [train], progress=False))
    assert h5["names"] == WNIDS and h5["images"].shape == (2 * 608, 84, 84, 3)
    assert h5["attrs"]["source_layout"] == "imagenet" and not bool(h5["attrs"]["partial"])
    # file names sorted as text: <wnid>_10026 before <wnid>_9
    assert np.abs(h5["images"][2 * 400 + 1, 42, 42].astype(int) - colour(400, 1)).max() <= 3
    assert np.abs(h5["images"][2 * 400, 42, 42].astype(int) - colour(400, 0)).max() <= 3

    write_image(train / "tiered" / "val" / WNIDS[0] / "x.png", (84, 84), (0, 0, 0))
    with pytest.raises(DataError) as err:
        tiered.import_copy(tmp_path / "other", [train], progress=False)
    assert "mixes split folders" in one_line(err) and leftovers(tmp_path / "other") == []


def test_cli_reports_a_bad_copy_in_one_line(cli, tmp_path, copy):
    wnid = LISTS["test"][2]
    write_image(copy / "test" / wnid / f"{wnid}_1.png", (84, 90), (9, 9, 9))
    r = cli("data", "import", "tieredimagenet", str(copy), "--root", str(tmp_path / "root"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    error = [line for line in r.stderr.splitlines() if "not 84x84" in line]  # after the status lines
    assert len(error) == 1 and f"test/{wnid}/{wnid}_1.png (84x90 pixels, not 84x84)" in error[0]
    assert r.stderr.rstrip().endswith("(<wnid>/<wnid>_<n>.JPEG)") and leftovers(tmp_path / "root") == []
