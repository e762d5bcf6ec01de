"""Pure PyTorch references for the compiled ops.

They define what each op computes: the tests compare the kernels against them, and
`fastloss.ops` falls back to them when the compiled extension is not available.
Each point's weight is materialised here, so they are simple, not fast.

Notation: J basis points, K evaluation points, B samples per point;
the weight of point k is ``W_k = sum_j coords[k, j] * W_j``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def opmath(dtype: torch.dtype) -> torch.dtype:
    """The dtype arithmetic on ``dtype`` accumulates in: float32 for bf16/fp16."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def synthesize(basis: Tensor, coords: Tensor) -> Tensor:
    """``basis [J, *S], coords [K, J] -> [K, *S]`` accumulated in float, cast to basis.dtype."""
    acc = opmath(basis.dtype)
    flat = basis.reshape(basis.shape[0], -1).to(acc)
    out = coords.to(acc) @ flat
    return out.reshape(coords.shape[0], *basis.shape[1:]).to(basis.dtype)


def _points_input(x: Tensor, K: int, sample_dims: int) -> Tensor:
    """x is shared (``sample_dims`` dims) or per point (one more); returns ``[K, B, ...]``."""
    if x.dim() == sample_dims:
        return x.unsqueeze(0).expand(K, *x.shape)
    return x


def subspace_linear(x: Tensor, weight: Tensor, bias: Tensor | None, coords: Tensor) -> Tensor:
    """``x [B, I] | [K, B, I], weight [J, O, I], bias [J, O]?, coords [K, J] -> [K, B, O]``."""
    K = coords.shape[0]
    w = synthesize(weight, coords)
    b = synthesize(bias, coords) if bias is not None else None
    xs = _points_input(x, K, 2)
    return torch.stack([F.linear(xs[k], w[k], None if b is None else b[k]) for k in range(K)])


def subspace_conv(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    coords: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Tensor:
    """``x [B, Ci, *sp] | [K, B, Ci, *sp], weight [J, Co, Ci/g, *k] -> [K, B, Co, *out_sp]``."""
    K = coords.shape[0]
    conv = F.conv1d if weight.dim() == 4 else F.conv2d
    w = synthesize(weight, coords)
    b = synthesize(bias, coords) if bias is not None else None
    xs = _points_input(x, K, weight.dim() - 1)
    outs = [
        conv(xs[k], w[k], None if b is None else b[k], stride, padding, dilation, groups)
        for k in range(K)
    ]
    return torch.stack(outs)


def pointwise_batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    coords: Tensor,
    training: bool,
    momentum: float | None,
    eps: float,
    num_batches_tracked: Tensor | None = None,
) -> Tensor:
    """Batch norm with its own statistics and affine parameters at each point.

    ``x [K, B, C, *]``; running stats ``[K, C]`` (updated in place when training);
    weight/bias ``[J, C]`` combined through ``coords [K, J]``.
    """
    K = coords.shape[0]
    if momentum is None and training and running_mean is not None:
        assert num_batches_tracked is not None, "momentum=None needs num_batches_tracked"
        num_batches_tracked.add_(1)
        factor = 1.0 / float(num_batches_tracked)
    else:
        factor = 0.0 if momentum is None else momentum
    gamma = synthesize(weight, coords) if weight is not None else None
    beta = synthesize(bias, coords) if bias is not None else None
    outs = []
    for k in range(K):
        outs.append(
            F.batch_norm(
                x[k],
                None if running_mean is None else running_mean[k],
                None if running_var is None else running_var[k],
                None if gamma is None else gamma[k],
                None if beta is None else beta[k],
                training,
                factor,
                eps,
            )
        )
    return torch.stack(outs)


def point_loss(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``logits [K, B, C], target [B] -> (loss_sum [K], correct [K] int64)``; a row with a
    NaN logit is never correct (torch.argmax would point at the NaN)."""
    acc = opmath(logits.dtype)
    logp = torch.log_softmax(logits.to(acc), dim=-1)
    index = target.view(1, -1, 1).expand(logits.shape[0], -1, 1)
    loss = -logp.gather(-1, index).squeeze(-1).sum(1)
    hit = (logits.argmax(-1) == target.view(1, -1)) & ~logits.isnan().any(-1)
    correct = hit.sum(1)
    return loss, correct
