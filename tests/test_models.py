"""The model zoo against REFERENCE.md "Models": shapes, TensorFlow 'same' padding, initialisation, batch norm."""

import pytest
import torch
from omegaconf import OmegaConf

from reptile_cli import rng
from reptile_cli.checkpoint import FORMAT, load_checkpoint
from reptile_cli.config import ModelConfig
from reptile_cli.errors import ConfigError
from reptile_cli.models import build_model
from reptile_cli.models.conv4 import Conv4, same_padding
from reptile_cli.models.resnet12 import dropblock_mask, dropout_mask


def conv4_cfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name": "conv4", **kw})


@pytest.mark.parametrize("channels,size,filters,stride,pool,features", [
    (1, 28, 64, 2, False, 256),  # Omniglot: 28 -> 14 -> 7 -> 4 -> 2
    (3, 84, 32, 1, True, 1152),  # Mini-ImageNet: 84 -> 42 -> 21 -> 11 -> 6
])
def test_conv4_shapes(channels, size, filters, stride, pool, features):
    model = Conv4(5, channels, size, filters, stride, pool)
    assert model.feature_size == features
    assert model(torch.rand(3, channels, size, size)).shape == (3, 5)


def test_tensorflow_same_padding():
    assert same_padding(28, 3, 2) == (0, 1)  # odd total: the extra row goes after, as TensorFlow
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(84, 3, 1) == (1, 1)


def test_batch_norm_uses_the_reference_epsilon_and_batch_statistics():
    model = build_model(conv4_cfg(), 5)
    norm = model.blocks[0].norm
    assert norm.eps == 1e-3 and not norm.track_running_stats
    # two values 0 and 0.01 in one channel: batch variance 2.5e-5, so (x - mean) / sqrt(var + 1e-3) = -+0.15617
    x = torch.zeros(2, 64, 1, 1, dtype=torch.float64)
    x[1] = 0.01
    out = norm.double()(x)[:, 0, 0, 0]
    assert torch.allclose(out, torch.tensor([-0.156174, 0.156174], dtype=torch.float64), atol=1e-6)
    assert build_model(conv4_cfg(bn_eps=1e-5), 5).blocks[3].norm.eps == 1e-5
    with pytest.raises(ConfigError, match="model.bn_eps=0"):
        build_model(conv4_cfg(bn_eps=0.0), 5)


def test_glorot_kernels_and_zero_biases():
    torch.manual_seed(0)
    model = Conv4(5)
    w = model.blocks[1].conv.weight.detach()  # fan_in = fan_out = 64 * 9: Glorot-uniform bound sqrt(6 / 1152)
    bound = (6 / (2 * 64 * 9)) ** 0.5
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.95 * bound
    assert all(float(b.detach().abs().max()) == 0 for n, b in model.named_parameters() if n.endswith("bias"))


def test_format_1_checkpoints_keep_pytorch_epsilon(tmp_path):
    """Checkpoints written before model.bn_eps existed were trained with 1e-5 and must evaluate as such."""
    model = Conv4(5)
    config = {"model": {"name": "conv4", "in_channels": 1, "image_size": 28}}
    torch.save({"format": FORMAT, "format_version": 1, "model": model.state_dict(), "config": config},
               tmp_path / "old.pt")
    ckpt = load_checkpoint(tmp_path / "old.pt")
    assert ckpt["format_version"] == 2 and ckpt["config"]["model"]["bn_eps"] == 1e-5
    assert build_model(conv4_cfg(**ckpt["config"]["model"]), 5).blocks[0].norm.eps == 1e-5


def resnet12_cfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name": "resnet12", "in_channels": 3,
                                                               "image_size": 84, **kw})


@pytest.mark.parametrize("widths,total,head", [
    ([64, 160, 320, 640], 12_427_525, 3_205),  # MetaOptNet's widths: 12.4M in the body
    ([64, 128, 256, 512], 7_999_365, 2_565),  # TADAM's
])
def test_resnet12_parameter_counts(widths, total, head):
    model = build_model(resnet12_cfg(widths=widths), 5)
    assert sum(p.numel() for p in model.parameters()) == total
    assert model.head.weight.numel() + model.head.bias.numel() == head
    # global average pooling: the count does not depend on the image size
    small = build_model(resnet12_cfg(widths=widths, image_size=32), 5)
    assert sum(p.numel() for p in small.parameters()) == total


