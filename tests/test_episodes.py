"""Episode invariants on a synthetic store (and the split rules), independent of any download."""

import pytest
import torch
from omegaconf import OmegaConf

from reptile_cli.config import EpisodeConfig, ImageDataConfig, SineDataConfig
from reptile_cli.data.datasets import character_of
from reptile_cli.data.sine import SineTasks
from reptile_cli.errors import ConfigError, DataError
from reptile_cli.families import build_task_family
from tests.conftest import write_store


def family(root, ways=5, shots=1, query=1, train_shots=10, **data):
    dcfg = OmegaConf.structured(ImageDataConfig(name="omniglot_small", split="alphabets", root=str(root), **data))
    ecfg = OmegaConf.structured(EpisodeConfig(ways=ways, shots=shots, query_shots=query, train_shots=train_shots))
    return build_task_family(dcfg, ecfg)


def ids(x):
    """(class id, image id) of each image, read back from the marker pixels the synthetic store sets."""
    px = (x * 255).round().long()
    return [(int(a), int(b)) for a, b in zip(px[:, 0, 0, 1], px[:, 0, 0, 0])]


def test_split_by_alphabet_is_disjoint_and_sized(small_store):
    fam = family(small_store)
    chars = {s: {character_of(n) for n in p.names} for s, p in fam.pools.items()}
    assert len(fam.pools["train"]) == 5 * 6 * 4  # 5 alphabets x 6 characters x 4 rotations
    assert len(fam.pools["val"]) == 6 and len(fam.pools["test"]) == 2 * 6
    assert not chars["train"] & chars["val"] and not chars["train"] & chars["test"] and not chars["val"] & chars["test"]


def test_eval_task_support_query_disjoint_and_classes_distinct(small_store):
    fam = family(small_store, ways=5, shots=3, query=2)
    for i in range(50):
        t = fam.eval_task("test", 0, i)
        assert t.support_x.shape == (15, 1, 28, 28) and t.query_x.shape == (10, 1, 28, 28)
        s, q = ids(t.support_x), ids(t.query_x)
        assert not set(s) & set(q)  # no image in both
        assert len(set(s)) == 15 and len(set(q)) == 10
        labels_by_class = {}
        for (c, _), y in zip(s + q, torch.cat([t.support_y, t.query_y]).tolist()):
            labels_by_class.setdefault(c, set()).add(y)
        assert len(labels_by_class) == 5  # N distinct classes
        assert all(len(v) == 1 for v in labels_by_class.values())  # one label per class
        assert sorted(v.pop() for v in labels_by_class.values()) == [0, 1, 2, 3, 4]


def test_same_seed_same_tasks_any_order(small_store):
    fam = family(small_store)
    a = [fam.train_task(7, it, i).x for it in range(3) for i in range(5)]
    b = [fam.train_task(7, it, i).x for it in reversed(range(3)) for i in reversed(range(5))][::-1]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(fam.train_task(8, 0, 0).x, a[0])
    assert torch.equal(fam.eval_task("test", 3, 11).query_x, family(small_store).eval_task("test", 3, 11).query_x)


def test_label_permutation_uniform_over_positions(small_store):
    """The class drawn first gets each label about equally often (sorted ids would always give label 0)."""
    fam = family(small_store, ways=5, train_shots=1)
    counts = torch.zeros(5)
    for i in range(2000):
        counts[int(fam.train_task(0, i, 0).y[0])] += 1
    # 2000 draws, expected 400 each; a 5-sigma band is +-100
    assert (counts - 400).abs().max() < 100, counts


def test_training_task_shape_and_counts(small_store):
    fam = family(small_store, ways=5, train_shots=10)
    t = fam.train_task(0, 0, 0)
    assert t.x.shape == (50, 1, 28, 28) and t.y.shape == (50,)
    assert torch.bincount(t.y).tolist() == [10] * 5
    assert t.x.min() >= 0 and t.x.max() <= 1


def test_class_too_small_is_an_error_naming_it(tmp_path):
    names = [f"A{a}/character{c:02d}" for a in range(8) for c in range(1, 4)]
    counts = [20] * len(names)
    counts[names.index("A3/character02")] = 2
    write_store(tmp_path / "omniglot" / "omniglot_small.h5", names, counts)
    with pytest.raises(ConfigError, match=r"A3/character02.*2 images.*needs 3"):
        fam = family(tmp_path, ways=2, shots=2, query=1, train_shots=2, rotations=False)
        for split in ("val", "test", "train"):  # whichever split holds the class
            fam.pools[split].check_size(3, split, "test")


def test_too_many_ways_is_a_config_error(small_store):
    with pytest.raises(ConfigError, match="episode.ways=7"):
        family(small_store, ways=7)  # the val split has 6 classes


def test_missing_store_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="reptile data download omniglot"):
        family(tmp_path)


def test_sine_tasks():
    cfg = OmegaConf.structured(SineDataConfig())
    fam = SineTasks(cfg, shots=10, train_shots=50)
    t = fam.train_task(0, 0, 0)
    assert t.x.shape == (50, 1) and t.y.shape == (50, 1)
    e = fam.eval_task("test", 0, 0)
    assert e.support_x.shape == (10, 1) and len(set(e.support_x[:, 0].tolist())) == 10
    assert torch.equal(e.query_x, fam.grid)
    amplitude = e.query_y.abs().max()
    assert 0.1 * 0.9 <= amplitude <= 5.0
    assert not torch.equal(fam.eval_task("val", 0, 0).query_y, e.query_y)  # separate streams
