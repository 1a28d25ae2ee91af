"""No silently different data (issue 18): paths recorded resolved, resume and eval refuse changed data, the
folder preparation honours dataset.resize_filter, large inner batches are named, other N with an explicit
head, fixed episodes from a file."""

import json

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image

from reptile_cli.checkpoint import load_checkpoint
from reptile_cli.config import EpisodeConfig, EvalConfig, ImageDataConfig, TrainerConfig
from reptile_cli.evaluate import Evaluator, auto_chunk_size, large_batch_notes
from reptile_cli.families import build_task_family
from reptile_cli.models import replace_head
from reptile_cli.models.conv4 import Conv4
from reptile_cli.reptile import get_params

FOLDER = ["dataset=folder", "model.in_channels=1", "model.image_size=28", "episode.ways=3", "episode.train_shots=2",
          "trainer.meta_iters=6", "trainer.inner_steps=2", "trainer.inner_batch_size=4", "eval.val_episodes=3",
          "eval.inner_steps=3", "trainer.progress=false", "trainer.checkpoint_every=3", "trainer.log_every=3"]


def make_tree(root, seed, classes=15, per_class=5, size=28):
    """A folder dataset of grey, non-binary images (so a resize filter matters), different per seed."""
    rs = np.random.RandomState(seed)
    for c in range(classes):
        d = root / f"class{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rs.randint(0, 256, (size, size), dtype=np.uint8), "L").save(d / f"{i}.png")
    return root


@pytest.fixture
def two_places(tmp_path, monkeypatch):
    """tmp/a/w and tmp/b/w: from each, ../proj/data/tree names a different folder (other images)."""
    monkeypatch.setenv("REPTILE_DATA", str(tmp_path / "cache"))
    for place, seed in (("a", 0), ("b", 1)):
        (tmp_path / place / "w").mkdir(parents=True)
        make_tree(tmp_path / place / "proj" / "data" / "tree", seed)
    return tmp_path


def test_relative_root_recorded_resolved_resume_and_eval_use_it(cli, two_places):
    """Case 1: a relative dataset.root typed in one directory names the same data from any other."""
    a, b, run = two_places / "a" / "w", two_places / "b" / "w", two_places / "run"
    r = cli("train", *FOLDER, "dataset.root=../proj/data/tree", "trainer.max_time=0.001", f"hydra.run.dir={run}",
            cwd=a)
    assert r.returncode == 3, r.stderr  # stopped after its first iteration, resumable
    tree_a = str((two_places / "a" / "proj" / "data" / "tree").resolve())
    assert yaml.safe_load((run / "config.yaml").read_text())["dataset"]["root"] == tree_a
    assert load_checkpoint(run / "last.pt")["config"]["dataset"]["root"] == tree_a
    trained_on = load_checkpoint(run / "last.pt")["dataset_checksum"]

    # from b, ../proj/data/tree is other data: the resume reads the recorded folder, and completes
    r = cli("train", f"trainer.resume={run}", "trainer.max_time=null", cwd=b)
    assert r.returncode == 0, r.stderr
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["iteration"] == 6 and ckpt["dataset_checksum"] == trained_on
    assert json.loads((run / "provenance.json").read_text())["resumed"][0]["dataset_checksum"] == trained_on

    # eval from b without dataset.root: the training data, not b's folder
    r = cli("eval", str(run / "last.pt"), "eval.split=val", "eval.episodes=3", "eval.inner_steps=2",
            "output=ev_default.json", cwd=b)
    assert r.returncode == 0, r.stderr
    data = json.loads((b / "ev_default.json").read_text())["data"]
    assert data["root"] == tree_a and not data["differs_from_training"]


def test_resume_refuses_other_data_and_eval_needs_it_named(cli, two_places):
    """Resume with data whose checksum differs is refused (both checksums and the path named, nothing changed);
    eval on other data runs only when dataset.root is given, and says so in eval.json and the table."""
    a, b, run = two_places / "a" / "w", two_places / "b" / "w", two_places / "run"
    tree_b = (two_places / "b" / "proj" / "data" / "tree").resolve()
    r = cli("train", *FOLDER, "dataset.root=../proj/data/tree", "trainer.max_time=0.001", f"hydra.run.dir={run}",
            cwd=a)
    assert r.returncode == 3, r.stderr
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    r = cli("train", f"trainer.resume={run}", "dataset.root=../proj/data/tree", cwd=b)
    error = r.stderr.strip().splitlines()[-1]  # after the folder preparation's own progress lines
    assert r.returncode == 1 and error.startswith("reptile: error: trainer.resume="), r.stderr
    assert str(tree_b) in error and "is not the data the run was trained on" in error
    saved = load_checkpoint(run / "last.pt")["dataset_checksum"]
    assert saved[:16] in r.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before

    # the recorded root moved away (renamed): eval without dataset.root cannot find it; eval naming b's data runs
    r = cli("eval", str(run / "last.pt"), "eval.split=val", "eval.episodes=3", "dataset.root=../proj/data/tree",
            "output=ev_b.json", cwd=b)
    assert r.returncode == 0, r.stderr
    doc = json.loads((b / "ev_b.json").read_text())
    assert doc["data"]["differs_from_training"] and doc["data"]["root"] == str(tree_b)
    assert doc["data"]["training_content_sha256"] == saved
    assert "is NOT the data the checkpoint was trained on" in r.stdout

    # the recorded folder now holds other images: eval without dataset.root refuses, naming what to do
    tree_a = two_places / "a" / "proj" / "data" / "tree"
    make_tree(tree_a, seed=7)
    r = cli("eval", str(run / "last.pt"), "eval.split=val", "eval.episodes=3", cwd=b)
    error = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and error.startswith("reptile: error: ") and "give dataset.root=PATH explicitly" in error


