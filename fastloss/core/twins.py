"""Subspace-aware twins of the parametrised layers: each holds its module's basis ``[J, ...]``
per parameter and runs the layer at every point of the current pass.

`BatchedModel` swaps them in for the originals; parameter-free modules and functional code
stay as they are and see activations laid out as ``[K·B, ...]``. The first parametrised
layer receives the shared input ``[B, ...]`` and computes J products instead of K
(docs/design.md, "The one idea").
"""

from __future__ import annotations

import warnings
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastloss import ops
from fastloss.core.context import PointContext, SharedProducts
from fastloss.errors import ArgumentError
from fastloss.ops.dispatch import is_channels_last


class Twin(nn.Module):
    """Base of the twins: holds the basis of the original module's parameters as buffers."""

    weight: Tensor | None
    bias: Tensor | None

    def __init__(self, ctx: PointContext, name: str, basis: dict[str, Tensor | None]):
        super().__init__()
        self.ctx_ref = [ctx]  # a list, so the context is not registered as a submodule
        self.qualified_name = name
        # buffer name -> parameter name relative to this module (VmapFallback renames them)
        self.basis_params = {key: key for key in basis}
        for key, value in basis.items():
            self.register_buffer(key, value, persistent=False)

    @property
    def ctx(self) -> PointContext:
        return self.ctx_ref[0]

    def basis(self, name: str) -> Tensor | None:
        """The basis of parameter ``name`` that this pass's coordinates refer to: all J
        points, or the rows ``ctx.rows`` when the pass uses only those."""
        basis = getattr(self, name)
        rows = self.ctx.rows
        return basis if basis is None or rows is None else basis.index_select(0, rows)

    def weight_basis(self) -> Tensor:
        """`basis` of the weight, which the linear and conv layers always have."""
        return cast(Tensor, self.basis("weight"))

    def per_point(self, name: str) -> Tensor | None:
        basis = self.basis(name)
        return None if basis is None else ops.synthesize(basis, self.ctx.coords)

    def expands_shared_input(self) -> bool:
        """Whether the shared input runs as K per-point copies: in a pass over some basis
        rows, at least as many as its points (a chunk of an ensemble's members), K products
        cost less than the rows' products and their combination."""
        rows = self.ctx.rows
        return rows is not None and rows.numel() >= self.ctx.K

    def reuses_products(self) -> bool:
        """Whether this pass takes the shared input's products from the cache: without
        autograd, and over the whole basis (a pass over some rows computes only theirs)."""
        ctx = self.ctx
        return ctx.products is not None and ctx.rows is None and not torch.is_grad_enabled()


class SubspaceLinear(Twin):
    weight: Tensor

    def forward(self, x: Tensor) -> Tensor:
        ctx, out = self.ctx, self.weight.shape[1]
        shared = ctx.is_shared(x, self.qualified_name)
        if shared and self.reuses_products():
            x2 = x.reshape(-1, x.shape[-1])
            parts = cast(SharedProducts, ctx.products).get(self.qualified_name, x2, self.products)
            y = ops.synthesize(parts, ctx.coords)
        elif shared:
            x2 = x.reshape(-1, x.shape[-1])
            if self.expands_shared_input():
                x2 = x2.expand(ctx.K, *x2.shape)
            y = ops.subspace_linear(x2, self.weight_basis(), self.basis("bias"), ctx.coords)
        else:
            x3 = x.reshape(ctx.K, -1, x.shape[-1])
            y = ops.subspace_linear(x3, self.weight_basis(), self.basis("bias"), ctx.coords)
            return y.reshape(*x.shape[:-1], out)
        return y.reshape(ctx.K * x.shape[0], *x.shape[1:-1], out)

    def products(self, x: Tensor) -> Tensor:
        """``[B, I] -> [J, B, O]``: ``x·W_jᵀ + b_j`` for every basis point j."""
        J, O, I = self.weight.shape
        bias = None if self.bias is None else self.bias.reshape(J * O)
        parts = F.linear(x, self.weight.reshape(J * O, I), bias)
        return parts.view(x.shape[0], J, O).transpose(0, 1).contiguous()


