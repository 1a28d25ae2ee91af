"""Operators of the stacked forward pass (:meth:`reptile_cli.models.conv4.Conv4.stacked_forward`), where T
tasks' activations are folded into the channels: ``[B, T*C, H, W]``, channels-last on a CPU (physical order
``[B, H, W, T, C]``). Each gives the same values as the plain PyTorch ops it replaces (tests compare them in
float64, gradients included); they exist because the plain ops cost memory traffic that dominates on small
convolutions.
"""

from __future__ import annotations

import torch

# Largest output (pixels per image) for which a CPU convolution of the stacked forward runs as batched matrix
# products (GroupedConvMatmul) instead of oneDNN's grouped convolution. Measured on 2 CPU cores, 32 Omniglot
# tasks of 5 images, forward and backward: 4x4 output 5.8 vs 7.8 ms, 2x2 output 1.8 vs 5.1 ms; 7x7 output
# 18-19 vs 16-21 ms (no gain: the 9x window copy outweighs it). Mini-ImageNet's layers (11x11 and more) keep
# the grouped convolution.
MATMUL_MAX_PIXELS = 16


def _out(size: int, stride: int) -> int:
    """Output size of an unpadded 3x3 convolution along one dimension."""
    return (size - 3) // stride + 1


def conv_output_pixels(act: torch.Tensor, stride: int) -> int:
    """Output pixels per image of an unpadded 3x3 convolution of ``act`` ``[B, C, Hp, Wp]`` (already padded)."""
    return _out(act.shape[2], stride) * _out(act.shape[3], stride)