def test_folder_preparation_uses_dataset_resize_filter(tmp_path, monkeypatch):
    """Case 2: dataset.resize_filter reaches the folder preparation: 40x40 grey images become 28x28 with the
    filter asked for (PIL's own resize of the same image), and the two filters give different pixels."""
    monkeypatch.setenv("REPTILE_DATA", str(tmp_path / "cache"))
    tree = make_tree(tmp_path / "tree", 0, classes=5, per_class=4, size=40)
    pixels = {}
    for name, pil in (("nearest", Image.Resampling.NEAREST), ("lanczos", Image.Resampling.LANCZOS)):
        cfg = OmegaConf.structured(ImageDataConfig(name="folder", split="auto", root=str(tree), resize_filter=name,
                                                   split_fractions=[0.6, 0.2, 0.2]))
        fam = build_task_family(cfg, OmegaConf.structured(EpisodeConfig(ways=1, train_shots=1, shots=1,
                                                                        query_shots=1)))
        pool = fam.pools["train"]
        got = pool.load(0, torch.tensor([0]))[0, 0]
        source = Image.open(tree / pool.names[0] / "0.png")
        want = torch.tensor(np.asarray(source.resize((28, 28), pil)), dtype=torch.float32) / 255
        assert torch.equal(got, want), name
        pixels[name] = got
    assert not torch.equal(pixels["nearest"], pixels["lanczos"])


def setup_family(root, **episode):
    cfg = OmegaConf.structured(ImageDataConfig(name="omniglot_small", split="alphabets", root=str(root)))
    return build_task_family(cfg, OmegaConf.structured(EpisodeConfig(**{"ways": 5, "shots": 1, **episode})))


def test_large_eval_inner_batch_is_named_and_counted_in_the_chunk(small_store):
    """Case 3: eval.inner_batch_size=100 on 5-way 1-shot: one warning naming the effective batch, the automatic
    chunk is computed from the 100 images of a step, and the steps equal those of a batch of 5 under the mean."""
    fam = setup_family(small_store)
    tcfg = OmegaConf.structured(TrainerConfig())
    big, small = (OmegaConf.structured(EvalConfig(inner_steps=3, inner_batch_size=b)) for b in (100, 5))
    notes = large_batch_notes(tcfg, big, fam)
    assert len(notes) == 1 and "eval.inner_batch_size=100 is larger than the 5 support examples" in notes[0]
    assert "effective batch is the 5 distinct examples" in notes[0] and "20 times" in notes[0]
    assert large_batch_notes(tcfg, small, fam) == []
    assert large_batch_notes(OmegaConf.structured(TrainerConfig(inner_batch_size=51)), small, fam) != []
    model = Conv4(5)
    cpu = torch.device("cpu")
    # largest activation 64x14x14 float32 per image: 6 images -> 32 tasks (the cap); 100 images -> 5
    assert auto_chunk_size(model, fam, cpu, 5) == 32
    assert auto_chunk_size(model, fam, cpu, 100) == (24 * 2**20) // (64 * 14 * 14 * 4 * 100)
    torch.manual_seed(0)
    res = {b: Evaluator(fam, model, tcfg, OmegaConf.structured(EvalConfig(inner_steps=3, inner_batch_size=b,
                                                                          path="sequential")), cpu, torch.float32
                        ).evaluate(get_params(model), None, "test", 4, 0, progress=False)
           for b in (5, 100)}
    assert res[5].after == pytest.approx(res[100].after) and res[5].other == pytest.approx(res[100].other)


