"""CIFAR-FS and FC100 on synthetic copies in the exact official format (no real CIFAR-100 here, no network):
the shipped class lists (sizes, disjointness, FC100's superclass grouping), import from the archive and the
extracted folder, download through file:// and folder mirrors with the md5 checked, every refused input
leaving nothing behind, partial copies, pixels (CHW rows -> HWC), and a short `reptile train dataset=cifarfs`.

The synthetic pickles are written as Python 2's cPickle wrote the official ones (protocol 2, strings as
BINSTRING, so they load as ``bytes`` with ``encoding="bytes"``; numpy arrays through
``numpy.core.multiarray._reconstruct``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from reptile_cli.data import cifar
from reptile_cli.data import download as dl
from reptile_cli.data.datasets import LISTED
from reptile_cli.data.listed import class_lists
from reptile_cli.errors import DataError

TRAIN_PER_CLASS, TEST_PER_CLASS = 3, 1  # the official copy has 500 + 100


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No mirror from the environment, no pause between retries."""
    monkeypatch.delenv("REPTILE_MIRROR", raising=False)
    monkeypatch.setattr(dl, "BACKOFF_S", 0.0)


def prepare(spec, root: Path, *sources: Path, allow_partial: bool = False, resize_filter: str = "box") -> Path:
    """``spec.import_copy`` as the CLI calls it, quietly."""
    return spec.import_copy(root, list(sources), resize_filter=resize_filter, allow_partial=allow_partial,
                            progress=False)


def refused(fn, *args, **kwargs) -> str:
    """The message of the DataError that ``fn(*args, **kwargs)`` raises, checked to be one line."""
    with pytest.raises(DataError) as err:
        fn(*args, **kwargs)
    message = str(err.value)
    assert message and "\n" not in message
    return message


def no_files(root: Path) -> bool:
    """Nothing was left behind: no file at all under ``root`` (no .h5, no temporary, no lock)."""
    return not root.exists() or not [p for p in root.rglob("*") if p.is_file()]


# ----------------------------------------------------------------------------------------------- synthetic copy
class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: ``str``/``bytes`` as BINSTRING (8-bit strings), numpy's array
    rebuilder under its numpy 1 name."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_string(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_string
    dispatch[bytes] = save_string

    def save_global(self, obj, name=None):
        if obj is np.ndarray(0).__reduce__()[0]:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    dispatch[type(np.ndarray(0).__reduce__()[0])] = save_global


def py2_pickle(obj) -> bytes:
    out = io.BytesIO()
    Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue()


def pixel_rows(fine: np.ndarray, index: np.ndarray, batch: int) -> np.ndarray:
    """Rows [N, 3072] (R, G, B planes of 32x32) that say which image they are: R[0,0] = class,
    G[0,0] = index in the pickle mod 256, B[0,0] = pickle (0 train, 1 test), the rest a pattern that differs
    between channels and positions (so a wrong CHW -> HWC shows)."""
    n = len(fine)
    planes = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    y, x = np.mgrid[0:32, 0:32]
    for ch in range(3):
        planes[:, ch] = ((y * 7 + x * 3 + ch * 50 + fine[:, None, None]) % 256).astype(np.uint8)
    planes[:, 0, 0, 0] = fine
    planes[:, 1, 0, 0] = index % 256
    planes[:, 2, 0, 0] = batch
    return planes.reshape(n, 3072)


def batch_dict(per_class: int, batch: int, label: str) -> dict:
    fine = np.repeat(np.arange(100), per_class)
    fine = np.roll(fine, 7)  # not sorted by class, as in the official pickles
    coarse_index = {c: i for i, c in enumerate(cifar.SUPERCLASSES)}
    coarse = [coarse_index[cifar.SUPERCLASS_OF[cifar.FINE_NAMES[f]]] for f in fine]
    names = [f"{cifar.FINE_NAMES[f]}_s_{batch}{i:05d}.png" for i, f in enumerate(fine)]
    return {"batch_label": f"{label} batch", "fine_labels": fine.tolist(), "coarse_labels": coarse,
            "filenames": names, "data": pixel_rows(fine, np.arange(len(fine)), batch)}