def _kernel_matrix(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Stacked kernels ``[T, O, C, 3, 3]`` as matrices ``[T, (kh, kw, c), O]`` in ``dtype`` (a view when each
    task's kernel is channels-last and already of that dtype)."""
    tasks, out_ch = w.shape[:2]
    return w.permute(0, 3, 4, 2, 1).reshape(tasks, -1, out_ch).to(dtype)


class PaddedReLU(torch.autograd.Function):
    """``F.pad(F.relu(x), (left, right, top, bottom))`` in one pass: the ReLU writes straight into the interior
    of the padded tensor and only the border is zeroed; the backward reads the interior of the incoming
    gradient as a view. Same values as the two ops. The batched fast path uses it between layers: the
    separate pad cost a fill and a copy of the activation forward and a copy backward, and a batched Omniglot
    evaluation on 2 CPU cores ran 5% slower with them (median 58.2 against 55.2 ms per task).

    Input ``[B, C, H, W]`` (contiguous or channels-last) -> ``[B, C, H + top + bottom, W + left + right]`` in the
    same memory format.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
        left, right, top, bottom = pad
        h, w = x.shape[2:]
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = torch.empty((*x.shape[:2], h + top + bottom, w + left + right), dtype=x.dtype, device=x.device,
                          memory_format=fmt)
        for border in (out[:, :, :top], out[:, :, top + h:], out[:, :, :, :left], out[:, :, :, left + w:]):
            border.zero_()
        torch.clamp_min(x, 0, out=out[:, :, top:top + h, left:left + w])
        ctx.save_for_backward(out)
        ctx.pad = pad
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        left, right, top, bottom = ctx.pad
        inner = (slice(None), slice(None), slice(top, out.shape[2] - bottom), slice(left, out.shape[3] - right))
        return torch.ops.aten.threshold_backward(grad[inner], out[inner], 0), None


def _rows(t: torch.Tensor, tasks: int) -> torch.Tensor:
    """A folded channels-last tensor ``[B, T*O, Ho, Wo]`` as per-task matrices ``[T, B*Ho*Wo, O]`` (a view)."""
    b, to, ho, wo = t.shape
    return t.permute(0, 2, 3, 1).reshape(b * ho * wo, tasks, to // tasks).transpose(0, 1)


def windows(act: torch.Tensor, tasks: int, stride: int) -> torch.Tensor:
    """The 3x3 windows of a folded channels-last activation ``[B, T*C, Hp, Wp]`` (physical ``[B, Hp, Wp, T, C]``)
    as a view ``[T, B, Ho, Wo, 3, 3, C]`` (no copy)."""
    b, tc, hp, wp = act.shape
    ho, wo = _out(hp, stride), _out(wp, stride)
    sb, _, sh, sw = act.stride()
    return act.as_strided((tasks, b, ho, wo, 3, 3, tc // tasks),
                          (tc // tasks, sb, stride * sh, stride * sw, sh, sw, 1), act.storage_offset())


class GroupedConvMatmul(torch.autograd.Function):
    """T independent 3x3 convolutions (one per task, no padding: the input comes padded) as batched matrix
    products on the folded channels-last layout of :meth:`Conv4.stacked_forward`: the windows of each task
    are gathered into ``[T, B*Ho*Wo, 9*C]`` (im2col) and multiplied by the task's kernel ``[T, 9*C, O]``; the
    product is copied into the channels-last output. The backward is two more batched products and
    a scatter-add of the windows (col2im).

    Same values as ``F.conv2d(act, w.reshape(-1, C, 3, 3), b.reshape(-1), stride, groups=T)``. On 2 CPU cores
    it avoids the kernel reorders oneDNN's grouped convolution makes at every call (one per pass per layer, a
    copy of all T kernels each; seen with ONEDNN_VERBOSE=1): for 32 Omniglot tasks of 5 images the forward and
    backward of the layer with a 2x2 output took 1.9 ms against 5.1 ms, with a 4x4 output 5.9 against 7.8 ms
    (see :data:`MATMUL_MAX_PIXELS` for where it stops paying).

    Args (forward): act ``[B, T*C, Hp, Wp]`` channels-last; w ``[T, O, C, 3, 3]`` whose per-task slices are
    channels-last (the layout :func:`reptile_cli.batched.stack` keeps); b ``[T, O]``; tasks T; stride.
    Returns ``[B, T*O, Ho, Wo]`` channels-last.
    """

    @staticmethod
    def forward(ctx, act, w, b, tasks: int, stride: int):
        act = act.contiguous(memory_format=torch.channels_last)  # no copy on the fast path
        batch = act.shape[0]
        win = windows(act, tasks, stride)
        ho, wo, c = win.shape[2], win.shape[3], win.shape[6]
        cols = win.reshape(tasks, batch * ho * wo, 9 * c)
        out_ch = w.shape[1]
        kernel = _kernel_matrix(w, act.dtype)  # under bfloat16 autocast: bfloat16 activation, float32 weights
        out = torch.empty((batch, tasks * out_ch, ho, wo), dtype=act.dtype, device=act.device,
                          memory_format=torch.channels_last)
        rows = _rows(out, tasks)
        # one batched product, then a copy into the strided view: writing the product there directly (out=)
        # runs one matrix product per task, which measured 6% slower over a whole evaluation
        rows.copy_(torch.baddbmm(b.unsqueeze(1).to(act.dtype), cols, kernel))
        ctx.save_for_backward(cols, w)
        ctx.geometry = (act.shape, tasks, stride)
        return out

    @staticmethod
    def backward(ctx, grad):
        cols, w = ctx.saved_tensors
        shape, tasks, stride = ctx.geometry
        batch, tc, hp, wp = shape
        grad = grad.contiguous(memory_format=torch.channels_last)
        ho, wo, out_ch, c = grad.shape[2], grad.shape[3], w.shape[1], tc // tasks
        rows = _rows(grad, tasks)
        grad_act = grad_w = grad_b = None
        if ctx.needs_input_grad[2]:
            grad_b = rows.sum(1).to(w.dtype)
        if ctx.needs_input_grad[1]:  # [T, O, (kh, kw, c)]: each task's kernel gradient comes out channels-last
            grad_w = torch.bmm(rows.transpose(1, 2), cols).view(tasks, out_ch, 3, 3, c).permute(0, 1, 4, 2, 3)
            grad_w = grad_w.to(w.dtype)
        if ctx.needs_input_grad[0]:
            grad_cols = torch.bmm(rows, _kernel_matrix(w, grad.dtype).transpose(1, 2))
            grad_cols = grad_cols.view(tasks, batch, ho, wo, 3, 3, c)
            grad_act = torch.empty(shape, dtype=grad.dtype, device=grad.device,
                                   memory_format=torch.channels_last).zero_()
            span_h, span_w = stride * (ho - 1) + 1, stride * (wo - 1) + 1
            phys = grad_act.permute(0, 2, 3, 1).view(batch, hp, wp, tasks, c)
            for kh in range(3):
                for kw in range(3):
                    phys[:, kh:kh + span_h:stride, kw:kw + span_w:stride].add_(
                        grad_cols[:, :, :, :, kh, kw].permute(1, 2, 3, 0, 4))
        return grad_act, grad_w, grad_b, None, None