def test_replace_head_zeros_and_glorot():
    model = Conv4(5, filters=8)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    state = {"kind": "adam", "step": 7,
             "exp_avg": {k: torch.full_like(v, 2.0) for k, v in weights.items()},
             "exp_avg_sq": {k: torch.arange(v.numel(), dtype=v.dtype).reshape(v.shape) for k, v in weights.items()}}
    w, s = replace_head(weights, state, 20, "zeros", torch.Generator().manual_seed(0))
    assert w["head.weight"].shape == (20, 32) and not w["head.weight"].any() and not w["head.bias"].any()
    assert all(torch.equal(w[k], weights[k]) for k in weights if not k.startswith("head."))
    # moments: per input feature, the mean over the 5 trained rows (exp_avg_sq of row r, column j is 32 r + j)
    assert torch.equal(s["exp_avg_sq"]["head.weight"][7], torch.arange(32, dtype=torch.float32) + 64)
    assert s["exp_avg_sq"]["head.bias"].tolist() == [2.0] * 20 and s["step"] == 7
    assert weights["head.weight"].shape == (5, 32)  # the arguments are not modified
    g1, _ = replace_head(weights, None, 20, "glorot", torch.Generator().manual_seed(0))
    g2, _ = replace_head(weights, None, 20, "glorot", torch.Generator().manual_seed(0))
    bound = (6 / (32 + 20)) ** 0.5
    assert torch.equal(g1["head.weight"], g2["head.weight"]) and g1["head.weight"].abs().max() <= bound


def test_other_n_and_fixed_episodes_cli(cli, tmp_path, small_store):
    """A 5-way checkpoint on 10-way tasks needs eval.new_head (recorded); drawn episodes saved to a file and
    evaluated from it give identical per-episode results, twice; bad files are one-line errors."""
    run = tmp_path / "run"
    r = cli("train", "experiment=omniglot_5w1s", "dataset=omniglot_small", f"dataset.root={small_store}",
            "trainer.meta_iters=3", "trainer.progress=false", "eval.val_episodes=2", "eval.inner_steps=2",
            f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    base = [str(run / "last.pt"), "eval.episodes=6", "eval.inner_steps=3"]
    r = cli("eval", *base, "episode.ways=10", cwd=tmp_path)
    assert r.returncode == 2 and "eval.new_head=zeros" in r.stderr, r.stderr
    r = cli("eval", *base, "episode.ways=10", "eval.new_head=zeros", "output=ten.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ten = json.loads((tmp_path / "ten.json").read_text())
    assert ten["settings"]["ways"] == 10 and ten["settings"]["new_head"] == "zeros"
    assert ten["before_adaptation"]["mean"] == pytest.approx(0.1)  # a zero head predicts class 0 everywhere
    r = cli("eval", *base, "eval.new_head=zeros", cwd=tmp_path)
    assert r.returncode == 2 and "does not apply" in r.stderr

    r = cli("eval", *base, "eval.save_episodes=eps.json", "output=drawn.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    episodes = json.loads((tmp_path / "eps.json").read_text())
    assert len(episodes["episodes"]) == 6 and episodes["format"] == "reptile-cli/episodes"
    runs = []
    for name in ("fixed1.json", "fixed2.json"):
        r = cli("eval", str(run / "last.pt"), "eval.inner_steps=3", "eval.episodes_file=eps.json", f"output={name}",
                cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        runs.append(json.loads((tmp_path / name).read_text()))
    drawn = json.loads((tmp_path / "drawn.json").read_text())
    assert runs[0]["per_task"] == runs[1]["per_task"] == drawn["per_task"]
    assert runs[0]["settings"]["episodes_file"].endswith("eps.json") and runs[0]["episodes"] == 6

    bad = dict(episodes, episodes=[dict(episodes["episodes"][0], query=episodes["episodes"][0]["support"])])
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    r = cli("eval", str(run / "last.pt"), "eval.episodes_file=bad.json", cwd=tmp_path)
    assert r.returncode == 1 and "repeats an image" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("eval", str(run / "last.pt"), "eval.episodes_file=eps.json", "episode.shots=2", cwd=tmp_path)
    assert r.returncode == 2 and "set episode.ways=5 episode.shots=1" in r.stderr


def test_pixels_changed_after_preparation_are_refused(tmp_path, monkeypatch):
    """A prepared file keeps its source checksum as a label; pixels edited afterwards would pass as the same
    data, so the file's pixel record is checked when it is opened."""
    import h5py

    from reptile_cli.errors import DataError

    monkeypatch.setenv("REPTILE_DATA", str(tmp_path / "cache"))
    tree = make_tree(tmp_path / "tree", 0, classes=5, per_class=4)
    cfg = OmegaConf.structured(ImageDataConfig(name="folder", split="auto", root=str(tree)))
    episode = OmegaConf.structured(EpisodeConfig(ways=1, train_shots=1, shots=1, query_shots=1))
    build_task_family(cfg, episode)  # prepares the cache and opens it: fine
    (cached,) = (tmp_path / "cache" / "folder").glob("*.h5")
    with h5py.File(cached, "r+") as f:
        f["images"][0] = 255 - f["images"][0]
    with pytest.raises(DataError, match="was changed after it was prepared"):
        build_task_family(cfg, episode)