def meta_dict() -> dict:
    return {"fine_label_names": list(cifar.FINE_NAMES), "coarse_label_names": list(cifar.SUPERCLASSES)}


def official_pickles(train: int = TRAIN_PER_CLASS, test: int = TEST_PER_CLASS) -> dict[str, bytes]:
    return {"meta": py2_pickle(meta_dict()), "train": py2_pickle(batch_dict(train, 0, "training")),
            "test": py2_pickle(batch_dict(test, 1, "testing"))}


def write_tar(path: Path, files: dict[str, bytes], top: str = "cifar-100-python") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo(top)
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in {"file.txt~": b"", **files}.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_folder(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir(parents=True)
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """A synthetic cifar-100-python.tar.gz: 3 train + 1 test image per class."""
    return write_tar(tmp_path_factory.mktemp("src") / "cifar-100-python.tar.gz", official_pickles())


@pytest.fixture
def complete(monkeypatch):
    """Make the synthetic 3 + 1 images per class count as the complete set."""
    monkeypatch.setattr(cifar, "IMAGES_PER_CLASS", {"train": TRAIN_PER_CLASS, "test": TEST_PER_CLASS})


def read(path: Path) -> dict:
    with h5py.File(path, "r") as h5:
        return {"images": h5["images"][:], "class_start": h5["class_start"][:],
                "names": list(h5["class_names"].asstr()[:]), "groups": list(h5["class_groups"].asstr()[:]),
                "split": list(h5["class_split"].asstr()[:]), "attrs": dict(h5.attrs)}


# ----------------------------------------------------------------------------------------------- class lists
def test_shipped_lists_have_the_published_sizes_and_cover_cifar100():
    fs, fc = class_lists("cifarfs"), class_lists("fc100")
    assert {s: len(v) for s, v in fs.items()} == {"train": 64, "val": 16, "test": 20}
    assert {s: len(v) for s, v in fc.items()} == {"train": 60, "val": 20, "test": 20}
    for lists in (fs, fc):
        names = [n for v in lists.values() for n in v]
        assert len(names) == len(set(names)) == 100 and set(names) == set(cifar.FINE_NAMES)
    assert cifar.FINE_NAMES[:3] == ("apple", "aquarium_fish", "baby") and len(cifar.SUPERCLASSES) == 20
    assert all(len(fines) == 5 for fines in cifar.SUPERCLASSES.values())
    # a few facts of the published splits
    assert {"whale", "rose", "woman"} <= set(fs["test"]) and {"beaver", "shark"} <= set(fs["val"])
    assert cifar.split_of_classes(fs, "cifarfs")["dolphin"] == "train"


def test_fc100_keeps_each_superclass_in_one_split():
    split_of = cifar.split_of_classes(class_lists("fc100"), "fc100")
    by_split: dict[str, list[str]] = {}
    for coarse, fines in cifar.SUPERCLASSES.items():
        splits = {split_of[f] for f in fines}
        assert len(splits) == 1, coarse
        by_split.setdefault(splits.pop(), []).append(coarse)
    assert {s: len(v) for s, v in by_split.items()} == {"train": 12, "val": 4, "test": 4}
    assert sorted(by_split["test"]) == ["aquatic_mammals", "insects", "medium_mammals", "people"]
    assert sorted(by_split["val"]) == ["large_carnivores", "large_omnivores_and_herbivores",
                                       "non-insect_invertebrates", "small_mammals"]
    # CIFAR-FS does not: its test classes come from many superclasses
    fs = cifar.split_of_classes(class_lists("cifarfs"), "cifarfs")
    assert any(len({fs[f] for f in fines}) > 1 for fines in cifar.SUPERCLASSES.values())


def test_shipped_list_files_name_their_source():
    folder = Path(cifar.__file__).parent / "class_lists"
    for name in ("cifarfs", "fc100"):
        for split in ("train", "val", "test"):
            head = (folder / name / f"{split}.txt").read_text().splitlines()[:2]
            assert head[0].startswith("#") and "pytorch-meta" in "".join(head)
    sources = (folder / "SOURCES.md").read_text()
    assert "CIFAR-FS" in sources and "FC100" in sources


def test_lists_are_checked(monkeypatch):
    lists = class_lists("fc100")
    message = refused(cifar.split_of_classes, {**lists, "val": lists["val"][:-1] + [lists["train"][0]]}, "fc100")
    assert "in both 'train' and 'val'" in message
    swapped = {s: list(v) for s, v in lists.items()}
    swapped["val"][0], swapped["test"][0] = swapped["test"][0], swapped["val"][0]  # sizes kept, superclasses split
    assert "superclass" in refused(cifar.split_of_classes, swapped, "fc100")
    assert "airplane" in refused(cifar.split_of_classes, {**lists, "test": lists["test"][:-1] + ["airplane"]}, "fc100")


def test_specs_are_registered():
    assert (LISTED["cifarfs"].split, LISTED["fc100"].split) == ("bertinetto", "oreshkin")
    root = Path("/data")
    assert LISTED["cifarfs"].prepared_path(root, "lanczos") == root / "cifarfs" / "cifarfs.h5"
    assert LISTED["fc100"].prepared_path(root, "box") == root / "fc100" / "fc100.h5"
    assert "reptile data download fc100" in LISTED["fc100"].hint(root)


# ----------------------------------------------------------------------------------------------- import
def test_import_archive_writes_the_split_and_the_pixels(tmp_path, archive, complete):
    root = tmp_path / "data"
    path = prepare(cifar.FC100, root, archive)
    assert path == root / "fc100" / "fc100.h5"
    h5 = read(path)
    assert h5["names"] == sorted(h5["names"]) == list(cifar.FINE_NAMES)
    assert [h5["split"].count(s) for s in ("train", "val", "test")] == [60, 20, 20]
    assert h5["groups"] == [cifar.SUPERCLASS_OF[n] for n in h5["names"]]
    for coarse in cifar.SUPERCLASSES:  # superclass grouping, read back from the file
        assert len({s for s, g in zip(h5["split"], h5["groups"]) if g == coarse}) == 1
    attrs = h5["attrs"]
    assert (attrs["dataset"], attrs["split"], attrs["partial"], attrs["pickles"]) == ("fc100", "oreshkin", False,
                                                                                   "train+test")
    assert (attrs["image_size"], attrs["channels"], attrs["resize_filter"]) == (32, 3, "none")
    images = h5["images"]
    assert images.shape == (400, 32, 32, 3) and images.dtype == np.uint8
    assert h5["class_start"].tolist() == list(range(0, 401, 4))

    # every stored image equals its pickle row, CHW -> HWC
    train = batch_dict(TRAIN_PER_CLASS, 0, "training")
    c = cifar.FINE_NAMES.index("shark")
    block = images[h5["class_start"][c]:h5["class_start"][c + 1]]
    rows = [i for i, f in enumerate(train["fine_labels"]) if f == c]  # train files sort first (_s_0 < _s_1)
    first = train["data"][rows[0]].reshape(3, 32, 32)
    assert np.array_equal(block[0], first.transpose(1, 2, 0))
    # one pixel exactly: row 5, column 9, green = (5*7 + 9*3 + 50 + class) % 256
    assert block[0, 5, 9, 1] == (5 * 7 + 9 * 3 + 50 + c) % 256 == train["data"][rows[0]][1024 + 5 * 32 + 9]
    assert block[0, 0, 0].tolist() == [c, rows[0] % 256, 0] and block[-1, 0, 0, 2] == 1  # the test image last


def test_folder_equals_archive_and_reimport_keeps_the_file(tmp_path, archive, complete, capsys):
    a = prepare(cifar.CIFARFS, tmp_path / "a", archive)
    folder = write_folder(tmp_path / "src" / "cifar-100-python", official_pickles())
    b = cifar.CIFARFS.import_copy(tmp_path / "b", [folder.parent], resize_filter="box", allow_partial=False,
                                  progress=True)
    ha, hb = read(a), read(b)
    assert np.array_equal(ha["images"], hb["images"]) and ha["split"] == hb["split"]
    assert ha["attrs"]["content_sha256"] == hb["attrs"]["content_sha256"]
    assert [ha["split"].count(s) for s in ("train", "val", "test")] == [64, 16, 20]
    assert "CIFAR-FS (complete, bertinetto split" in capsys.readouterr().err
    before = b.stat().st_mtime_ns
    cifar.CIFARFS.import_copy(tmp_path / "b", [folder], resize_filter="box", allow_partial=False, progress=True)
    assert b.stat().st_mtime_ns == before and "already prepared, kept" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "b").rglob("*") if p.is_file()) == ["cifarfs.h5"]


