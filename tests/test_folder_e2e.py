"""A folder copy of the small Omniglot (mixed image modes, split folders as the alphabet split) gives the same
tasks and per-task results as the built-in omniglot_small; bad folders stop before training with the reason."""

import zipfile

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from reptile_cli.config import EpisodeConfig, EvalConfig, ImageDataConfig, TrainerConfig
from reptile_cli.errors import ConfigError, DataError
from reptile_cli.evaluate import Evaluator
from reptile_cli.families import build_task_family
from reptile_cli.models.conv4 import Conv4
from reptile_cli.reptile import get_params
from tests.conftest import SHARED_DATA

MIRROR = SHARED_DATA / "omniglot"
pytestmark = pytest.mark.skipif(not (MIRROR / "images_background_small1.zip").is_file(), reason="no mirror")
MODES = ("1", "L", "RGB", "P", "RGBA")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(built-in omniglot_small family, folder family) over the same images."""
    from reptile_cli.data import omniglot

    base = tmp_path_factory.mktemp("omni")
    omniglot.download(base / "data", "small", str(MIRROR), progress=False)
    episode = OmegaConf.structured(EpisodeConfig(ways=5, shots=1, query_shots=1))
    builtin = build_task_family(OmegaConf.structured(ImageDataConfig(name="omniglot_small", split="alphabets",
                                                                     root=str(base / "data"))), episode)
    split_of = {n.split("/")[0]: s for s, p in builtin.pools.items() for n in p.names}
    folder = base / "folder"
    k = 0
    for archive in ("images_background_small1.zip", "images_background_small2.zip"):
        with zipfile.ZipFile(MIRROR / archive) as z:
            for info in z.infolist():
                parts = info.filename.split("/")
                if not info.filename.endswith(".png"):
                    continue
                alphabet, char, name = parts[-3:]
                out = folder / split_of[alphabet] / alphabet / char / name
                if out.exists():
                    continue  # Greek and Latin are in both archives
                out.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as f:
                    img = Image.open(f)
                    img.load()
                mode = MODES[k % len(MODES)]
                k += 1
                (img if mode == "1" else img.convert(mode)).save(out)
    monkey = pytest.MonkeyPatch()
    monkey.setenv("REPTILE_DATA", str(base / "cache"))
    cfg = ImageDataConfig(name="folder", split="auto", root=str(folder), rotations=True)
    mine = build_task_family(OmegaConf.structured(cfg), episode)
    monkey.undo()
    return builtin, mine


def test_same_tasks_as_the_builtin(both):
    builtin, mine = both
    assert {s: len(p) for s, p in mine.pools.items() if s != "train"} == \
        {s: len(p) for s, p in builtin.pools.items() if s != "train"}
    for i in range(30):
        a, b = builtin.eval_task("test", 0, i), mine.eval_task("test", 0, i)
        for key in ("support_x", "support_y", "query_x", "query_y"):
            assert torch.equal(getattr(a, key), getattr(b, key)), (i, key)


def test_same_per_task_results(both):
    builtin, mine = both
    torch.manual_seed(0)
    model = Conv4(5)
    results = []
    for fam in (builtin, mine):
        ev = Evaluator(fam, model, OmegaConf.structured(TrainerConfig()),
                       OmegaConf.structured(EvalConfig(inner_steps=5)), torch.device("cpu"), torch.float32)
        results.append(ev.evaluate(get_params(model), None, "test", 10, 0, progress=False))
    assert results[0].after == results[1].after and results[0].other == results[1].other


def test_corrupt_image_and_small_class_stop_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("REPTILE_DATA", str(tmp_path / "cache"))
    folder = tmp_path / "f"
    for c in range(6):
        for i in range(4):
            (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
            Image.new("L", (28, 28), color=i * 40).save(folder / f"class{c}" / f"{i}.png")
    episode = OmegaConf.structured(EpisodeConfig(ways=2, shots=3, query_shots=2, train_shots=2))
    cfg = OmegaConf.structured(ImageDataConfig(name="folder", split="auto", root=str(folder),
                                               split_fractions=[0.34, 0.33, 0.33]))
    with pytest.raises(ConfigError, match=r"class 'class\d' of split '(val|test)' has 4 images but .* needs 5"):
        build_task_family(cfg, episode)
    (folder / "class3" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match=r"class3/2\.png"):
        build_task_family(cfg, episode)
