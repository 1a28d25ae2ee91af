"""ResNet-12, the backbone most few-shot papers since 2018 report with (TADAM, Oreshkin et al. 2018; MetaOptNet,
Lee et al. 2019; easyfsl).

Four residual blocks; each is 3 x [conv 3x3 (no bias, padding 1) -> batch norm -> leaky ReLU] (the last
activation after the residual sum), a shortcut conv 1x1 -> batch norm, then max-pool 2x2/2. Widths
64-160-320-640 (MetaOptNet) or the narrower 64-128-256-512 (TADAM); global average pooling, then a linear head.
84x84 input: 84 -> 42 -> 21 -> 10 -> 5 (floor, as ``nn.MaxPool2d(2)``); 32x32: 32 -> 16 -> 8 -> 4 -> 2.

Differences from the published models, kept so that the tool's Reptile inner loop stays a pure function of
the parameters (README "Model zoo"):

- batch norm always normalises with the current batch's statistics, at training and test time, as the rest of
  the tool (the published models keep running statistics and use them at test time);
- dropout and DropBlock are off by default (``model.drop_rate=0``). With ``model.drop_rate`` > 0 they are laid
  out as MetaOptNet's: dropout on the output of blocks 1 and 2, DropBlock (Ghiasi et al. 2018) on that of
  blocks 3 and 4, both at the one rate (MetaOptNet: 0.1, block size 5 on Mini-ImageNet and tieredImageNet, 2 on
  CIFAR-FS and FC100). They act in the meta-training inner loop only (:meth:`ResNet12.draw_noise`); evaluation
  and validation adapt and predict without them, as a published model in ``eval()`` mode. The rate is constant
  (MetaOptNet ramps DropBlock's rate up over its first 40,000 batches);
- the classifier is a linear head on the pooled 640 (or 512) features, adapted in the inner loop (MetaOptNet
  puts a differentiable SVM there instead).

Initialisation: kaiming-normal conv kernels (fan out, leaky ReLU gain, as MetaOptNet), batch-norm scale 1 and
offset 0, Glorot-uniform head with zero bias (as :class:`reptile_cli.models.conv4.Conv4`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reptile_cli.models.stacked_ops import GroupedConvMatmul

# Largest map (pixels per image) whose 3x3 convolutions the stacked forward runs on a CPU as batched matrix
# products instead of oneDNN's grouped convolution. Forward and backward of one layer, 5 tasks of 5 images,
# 1 thread: 640 channels at 4x4 took 257 ms against 748 ms, at 10x10 1648 against 1842 ms, 320 channels at 8x8
# 138 against 196 ms; at 16x16 (160 channels, 274 against 195 ms) and above the grouped convolution wins.
MATMUL_MAX_PIXELS = 100


def dropout_mask(shape: tuple[int, ...], rate: float, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """An inverted-dropout multiplier for activations of ``shape`` (any): 0 with probability ``rate``, else
    ``1 / (1 - rate)``, so the expected activation is unchanged. Drawn from ``generator`` (on its device)."""
    keep = torch.rand(shape, generator=generator, device=generator.device) >= rate
    return keep.to(dtype) / (1.0 - rate)


def dropblock_mask(shape: tuple[int, int, int, int], rate: float, block_size: int, generator: torch.Generator,
                   dtype: torch.dtype) -> torch.Tensor:
    """A DropBlock multiplier (Ghiasi et al. 2018, "DropBlock: A regularization method for convolutional
    networks", Algorithm 1) for activations ``[B, C, H, W]``: square blocks of ``block_size`` pixels (at most the
    map's size) are zeroed per image and channel, their seeds drawn where a whole block fits with probability
    ``gamma = rate / b^2 * H*W / ((H - b + 1) * (W - b + 1))`` so that about ``rate`` of the map is dropped;
    the kept values are scaled by (pixels / kept pixels) over the whole tensor (all zero: scaled by 1, the
    mask is all zeros). Drawn from ``generator`` (on its device)."""
    b = min(block_size, shape[2], shape[3])
    valid = (shape[2] - b + 1, shape[3] - b + 1)
    gamma = rate / b ** 2 * shape[2] * shape[3] / (valid[0] * valid[1])
    seeds = torch.rand((*shape[:2], *valid), generator=generator, device=generator.device) < gamma
    # a seed at (i, j) drops rows i..i+b-1 and columns j..j+b-1: pad by b-1, then a b x b max-pool of stride 1
    blocks = F.max_pool2d(F.pad(seeds.to(dtype), (b - 1,) * 4), b, stride=1)
    keep = 1.0 - blocks
    return keep * (keep.numel() / keep.sum().clamp_min(1.0))


class ResidualBlock(nn.Module):
    """One ResNet-12 block. Input ``[B, C_in, H, W]`` -> output ``[B, C_out, floor(H / 2), floor(W / 2)]``."""

    def __init__(self, in_channels: int, out_channels: int, slope: float, bn_eps: float):
        super().__init__()
        self.slope = slope
        self.convs = nn.ModuleList(nn.Conv2d(c, out_channels, 3, padding=1, bias=False)
                                   for c in (in_channels, out_channels, out_channels))
        self.norms = nn.ModuleList(nn.BatchNorm2d(out_channels, eps=bn_eps, track_running_stats=False)
                                   for _ in range(3))
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.shortcut_norm = nn.BatchNorm2d(out_channels, eps=bn_eps, track_running_stats=False)
        for conv in (*self.convs, self.shortcut):
            nn.init.kaiming_normal_(conv.weight, a=slope, mode="fan_out", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = norm(conv(h))
            if i < 2:
                h = F.leaky_relu(h, self.slope)
        h = F.leaky_relu(h + self.shortcut_norm(self.shortcut(x)), self.slope)
        return F.max_pool2d(h, 2)


class ResNet12(nn.Module):
    """ResNet-12 classifier.

    Args:
        ways: number of output logits N.
        in_channels: image channels (3).
        image_size: input height = width; at least 16 (four 2x2 poolings must leave a pixel).
        widths: channels of the four blocks, e.g. ``[64, 160, 320, 640]`` or ``[64, 128, 256, 512]``.
        slope: negative slope of the leaky ReLUs (0.1 as MetaOptNet).
        bn_eps: batch-norm epsilon (the tool's 1e-3 default, as Conv4).
        drop_rate: dropout rate after blocks 1-2 and DropBlock rate after blocks 3-4, in [0, 1); 0 (default):
            neither (see :meth:`draw_noise`).
        block_size: DropBlock's block side in pixels (5 as MetaOptNet on 84x84 images, 2 on 32x32); at most the
            side of block 3's maps; on block 4's maps, when smaller, a block is the whole map.

    Forward: ``[B, C, H, W]`` float -> logits ``[B, ways]``. Parameters at 5 ways: 12,427,525 for widths
    64-160-320-640 (12,424,320 in the convolutions and batch norms, the 12.4M usually quoted for MetaOptNet's
    backbone; 3,205 in the head); 7,999,365 for 64-128-256-512 (head 2,565). The count does not depend on the
    image size (global average pooling).

    Raises:
        ValueError: not 4 positive widths, a slope outside [0, 1), an image smaller than 16, a drop rate outside
            [0, 1), a block size below 1 or (with dropout on) above the side of block 3's maps.
    """

    def __init__(self, ways: int, in_channels: int = 3, image_size: int = 84,
                 widths: tuple[int, ...] = (64, 160, 320, 640), slope: float = 0.1, bn_eps: float = 1e-3,
                 drop_rate: float = 0.0, block_size: int = 5):
        super().__init__()
        if not 0 <= drop_rate < 1:
            raise ValueError(f"model.drop_rate={drop_rate}: a dropout / DropBlock rate lies in [0, 1) (0: off; 0.1 as "
                             f"MetaOptNet)")
        if block_size < 1:
            raise ValueError(f"model.dropblock_size={block_size}: the DropBlock side is at least 1 pixel (5 as "
                             f"MetaOptNet on 84x84 images, 2 on 32x32)")
        self.drop_rate, self.block_size = float(drop_rate), int(block_size)
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"model.widths={list(widths)}: ResNet-12 needs 4 positive block widths "
                             f"(e.g. [64,160,320,640])")
        if not 0 <= slope < 1:
            raise ValueError(f"model.leaky_slope={slope}: the negative slope of a leaky ReLU lies in [0, 1) (0.1 as "
                             f"MetaOptNet; 1 would remove the nonlinearity)")
        if image_size < 16:
            raise ValueError(f"model.image_size={image_size}: ResNet-12 halves the image 4 times; use 16 or more")
        # block_shapes: [C, H, W] of each block's output, where dropout (blocks 1-2) and DropBlock (3-4) act
        channels, size, blocks, self.block_shapes = in_channels, image_size, [], []
        for w in widths:
            blocks.append(ResidualBlock(channels, w, slope, bn_eps))
            channels, size = w, size // 2
            self.block_shapes.append((w, size, size))
        side = self.block_shapes[2][1]  # block 3's output, the larger map DropBlock acts on
        if self.drop_rate and self.block_size > side:
            raise ValueError(f"model.dropblock_size={self.block_size} (with model.drop_rate={self.drop_rate:g}): "
                             f"larger than the {side}x{side} maps of block 3 "
                             f"at {image_size}x{image_size} input (a larger block would act as {side}); use at most "
                             f"{side} (MetaOptNet: 5 on 84x84 images, 2 on 32x32)")
        self.blocks = nn.Sequential(*blocks)
        self.feature_size = widths[-1]
        self.head = nn.Linear(widths[-1], ways)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def noisy(self) -> bool:
        """Whether the training forward pass takes dropout / DropBlock masks (``drop_rate`` > 0)."""
        return self.drop_rate > 0

    def draw_noise(self, batch: int, generator: torch.Generator) -> list[torch.Tensor]:
        """The dropout and DropBlock multipliers of one training forward pass of ``batch`` images: one tensor
        ``[batch, C_i, H_i, W_i]`` per block (the block's output shape), in the parameters' dtype, on the
        generator's device; dropout for blocks 1-2, DropBlock for 3-4 (MetaOptNet's layout). The inner loop
        draws them from a generator of (seed, iteration, task) (:mod:`reptile_cli.rng`), one pass after the
        other, so the sequential and the batched path, and a resumed run, use the same masks."""
        dtype = self.head.weight.dtype
        return [dropout_mask((batch, *shape), self.drop_rate, generator, dtype) if i < 2 else
                dropblock_mask((batch, *shape), self.drop_rate, self.block_size, generator, dtype)
                for i, shape in enumerate(self.block_shapes)]

    def forward(self, x: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits ``[B, ways]`` of images ``[B, C, H, W]``; ``noise``: the multipliers of :meth:`draw_noise`, applied
        to the block outputs (None: none, as at evaluation)."""
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if noise is not None:
                h = h * noise[i]
        return self.head(h.mean((2, 3)))

    def stacked_forward(self, params: dict[str, torch.Tensor], x: torch.Tensor,
                        noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The forward pass of T tasks at once, each with its own weights (the batched fast path), as
        :meth:`reptile_cli.models.conv4.Conv4.stacked_forward`: the tasks are folded into the channels
        (``[B, T*C, H, W]``), every convolution is one grouped convolution with T groups and batch norm over the
        T*C channels normalises each task's channels with its own batch statistics.

        Args:
            params: this model's parameters by name, each stacked on a leading task dimension ``[T, *shape]``.
            x: images ``[T, B, C, H, W]``; every task has the same batch size B.
            noise: per block, each task's :meth:`draw_noise` multipliers stacked, ``[T, B, C_i, H_i, W_i]`` (None:
                none).

        Returns:
            logits ``[T, B, ways]``, equal (up to summation order) to ``forward`` of each task's weights on its
            images (tests/test_batched.py compares them in float64, gradients included).

        On a CPU the 3x3 convolutions of small maps (:data:`MATMUL_MAX_PIXELS`) run as batched matrix products
        (:class:`reptile_cli.models.stacked_ops.GroupedConvMatmul`); ``make bench`` prints the speed of both
        paths per model.
        """
        tasks, batch = x.shape[:2]
        h = x.transpose(0, 1).reshape(batch, tasks * x.shape[2], *x.shape[3:])
        if x.device.type == "cpu":
            h = h.contiguous(memory_format=torch.channels_last)

        no_bias = {}  # [T, O] zeros per width, for the batched matrix products (their convolutions have none)

        def conv_norm(act: torch.Tensor, prefix: str, norm: str, padding: int) -> torch.Tensor:
            w = params[f"{prefix}.weight"]
            if padding and act.device.type == "cpu" and act.shape[2] * act.shape[3] <= MATMUL_MAX_PIXELS:
                bias = no_bias.setdefault(w.shape[1], torch.zeros(tasks, w.shape[1], dtype=w.dtype))
                out = GroupedConvMatmul.apply(F.pad(act, (padding,) * 4), w, bias, tasks, 1)
            else:
                out = F.conv2d(act, w.reshape(-1, *w.shape[2:]), padding=padding, groups=tasks)
            return F.batch_norm(out, None, None, params[f"{norm}.weight"].reshape(-1),
                                params[f"{norm}.bias"].reshape(-1), training=True, eps=self.blocks[0].norms[0].eps)

        for i, block in enumerate(self.blocks):
            inp = h
            for j in range(3):
                h = conv_norm(h, f"blocks.{i}.convs.{j}", f"blocks.{i}.norms.{j}", 1)
                if j < 2:
                    h = F.leaky_relu(h, block.slope)
            shortcut = conv_norm(inp, f"blocks.{i}.shortcut", f"blocks.{i}.shortcut_norm", 0)
            h = F.max_pool2d(F.leaky_relu(h + shortcut, block.slope), 2)
            if noise is not None:  # [T, B, C, H, W] -> folded [B, T*C, H, W], in h's memory format
                m = noise[i].transpose(0, 1).reshape(batch, -1, *noise[i].shape[3:])
                h = h * m.contiguous(memory_format=torch.channels_last) if h.device.type == "cpu" else h * m
        features = h.mean((2, 3)).reshape(batch, tasks, -1).transpose(0, 1)  # [T, B, widths[-1]]
        return torch.baddbmm(params["head.bias"].unsqueeze(1), features, params["head.weight"].transpose(1, 2))