class SubspaceConv(Twin):
    weight: Tensor

    def __init__(self, ctx, name, basis, conv: nn.Conv1d | nn.Conv2d):
        super().__init__(ctx, name, basis)
        if conv.padding_mode != "zeros":
            raise ArgumentError(
                f"{name}: padding_mode={conv.padding_mode!r} is not supported (only 'zeros')"
            )
        self.spatial = conv.weight.dim() - 2
        self.stride, self.dilation, self.groups = conv.stride, conv.dilation, conv.groups
        padding = conv.padding
        if isinstance(padding, str):  # 'valid' or 'same' (stride 1), as torch resolves them
            padding = tuple(
                0 if padding == "valid" else d * (k - 1) // 2
                for d, k in zip(conv.dilation, conv.kernel_size, strict=True)
            )
            if conv.padding == "same" and any(
                d * (k - 1) % 2 for d, k in zip(conv.dilation, conv.kernel_size, strict=True)
            ):
                raise ArgumentError(f"{name}: padding='same' with an even kernel is not supported")
        self.padding = padding

    def conv(self, x: Tensor, weight: Tensor, bias: Tensor | None, coords: Tensor) -> Tensor:
        conv = ops.subspace_conv2d if self.spatial == 2 else ops.subspace_conv1d
        return conv(x, weight, bias, coords, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: Tensor) -> Tensor:
        ctx = self.ctx
        if ctx.is_shared(x, self.qualified_name) and self.reuses_products():
            parts = cast(SharedProducts, ctx.products).get(self.qualified_name, x, self.products)
            y = combine_in_layout(parts, ctx.coords)
        else:
            if not ctx.is_shared(x, self.qualified_name):
                x = x.reshape(ctx.K, -1, *x.shape[1:])
            elif self.expands_shared_input():
                x = x.expand(ctx.K, *x.shape)
            y = self.conv(x, self.weight_basis(), self.basis("bias"), ctx.coords)
        return y.reshape(-1, *y.shape[2:])

    def products(self, x: Tensor) -> Tensor:
        """``[B, Ci, *spatial] -> [J, B, Co, *spatial]``: the output at each basis point (bias
        included), in the layout the op gives its outputs."""
        J = self.weight.shape[0]
        eye = torch.eye(J, dtype=self.ctx.coords.dtype, device=x.device)
        return self.conv(x, self.weight, self.bias, eye)


def combine_in_layout(parts: Tensor, coords: Tensor) -> Tensor:
    """``Σ_j c_kj parts_j``: ``[J, B, C, *spatial] -> [K, B, C, *spatial]`` in the memory layout
    of ``parts`` (contiguous, or channels last per point), as one GEMM."""
    if is_channels_last(parts, 2):  # synthesised as [J, B, *spatial, C] in memory
        return ops.synthesize(parts.movedim(2, -1), coords).movedim(-1, 2)
    return ops.synthesize(parts.contiguous(), coords)