def test_partial_copy_needs_allow_partial_and_never_replaces_a_complete_file(tmp_path, archive, monkeypatch):
    root = tmp_path / "data"
    message = refused(prepare, cifar.CIFARFS, root, archive)
    assert "incomplete" in message and "--allow-partial" in message
    assert no_files(root)
    path = prepare(cifar.CIFARFS, root, archive, allow_partial=True)
    h5 = read(path)
    assert h5["attrs"]["partial"] and h5["attrs"]["variant"] == "partial" and len(h5["images"]) == 400

    only_test = write_folder(tmp_path / "only_test", {k: v for k, v in official_pickles().items() if k != "train"})
    assert "no train pickle" in refused(prepare, cifar.CIFARFS, root, only_test)

    monkeypatch.setattr(cifar, "IMAGES_PER_CLASS", {"train": TRAIN_PER_CLASS, "test": TEST_PER_CLASS})
    full = prepare(cifar.CIFARFS, root, archive)
    assert not read(full)["attrs"]["partial"]
    assert "would replace it" in refused(prepare, cifar.CIFARFS, root, only_test, allow_partial=True)
    assert not read(full)["attrs"]["partial"] and len(read(full)["images"]) == 400


class Evil:
    """Unpickling it runs ``touch MARKER``, unless the unpickler refuses ``os.system``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def wrong_rows_archive(path: Path) -> Path:
    """An archive in the official layout whose train pickle holds rows of 1024 values, not 3072."""
    wrong_rows = batch_dict(TRAIN_PER_CLASS, 0, "training")
    wrong_rows["data"] = wrong_rows["data"][:, :1024]
    return write_tar(path, {**official_pickles(), "train": py2_pickle(wrong_rows)})


def _bad_sources(tmp_path: Path, archive: Path) -> dict[str, tuple[Path, str]]:
    """name -> (a bad copy, a piece of its error message)."""
    tmp_path.mkdir()
    good = official_pickles()
    raw = archive.read_bytes()
    bad: dict[str, tuple[Path, str]] = {}
    truncated = tmp_path / "truncated" / "cifar-100-python.tar.gz"
    truncated.parent.mkdir()
    truncated.write_bytes(raw[: len(raw) * 2 // 3])
    bad["truncated"] = (truncated, "truncated")
    cut_end = tmp_path / "cut_end" / "cifar-100-python.tar.gz"  # only the gzip trailer (CRC) missing
    cut_end.parent.mkdir()
    cut_end.write_bytes(raw[:-8])
    bad["gzip trailer missing"] = (cut_end, "truncated")
    cifar10 = {f"data_batch_{i}": py2_pickle({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]})
               for i in range(1, 3)}
    bad["cifar-10 under the right name"] = (
        write_tar(tmp_path / "c10" / "cifar-100-python.tar.gz", cifar10, top="cifar-10-batches-py"), "CIFAR-10")
    random_tar = tmp_path / "random" / "cifar-100-python.tar.gz"
    random_tar.parent.mkdir()
    with tarfile.open(random_tar, "w:gz") as tar:
        info = tarfile.TarInfo("notes/readme.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    bad["random tar"] = (random_tar, "not the CIFAR-100 python archive")
    not_tar = tmp_path / "html" / "cifar-100-python.tar.gz"
    not_tar.parent.mkdir()
    not_tar.write_text("<!DOCTYPE html><html>login</html>")
    bad["not an archive"] = (not_tar, "not a readable tar.gz")
    bad["rows of 1024"] = (wrong_rows_archive(tmp_path / "rows" / "cifar-100-python.tar.gz"), "3072")
    renamed = meta_dict()
    renamed["fine_label_names"] = ["airplane", *renamed["fine_label_names"][1:]]
    bad["class names"] = (write_folder(tmp_path / "names", {**good, "meta": py2_pickle(renamed)}), "airplane")
    mislabelled = batch_dict(TEST_PER_CLASS, 1, "testing")
    mislabelled["coarse_labels"][0] = (mislabelled["coarse_labels"][0] + 1) % 20
    bad["superclass label"] = (write_folder(tmp_path / "coarse", {**good, "test": py2_pickle(mislabelled)}),
                               "superclass")
    bad["foreign callable in the pickle"] = (
        write_folder(tmp_path / "evil", {**good, "meta": pickle.dumps(Evil(tmp_path / "ran"), protocol=2)}),
        "system, which the CIFAR-100 pickles never do")
    bad["truncated pickle"] = (write_folder(tmp_path / "short", {**good, "test": good["test"][:500]}),
                               "truncated or corrupt")
    bad["no meta"] = (write_folder(tmp_path / "nometa", {"train": good["train"]}), "no meta")
    bad["empty folder"] = (write_folder(tmp_path / "empty", {}), "neither meta")
    bad["missing path"] = (tmp_path / "nowhere.tar.gz", "does not exist")
    return bad


def test_bad_inputs_are_refused_in_one_line_leaving_nothing(tmp_path, archive, complete):
    for what, (source, expected) in _bad_sources(tmp_path / "bad", archive).items():
        root = tmp_path / "data" / what.replace(" ", "_")
        message = refused(prepare, cifar.CIFARFS, root, source, allow_partial=True)
        assert expected in message, (what, message)
        assert no_files(root), what
    assert not (tmp_path / "bad" / "ran").exists()  # the pickled command never ran
    assert "one path" in refused(prepare, cifar.FC100, tmp_path / "x", archive, archive)
    assert "resize filter" in refused(prepare, cifar.FC100, tmp_path / "x", archive, resize_filter="cubic")


def test_a_class_in_two_splits_is_refused(tmp_path, archive, complete, monkeypatch):
    lists = class_lists("cifarfs")
    monkeypatch.setattr(cifar, "class_lists", lambda name: {**lists, "test": lists["test"][1:] + [lists["val"][0]]})
    root = tmp_path / "data"
    assert f"class {lists['val'][0]} is in both 'val' and 'test'" in refused(prepare, cifar.CIFARFS, root, archive)
    assert no_files(root)


# ----------------------------------------------------------------------------------------------- download
@pytest.fixture
def official(archive, monkeypatch, complete):
    """The synthetic archive stands for the official one: its md5 and size become the expected ones."""
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(cifar, "ARCHIVE_BYTES", archive.stat().st_size)
    return archive


def test_download_from_folder_and_file_url_mirrors(tmp_path, official, capsys):
    root = tmp_path / "data"
    fs = cifar.CIFARFS.download(root, str(official.parent), resize_filter="box", progress=True)
    assert fs == root / "cifarfs" / "cifarfs.h5" and (root / "cifar100" / "cifar-100-python.tar.gz").is_file()
    assert [read(fs)["split"].count(s) for s in ("train", "val", "test")] == [64, 16, 20]
    # the archive is shared: FC100 through a file:// URL that does not even exist fetches nothing
    fc = cifar.FC100.download(root, (tmp_path / "gone").as_uri(), resize_filter="box", progress=False)
    assert [read(fc)["split"].count(s) for s in ("train", "val", "test")] == [60, 20, 20]
    capsys.readouterr()
    before = fs.stat().st_mtime_ns
    assert cifar.CIFARFS.download(root, None, resize_filter="box", progress=True) == fs
    assert fs.stat().st_mtime_ns == before and "already prepared" in capsys.readouterr().err

    other = tmp_path / "other"
    fc = cifar.FC100.download(other, official.parent.as_uri(), resize_filter="box", progress=False)
    assert read(fc)["attrs"]["content_sha256"] == read(root / "fc100" / "fc100.h5")["attrs"]["content_sha256"]


def test_download_uses_the_mirror_variable_and_refuses_a_wrong_md5(tmp_path, official, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv("REPTILE_MIRROR", str(official.parent))
    assert cifar.FC100.download(root, None, resize_filter="box", progress=False).is_file()

    monkeypatch.setattr(cifar, "ARCHIVE_MD5", "0" * 32)
    wrong = tmp_path / "wrong"
    message = refused(cifar.CIFARFS.download, wrong, str(official.parent), resize_filter="box", progress=False)
    assert "checksum mismatch" in message and "reptile data import cifarfs" in message
    assert no_files(wrong)
    message = refused(cifar.CIFARFS.download, wrong, str(tmp_path / "empty_mirror"), resize_filter="box",
                      progress=False)
    assert "not found" in message
    assert no_files(wrong)


def test_download_of_a_verified_archive_that_is_no_cifar100(tmp_path, monkeypatch, complete):
    bad = wrong_rows_archive(tmp_path / "mirror" / "cifar-100-python.tar.gz")
    mirror = bad.parent
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", hashlib.md5(bad.read_bytes()).hexdigest())
    root = tmp_path / "data"
    assert "3072" in refused(cifar.CIFARFS.download, root, str(mirror), resize_filter="box", progress=False)
    assert not (root / "cifarfs").exists()


# ----------------------------------------------------------------------------------------------- end to end
def test_cli_import_and_train(cli, tmp_path, archive):
    root = tmp_path / "data"
    r = cli("data", "import", "cifarfs", str(archive), "--root", str(root), cwd=tmp_path)
    assert r.returncode != 0 and "--allow-partial" in r.stderr and "Traceback" not in r.stderr
    r = cli("data", "import", "cifarfs", str(archive), "--root", str(root), "--allow-partial", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    r = cli("train", "dataset=cifarfs", f"dataset.root={root}", "model=conv4_miniimagenet", "model.image_size=32",
            "model.filters=8", "episode.train_shots=2", "trainer.meta_iters=2", "trainer.inner_steps=1",
            "eval.val_episodes=2", "trainer.progress=false", f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "partial copy of CIFAR-FS" in r.stdout + r.stderr
    val = json.loads((run / "eval.json").read_text())
    assert val["split"] == "val" and 0 <= val["mean"] <= 1


def test_resize_filter_does_not_apply_to_cifar():
    """CIFAR images are never resized: another dataset.resize_filter is refused, not ignored."""
    from omegaconf import OmegaConf

    from reptile_cli.config import EpisodeConfig, ImageDataConfig
    from reptile_cli.data.datasets import build_data_family
    from reptile_cli.errors import ConfigError

    cfg = OmegaConf.structured(ImageDataConfig(name="cifarfs", split="bertinetto", resize_filter="lanczos",
                                               image_size=32, channels=3, rotations=False))
    with pytest.raises(ConfigError, match="dataset.resize_filter=lanczos does not apply"):
        build_data_family(cfg, OmegaConf.structured(EpisodeConfig()), root="/nonexistent")
