"""The model zoo against REFERENCE.md "Models": shapes, TensorFlow 'same' padding, initialisation, batch norm."""

import pytest
import torch
from omegaconf import OmegaConf

from reptile_cli.checkpoint import FORMAT, load_checkpoint
from reptile_cli.config import ModelConfig
from reptile_cli.errors import ConfigError
from reptile_cli.models import build_model
from reptile_cli.models.conv4 import Conv4, same_padding


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
