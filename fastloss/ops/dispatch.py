"""The compiled ops as Python functions: argument checks, then the compiled kernel or, where
the extension does not serve the tensors' device, the reference.

Notation: J basis points, K evaluation points, B samples per point; the weight of point k
is ``W_k = sum_j coords[k, j] * W_j``. Each op has a reference in `fastloss.ops.reference`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from fastloss.errors import ArgumentError
from fastloss.ops import reference
from fastloss.ops.compiled import compiled_for

_REDUCED = (torch.float16, torch.bfloat16)


def _fail(op: str, message: str) -> None:
    raise ArgumentError(f"{op}: {message}")


def _check_basis(op: str, x: Tensor, weight: Tensor, bias: Tensor | None, coords: Tensor) -> None:
    if coords.dim() != 2 or coords.shape[1] != weight.shape[0]:
        _fail(
            op,
            f"coords must be [K, J] with J = weight.shape[0] = {weight.shape[0]}, "
            f"got {list(coords.shape)}",
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0], weight.shape[1]):
        _fail(
            op,
            f"bias must be [J, {weight.shape[1]}] = {[weight.shape[0], weight.shape[1]]}, "
            f"got {list(bias.shape)}",
        )
    for name, t in (("x", x), ("bias", bias)):
        if t is not None and t.dtype != weight.dtype:
            _fail(op, f"{name} is {t.dtype} but weight is {weight.dtype}")
    if coords.dtype != weight.dtype and not (
        weight.dtype in _REDUCED and coords.dtype == torch.float32
    ):
        _fail(
            op,
            f"coords must have weight's dtype {weight.dtype} (or float32 for bf16/fp16 "
            f"weights), got {coords.dtype}",
        )
    for name, t in (("x", x), ("bias", bias), ("coords", coords)):
        if t is not None and t.device != weight.device:
            _fail(op, f"{name} is on {t.device} but weight is on {weight.device}")


def _check_linear(x: Tensor, weight: Tensor, bias: Tensor | None, coords: Tensor) -> None:
    op = "subspace_linear"
    if weight.dim() != 3:
        _fail(op, f"weight must be [J, O, I], got {list(weight.shape)}")
    _check_basis(op, x, weight, bias, coords)
    K, I = coords.shape[0], weight.shape[2]
    if x.dim() not in (2, 3) or x.shape[-1] != I or (x.dim() == 3 and x.shape[0] != K):
        _fail(
            op,
            f"x must be [B, {I}] (shared) or [K, B, {I}] = [{K}, B, {I}] (per point), "
            f"got {list(x.shape)}",
        )


def _check_conv(
    x: Tensor, weight: Tensor, bias: Tensor | None, coords: Tensor, groups: int, spatial: int
) -> None:
    op = f"subspace_conv{spatial}d"
    if weight.dim() != spatial + 3:
        _fail(
            op,
            f"weight must be [J, Co, Ci/groups, {', '.join(['k'] * spatial)}], "
            f"got {list(weight.shape)}",
        )
    _check_basis(op, x, weight, bias, coords)
    if groups < 1 or weight.shape[1] % groups:
        _fail(op, f"groups = {groups} must divide the {weight.shape[1]} output channels")
    K, ci = coords.shape[0], weight.shape[2] * groups
    shared, per_point = x.dim() == spatial + 2, x.dim() == spatial + 3
    channels = x.shape[-spatial - 1] if x.dim() > spatial else None
    if not (shared or (per_point and x.shape[0] == K)) or channels != ci:
        _fail(
            op,
            f"x must be [B, {ci}, *spatial] (shared) or [{K}, B, {ci}, *spatial] "
            f"(per point) with {spatial} spatial dims, got {list(x.shape)}",
        )


def _tuple(v: int | Sequence[int], n: int) -> list[int]:
    return [int(v)] * n if isinstance(v, int) else [int(i) for i in v]


def synthesize(basis: Tensor, coords: Tensor) -> Tensor:
    """Per-point tensors ``basis [J, *S], coords [K, J] -> [K, *S]`` (differentiable)."""
    if basis.dim() < 1 or coords.dim() != 2 or coords.shape[1] != basis.shape[0]:
        _fail(
            "synthesize",
            f"basis must be [J, ...] and coords [K, J] with the same J, got "
            f"{list(basis.shape)} and {list(coords.shape)}",
        )
    if compiled_for(basis.device):
        return torch.ops.fastloss.synthesize(basis, coords)
    return reference.synthesize(basis, coords)


def subspace_linear(x: Tensor, weight: Tensor, bias: Tensor | None, coords: Tensor) -> Tensor:
    """Linear layer at K points: ``x [B, I] | [K, B, I], weight [J, O, I], bias [J, O]?,
    coords [K, J] -> [K, B, O]`` with ``y_k = x_k W_kᵀ + b_k``."""
    _check_linear(x, weight, bias, coords)
    if compiled_for(x.device):
        return torch.ops.fastloss.subspace_linear(x, weight, bias, coords)
    return reference.subspace_linear(x, weight, bias, coords)


def _conv(x, weight, bias, coords, stride, padding, dilation, groups, spatial):
    _check_conv(x, weight, bias, coords, groups, spatial)
    args = (_tuple(stride, spatial), _tuple(padding, spatial), _tuple(dilation, spatial), groups)
    if compiled_for(x.device):
        return torch.ops.fastloss.subspace_conv(x, weight, bias, coords, *args)
    return reference.subspace_conv(x, weight, bias, coords, *args)


def subspace_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    coords: Tensor,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Tensor:
    """Conv2d at K points: ``x [B, Ci, H, W] | [K, B, Ci, H, W], weight [J, Co, Ci/g, kh, kw],
    bias [J, Co]?, coords [K, J] -> [K, B, Co, Ho, Wo]``."""
    return _conv(x, weight, bias, coords, stride, padding, dilation, groups, 2)


def subspace_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    coords: Tensor,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Tensor:
    """Conv1d at K points: ``x [B, Ci, L] | [K, B, Ci, L], weight [J, Co, Ci/g, k]
    -> [K, B, Co, Lo]``."""
    return _conv(x, weight, bias, coords, stride, padding, dilation, groups, 1)


def pointwise_batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    coords: Tensor,
    training: bool,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    num_batches_tracked: Tensor | None = None,
) -> Tensor:
    """Batch norm with per-point statistics: ``x [K, B, C, *]``, running stats ``[K, C]``,
    weight/bias ``[J, C]`` combined through ``coords [K, J]``.

    Training uses each point's batch statistics and updates the running stats in place
    (``momentum=None``: cumulative average, which needs `num_batches_tracked`, as in
    torch's BatchNorm). Eval uses the running stats; without them, batch statistics.
    """
    op = "pointwise_batch_norm"
    if x.dim() < 3 or coords.dim() != 2 or coords.shape[0] != x.shape[0]:
        _fail(
            op,
            f"x must be [K, B, C, ...] and coords [K, J] with the same K, got x "
            f"{list(x.shape)} and coords {list(coords.shape)}",
        )
    K, C, J = x.shape[0], x.shape[2], coords.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and tuple(t.shape) != (K, C):
            _fail(op, f"{name} must be [K, C] = [{K}, {C}], got {list(t.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (J, C):
            _fail(op, f"{name} must be [J, C] = [{J}, {C}], got {list(t.shape)}")
    if (running_mean is None) != (running_var is None):
        _fail(op, "running_mean and running_var must both be given or both be None")
    if training and momentum is None and running_mean is not None and num_batches_tracked is None:
        _fail(op, "momentum=None (cumulative average) needs the num_batches_tracked counter")
    if not compiled_for(x.device):
        return reference.pointwise_batch_norm(
            x,
            running_mean,
            running_var,
            weight,
            bias,
            coords,
            training,
            momentum,
            eps,
            num_batches_tracked,
        )
    # subspace_conv1d/2d hand BN [K, B, C, *spatial] laid out [K, B, *spatial, C] on the CPU.
    if x.dim() in (4, 5) and is_channels_last(x, 2):
        # Statistics are over (B, *spatial) per channel: in channels-last memory that is
        # [K, B·spatial, C, 1].
        k, b, c, *spatial = x.shape
        rows = x.movedim(2, -1).reshape(k, -1, c, 1)
        y = pointwise_batch_norm(
            rows,
            running_mean,
            running_var,
            weight,
            bias,
            coords,
            training,
            momentum,
            eps,
            num_batches_tracked,
        )
        return y.view(k, b, *spatial, c).movedim(-1, 2)
    use_batch_stats = training or running_mean is None
    y, mean, invstd = torch.ops.fastloss.pointwise_batch_norm(
        x,
        None if use_batch_stats else running_mean,
        None if use_batch_stats else running_var,
        weight,
        bias,
        coords,
        use_batch_stats,
        eps,
    )
    if training and running_mean is not None and running_var is not None:
        with torch.no_grad():
            n = x.numel() // (K * C)
            if momentum is None:
                assert num_batches_tracked is not None  # checked above
                num_batches_tracked.add_(1)
                factor = num_batches_tracked.reciprocal().to(running_mean.dtype)
            else:
                factor = torch.tensor(momentum, dtype=running_mean.dtype, device=x.device)
            unbiased_var = (invstd.pow(-2) - eps) * (n / max(n - 1, 1))
            running_mean.lerp_(mean.to(running_mean.dtype), factor)
            running_var.lerp_(unbiased_var.to(running_var.dtype), factor)
    return y


def is_channels_last(x: Tensor, dim: int) -> bool:
    """Whether the channels, dimension ``dim`` of ``x``, are stored last (what the CPU
    convolutions give: ``[..., C, *spatial]`` laid out ``[..., *spatial, C]``), with more than
    one channel and more than one spatial position, so that the layout is unambiguous."""
    return (
        x.shape[dim] > 1
        and math.prod(x.shape[dim + 1 :]) > 1
        and x.movedim(dim, -1).is_contiguous()
    )


def point_loss(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-point cross-entropy sum and correct count: ``logits [K, B, C], target [B] int64
    -> (loss_sum [K], correct [K] int64)``, without materialising a softmax."""
    if logits.dim() != 3 or target.dim() != 1 or target.shape[0] != logits.shape[1]:
        _fail(
            "point_loss",
            f"logits must be [K, B, C] and target [B] with the same B, got "
            f"{list(logits.shape)} and {list(target.shape)}",
        )
    if target.dtype != torch.int64:
        _fail("point_loss", f"target must be int64 class indices, got {target.dtype}")
    if compiled_for(logits.device):
        return torch.ops.fastloss.point_loss(logits, target)
    return reference.point_loss(logits, target)