@pytest.mark.parametrize("size,spatial", [(84, 5), (32, 2), (28, 1)])  # 84 -> 42 -> 21 -> 10 -> 5
def test_resnet12_shapes(size, spatial):
    model = build_model(resnet12_cfg(widths=[4, 8, 8, 16], image_size=size), 5)
    x = torch.rand(3, 3, size, size)
    assert model.blocks(x).shape == (3, 16, spatial, spatial)
    assert model(x).shape == (3, 5)


def test_resnet12_structure_and_init():
    """4 blocks of 3 conv 3x3 without bias + a 1x1 shortcut, batch norm on batch statistics, leaky ReLU 0.1."""
    model = build_model(resnet12_cfg(widths=[8, 8, 8, 8]), 5)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 16 and all(c.bias is None for c in convs)
    assert [c.kernel_size for c in convs[:4]] == [(3, 3)] * 3 + [(1, 1)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 16 and not any(n.track_running_stats for n in norms)
    assert all(n.eps == 1e-3 for n in norms)
    assert model.blocks[0].slope == 0.1
    assert torch.all(model.head.bias == 0)
    # batch statistics at any time: an image's logits depend on the rest of its batch
    x = torch.rand(4, 3, 84, 84)
    model.eval()
    assert not torch.allclose(model(x)[:1], model(x[:1]))


@pytest.mark.parametrize("override,needle", [
    ({"widths": [64, 160, 320]}, "needs 4 positive block widths"),
    ({"widths": [64, 0, 320, 640]}, "needs 4 positive block widths"),
    ({"image_size": 12}, "use 16 or more"),
    ({"leaky_slope": -1.0}, "lies in \\[0, 1\\)"),
    ({"leaky_slope": 1.0}, "lies in \\[0, 1\\)"),
    ({"bn_eps": 0.0}, "must be positive"),
    ({"drop_rate": 1.0}, "model.drop_rate=1.0: a dropout / DropBlock rate lies in \\[0, 1\\)"),
    ({"drop_rate": -0.1}, "lies in \\[0, 1\\)"),
    ({"drop_rate": 0.1, "dropblock_size": 0}, "model.dropblock_size=0: the DropBlock side is at least 1 pixel"),
    ({"drop_rate": 0.1, "dropblock_size": 11}, "model.dropblock_size=11 \\(with model.drop_rate=0.1\\): larger than "
                                               "the 10x10 maps of block 3 at 84x84 input .* use at most 10"),
    ({"drop_rate": 0.1, "image_size": 32}, "model.dropblock_size=5 .* larger than the 4x4 maps .* 2 on 32x32"),
])
def test_resnet12_bad_settings(override, needle):
    with pytest.raises(ConfigError, match=needle):
        build_model(resnet12_cfg(**override), 5)


def test_unknown_model_lists_the_zoo():
    with pytest.raises(ConfigError, match="use conv4, resnet12, mlp, policy"):
        build_model(OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name": "resnet18"}), 5)


@pytest.mark.parametrize("preset,dataset,name,widths", [
    ("resnet12", "miniimagenet", "resnet12", [64, 160, 320, 640]),
    ("resnet12_narrow", "miniimagenet", "resnet12", [64, 128, 256, 512]),
    ("resnet12", "omniglot", "resnet12", [64, 160, 320, 640]),
    ("conv4_cifar", "miniimagenet", "conv4", None),
])
def test_model_presets_follow_the_dataset(preset, dataset, name, widths):
    """model=resnet12 takes its input size from the dataset; conv4_cifar is fixed at 3x32x32."""
    from tests.test_audit import compose_train

    cfg = compose_train([f"dataset={dataset}", f"model={preset}"])
    assert cfg.model.name == name
    if widths is not None:
        assert list(cfg.model.widths) == widths
        assert (cfg.model.in_channels, cfg.model.image_size) == (cfg.dataset.channels, cfg.dataset.image_size)
    else:
        assert (cfg.model.in_channels, cfg.model.image_size, cfg.model.filters) == (3, 32, 32)


@pytest.mark.parametrize("preset,count", [("conv4_omniglot", 113_221), ("conv4_miniimagenet", 34_661),
                                          ("conv4_cifar", 29_541)])
def test_conv4_preset_parameter_counts(preset, count):
    """The counts the README's model zoo table gives (5-way)."""
    from tests.test_audit import compose_train

    cfg = compose_train([f"model={preset}"])
    assert sum(p.numel() for p in build_model(cfg.model, 5).parameters()) == count


def test_resnet12_dropout_is_off_by_default_and_only_in_training_masks():
    model = build_model(resnet12_cfg(widths=[4, 8, 8, 16]), 5)
    assert model.drop_rate == 0 and not model.noisy
    noisy = build_model(resnet12_cfg(widths=[4, 8, 8, 16], drop_rate=0.1), 5)
    assert noisy.noisy and noisy.block_shapes == [(4, 42, 42), (8, 21, 21), (8, 10, 10), (16, 5, 5)]
    noisy.load_state_dict(model.state_dict())
    x = torch.rand(6, 3, 84, 84)
    # without masks (evaluation) the forward is the deterministic one; with masks it is not
    assert torch.equal(noisy(x), model(x))
    masks = noisy.draw_noise(6, rng.noise_generator(0, 3, 1))
    assert [tuple(m.shape) for m in masks] == [(6, *s) for s in noisy.block_shapes]
    assert not torch.allclose(noisy(x, masks), model(x))
    # the same coordinates give the same masks; another task or iteration others
    again = noisy.draw_noise(6, rng.noise_generator(0, 3, 1))
    other = noisy.draw_noise(6, rng.noise_generator(0, 3, 2))
    assert all(torch.equal(a, b) for a, b in zip(masks, again))
    assert not any(torch.equal(a, b) for a, b in zip(masks, other))


def test_dropout_mask_values():
    g = rng.generator(0, "test")
    m = dropout_mask((64, 32, 21, 21), 0.1, g, torch.float64)
    assert set(m.unique().tolist()) == {0.0, 1 / 0.9}
    assert (m == 0).double().mean().item() == pytest.approx(0.1, abs=0.002)  # 903,168 draws
    assert torch.equal(dropout_mask((4, 4), 0.0, g, torch.float32), torch.ones(4, 4))


def _is_union_of_squares(dropped: torch.Tensor, b: int) -> bool:
    """Whether every dropped pixel of a 2-D map lies in a b x b square of dropped pixels."""
    h, w = dropped.shape
    covered = torch.zeros_like(dropped)
    for i in range(h - b + 1):
        for j in range(w - b + 1):
            if dropped[i:i + b, j:j + b].all():
                covered[i:i + b, j:j + b] = True
    return torch.equal(covered, dropped)


@pytest.mark.parametrize("size,block", [(21, 5), (10, 5), (8, 2), (5, 5), (2, 5)])
def test_dropblock_mask_drops_squares_at_the_rate(size, block):
    """DropBlock (Ghiasi et al. 2018): zeros come in squares of the block size (at most the map), about
    ``rate`` of the pixels are dropped, and the kept ones are scaled so the mask's mean is 1."""
    g = rng.generator(0, "test", size, block)
    m = dropblock_mask((200, 16, size, size), 0.1, block, g, torch.float64)
    b = min(block, size)
    dropped = m == 0
    assert all(_is_union_of_squares(dropped[n, c], b) for n in range(3) for c in range(16))
    assert dropped.double().mean().item() == pytest.approx(0.1, abs=0.02)
    assert m.mean().item() == pytest.approx(1.0, rel=1e-12)
    kept = m[~dropped]
    assert torch.allclose(kept, kept[0].expand_as(kept))
    assert torch.equal(dropblock_mask((2, 3, 6, 6), 0.0, block, g, torch.float32), torch.ones(2, 3, 6, 6))