class PointwiseBatchNorm(Twin):
    """BatchNorm with per-point statistics: running stats ``[K, C]``, affine from the basis."""

    def __init__(self, ctx, name, basis, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__(ctx, name, basis)
        self.eps, self.momentum = bn.eps, bn.momentum
        self.track_running_stats = bn.track_running_stats
        self.num_features = bn.num_features
        self.running_mean: Tensor | None = None
        self.running_var: Tensor | None = None
        self.num_batches_tracked: Tensor | None = None
        self.cumulative = False
        self.training = bn.training

    def set_statistics(self, mean: Tensor | None, var: Tensor | None, cumulative: bool) -> None:
        """Installs ``[K, C]`` running statistics; ``cumulative`` averages every batch seen
        (momentum=None, as ``update_bn`` does) and restarts the count."""
        self.running_mean, self.running_var = mean, var
        self.num_batches_tracked = (
            torch.zeros((), dtype=torch.long, device=mean.device) if mean is not None else None
        )
        self.cumulative = cumulative

    def forward(self, x: Tensor) -> Tensor:
        ctx = self.ctx
        if ctx.is_shared(x, self.qualified_name):
            x = ctx.expand(x)
        points = x.reshape(ctx.K, -1, *x.shape[1:])
        running = self.running_mean
        track = self.track_running_stats and running is not None
        if running is not None and track and running.shape[0] != ctx.K:
            raise RuntimeError(
                f"{self.qualified_name}: running statistics are for "
                f"{running.shape[0]} points but the pass has {ctx.K}; "
                "set them with BatchedModel.set_bn_statistics"
            )
        momentum = None if self.cumulative else self.momentum
        y = ops.pointwise_batch_norm(
            points,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.basis("weight"),
            self.basis("bias"),
            ctx.coords,
            self.training or not track,
            momentum,
            self.eps,
            self.num_batches_tracked,
        )
        return y.reshape(x.shape)


class PointwiseAffineNorm(Twin):
    """LayerNorm / GroupNorm: the normalisation is per sample; only the affine is per point."""

    def __init__(self, ctx, name, basis, norm: nn.LayerNorm | nn.GroupNorm):
        super().__init__(ctx, name, basis)
        self.norm = norm
        self.eps = norm.eps

    def normalize(self, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        if isinstance(self.norm, nn.LayerNorm):
            return F.layer_norm(x, self.norm.normalized_shape, weight, bias, self.eps)
        return F.group_norm(x, self.norm.num_groups, weight, bias, self.eps)

    def forward(self, x: Tensor) -> Tensor:
        ctx = self.ctx
        weight, bias = self.per_point("weight"), self.per_point("bias")
        if isinstance(self.norm, nn.GroupNorm) and is_channels_last(x, 1):
            return group_norm_channels_last(
                ctx.expand(x) if ctx.is_shared(x, self.qualified_name) else x,
                ctx.K,
                self.norm.num_groups,
                weight,
                bias,
                self.eps,
            )
        if ctx.K == 1 and not ctx.is_shared(x, self.qualified_name):
            # One point: the affine goes into the normalisation, one pass over x.
            return self.normalize(
                x, None if weight is None else weight[0], None if bias is None else bias[0]
            )
        y = self.normalize(x, None, None)
        if weight is None and bias is None:
            return y
        if ctx.is_shared(y, self.qualified_name):
            y = ctx.expand(y)
        if isinstance(self.norm, nn.LayerNorm):
            affine_shape = tuple(self.norm.normalized_shape)
        else:
            affine_shape = (x.shape[1],) + (1,) * (x.dim() - 2)
        points = y.view(ctx.K, -1, *y.shape[1:])
        lead = (ctx.K,) + (1,) * (points.dim() - 1 - len(affine_shape))
        w = None if weight is None else weight.reshape(*lead, *affine_shape)
        b = None if bias is None else bias.reshape(*lead, *affine_shape)
        if b is None:
            return (points * cast(Tensor, w)).view(y.shape)
        if w is None:
            return (points + b).view(y.shape)
        # y·w + b in one pass; in place where no gradient is recorded (y is a fresh tensor).
        out = None if torch.is_grad_enabled() else points
        return torch.addcmul(b, points, w, out=out).view(y.shape)


def group_norm_channels_last(
    x: Tensor, K: int, groups: int, weight: Tensor | None, bias: Tensor | None, eps: float
) -> Tensor:
    """GroupNorm of ``x [K·B, C, *spatial]`` (channels last) with point k's affine
    ``weight``/``bias [K, C]``: per-channel sums over the rows (a fast reduction in this
    layout; torch's own GroupNorm runs 5x slower on it than on ``[N, C, ...]``), then the
    normalisation and the affine as one ``x·scale + shift`` pass that keeps the layout.
    Statistics are taken in float32 for bf16/fp16."""
    N, C = x.shape[:2]
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    rows = x.movedim(1, -1).reshape(N, -1, C)  # [N, positions, C]
    count = rows.shape[1] * (C // groups)
    # Over the positions first (contiguous rows), then over each group's channels.
    mean = rows.sum(1, dtype=acc).view(N, groups, -1).sum(2) / count  # [N, G]
    mean_sq = rows.to(acc).square().sum(1).view(N, groups, -1).sum(2) / count
    rstd = (mean_sq - mean.square()).clamp_min(0).add(eps).rsqrt()
    scale = rstd.repeat_interleave(C // groups, 1)  # [N, C]
    shift = -mean.repeat_interleave(C // groups, 1) * scale
    if weight is not None:
        w = weight.to(acc).repeat_interleave(N // K, 0)
        scale, shift = scale * w, shift * w
    if bias is not None:
        shift = shift + bias.to(acc).repeat_interleave(N // K, 0)
    view = (N, C) + (1,) * (x.dim() - 2)
    return torch.addcmul(shift.view(view).to(x.dtype), x, scale.view(view).to(x.dtype))


_warned_fallback: set[str] = set()


class VmapFallback(Twin):
    """Any other parametrised module: torch.func.vmap over the points (correct, slower)."""

    def __init__(self, ctx, name, basis, module: nn.Module):
        super().__init__(ctx, name, {k.replace(".", "__"): v for k, v in basis.items()})
        self.basis_params = {k.replace(".", "__"): k for k in basis}
        self.module = module
        self.param_names = list(basis)
        kind = type(module).__name__
        if kind not in _warned_fallback:
            _warned_fallback.add(kind)
            warnings.warn(
                f"fastloss: {kind} ({name}) has no compiled twin; it runs through "
                "torch.func.vmap over the points (correct, slower)",
                stacklevel=4,
            )

    def forward(self, x: Tensor) -> Tensor:
        ctx = self.ctx
        params = {n: self.per_point(n.replace(".", "__")) for n in self.param_names}
        shared = ctx.is_shared(x, self.qualified_name)

        def one_point(p, xk):
            return torch.func.functional_call(self.module, p, (xk,))

        inputs = x if shared else x.reshape(ctx.K, -1, *x.shape[1:])
        y = torch.func.vmap(one_point, in_dims=(0, None if shared else 0))(params, inputs)
        return y.reshape(-1, *y.shape[2:])


# Modules whose batch axis is not dim 0 or that synchronise statistics across processes.
_REFUSED = (
    nn.SyncBatchNorm,
    nn.RNNBase,
    nn.MultiheadAttention,
    nn.Transformer,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
)


def refuse_reason(module: nn.Module) -> str | None:
    if isinstance(module, nn.SyncBatchNorm):
        return "SyncBatchNorm shares statistics across processes"
    if isinstance(module, _REFUSED) and not getattr(module, "batch_first", False):
        return "its batch axis is not the first (use batch_first=True)"
    return None


class ReLUAfterTwin(nn.ReLU):
    """A ReLU in place when no gradient is recorded through it. Under autograd it works out
    of place: a shared-input twin's op returns a view of its own workspace, which autograd
    forbids modifying in place."""

    def __init__(self) -> None:
        super().__init__(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x, inplace=not (torch.is_grad_enabled() and x.requires_grad))


def gradients_in_output_layout(module: nn.Module) -> None:
    """Hand ``module``'s backward its output's gradient in the output's layout. On the CPU
    the twins give channels-last activations, and the layers between them run unchanged;
    but a reshape (``Flatten`` after pooling) sends its gradient back as ``[N, C, ...]``,
    and torch's CPU kernels take a slow path when a gradient's layout differs from the
    activation's: adaptive average pooling's backward ran 4× slower, a ReLU's 5× slower
    (docs/design.md, "CPU facts"). The hook re-lays out such a gradient (a copy the size
    of the output) before it reaches the module's backward; values are unchanged."""
    module.register_forward_hook(_match_output_layout)


def _match_output_layout(module: nn.Module, inputs, output):
    if isinstance(output, Tensor) and output.requires_grad and is_channels_last(output, 1):
        output.register_hook(_channels_last_gradient)


def _channels_last_gradient(grad: Tensor) -> Tensor | None:
    if is_channels_last(grad, 1):
        return None
    return grad.movedim(1, -1).contiguous().movedim(-1, 1)


def relu_in_place(module: nn.Module) -> None:
    """In a plain ``nn.Sequential`` each module's output feeds only the next one, so a ReLU
    right after a twin (whose output is always a fresh tensor, and whose backward does not
    need it) can work in place: one K-fold activation less to allocate and write, which is
    most of a ReLU's cost on the CPU (docs/design.md, "CPU facts"). See `ReLUAfterTwin`
    for autograd."""
    if not isinstance(module, nn.Sequential) or type(module).forward is not nn.Sequential.forward:
        return
    children = list(module._modules.items())  # with repeats: a module may appear twice
    for (_, prev), (name, cur) in zip(children, children[1:], strict=False):
        if (
            isinstance(
                prev, (SubspaceLinear, SubspaceConv, PointwiseBatchNorm, PointwiseAffineNorm)
            )
            and type(cur) is nn.ReLU
            and not (prev._forward_hooks or cur._forward_hooks or cur._forward_pre_hooks)
        ):
            setattr(module, name, ReLUAfterTwin())  # a new one: cur may be shared
