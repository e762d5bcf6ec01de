"""Run an unmodified ``nn.Module`` at K points of a subspace in one batched pass.

`batch(model, subspace)` copies the model and swaps its parametrised leaf modules for
subspace-aware twins; everything else (activations, pooling, reshapes, residual adds in
``forward``) runs unchanged on activations laid out as ``[K·B, ...]``. Until the first
parametrised layer the input is the same for every point, so the first layer receives
``[B, ...]`` and its twin computes J products instead of K (DESIGN.md §1).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastloss import ops
from fastloss.subspace import Subspace


class SharedProducts:
    """The J products of shared-input layers (``x·W_jᵀ + b_j``), kept across passes.

    An evaluation runs the same input batches once per chunk of points; with this cache the
    first layer's products are computed once per batch instead of once per chunk, so that
    layer costs O(J) for the whole grid. An entry holds its input tensor, so no other tensor
    can take its memory (and so its key) while the entry lives; the key includes the
    version counter, so an input modified in place is a miss.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.used = 0
        self.entries: dict[tuple, tuple[Tensor, Tensor]] = {}

    def get(self, name: str, x: Tensor, compute) -> Tensor:
        key = (name, x.device, x.dtype, x.data_ptr(), tuple(x.shape), x.stride(), x._version)
        entry = self.entries.get(key)
        if entry is not None:
            return entry[1]
        parts = compute(x)
        size = parts.numel() * parts.element_size()
        if self.used + size <= self.budget:
            self.entries[key] = (x, parts)
            self.used += size
        return parts


class PointContext:
    """The coordinates of the current pass, shared by every twin of one batched model."""

    def __init__(self) -> None:
        self.coords: Tensor | None = None
        self.B = 0
        self.products: SharedProducts | None = None  # set by BatchedModel.caching_products

    @property
    def K(self) -> int:
        assert self.coords is not None, "batched model called without coordinates"
        return self.coords.shape[0]

    def is_shared(self, x: Tensor, module: str) -> bool:
        """True if ``x`` is the common input ``[B, ...]``; False if it is ``[K·B, ...]``."""
        n = x.shape[0]
        if n == self.K * self.B:  # also when K == 1, where both readings agree
            return False
        if n == self.B:
            return True
        raise ValueError(
            f"{module} received a batch of {n} rows; expected {self.B} (the input "
            f"batch) or K·B = {self.K * self.B}. Models that reshape the batch axis "
            "are not supported."
        )

    def expand(self, x: Tensor) -> Tensor:
        """``[B, ...] -> [K·B, ...]`` for layers that cannot use the shared input."""
        return x.unsqueeze(0).expand(self.K, *x.shape).reshape(-1, *x.shape[1:])


class _Twin(nn.Module):
    """Base of the twins: holds the basis of the original module's parameters as buffers."""

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

    def per_point(self, name: str) -> Tensor | None:
        basis = getattr(self, name)
        return None if basis is None else ops.synthesize(basis, self.ctx.coords)


class SubspaceLinear(_Twin):
    def forward(self, x: Tensor) -> Tensor:
        ctx, out = self.ctx, self.weight.shape[1]
        if ctx.is_shared(x, self.qualified_name):
            x2 = x.reshape(-1, x.shape[-1])
            if ctx.products is not None and not torch.is_grad_enabled():
                parts = ctx.products.get(self.qualified_name, x2, self.products)
                y = ops.synthesize(parts, ctx.coords)
            else:
                y = ops.subspace_linear(x2, self.weight, self.bias, ctx.coords)
            return y.reshape(ctx.K * x.shape[0], *x.shape[1:-1], out)
        y = ops.subspace_linear(
            x.reshape(ctx.K, -1, x.shape[-1]), self.weight, self.bias, ctx.coords
        )
        return y.reshape(*x.shape[:-1], out)

    def products(self, x: Tensor) -> Tensor:
        """``[B, I] -> [J, B, O]``: ``x·W_jᵀ + b_j`` for every basis point j."""
        J, O, I = self.weight.shape
        bias = None if self.bias is None else self.bias.reshape(J * O)
        parts = F.linear(x, self.weight.reshape(J * O, I), bias)
        return parts.view(x.shape[0], J, O).transpose(0, 1).contiguous()


class SubspaceConv(_Twin):
    def __init__(self, ctx, name, basis, conv: nn.Conv1d | nn.Conv2d):
        super().__init__(ctx, name, basis)
        if conv.padding_mode != "zeros":
            raise ValueError(
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
                raise ValueError(f"{name}: padding='same' with an even kernel is not supported")
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        ctx = self.ctx
        conv = ops.subspace_conv2d if self.spatial == 2 else ops.subspace_conv1d
        args = (self.stride, self.padding, self.dilation, self.groups)
        if ctx.is_shared(x, self.qualified_name):
            y = conv(x, self.weight, self.bias, ctx.coords, *args)
        else:
            y = conv(x.reshape(ctx.K, -1, *x.shape[1:]), self.weight, self.bias, ctx.coords, *args)
        return y.reshape(-1, *y.shape[2:])


class PointwiseBatchNorm(_Twin):
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
        track = self.track_running_stats and self.running_mean is not None
        if track and self.running_mean.shape[0] != ctx.K:
            raise RuntimeError(
                f"{self.qualified_name}: running statistics are for "
                f"{self.running_mean.shape[0]} points but the pass has {ctx.K}; "
                "set them with BatchedModel.set_bn_statistics"
            )
        momentum = None if self.cumulative else self.momentum
        y = ops.pointwise_batch_norm(
            points,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.weight,
            self.bias,
            ctx.coords,
            self.training or not track,
            momentum,
            self.eps,
            self.num_batches_tracked,
        )
        return y.reshape(x.shape)


class PointwiseAffineNorm(_Twin):
    """LayerNorm / GroupNorm: the normalisation is per sample; only the affine is per point."""

    def __init__(self, ctx, name, basis, norm: nn.LayerNorm | nn.GroupNorm):
        super().__init__(ctx, name, basis)
        self.norm = norm
        self.eps = norm.eps

    def forward(self, x: Tensor) -> Tensor:
        ctx = self.ctx
        if isinstance(self.norm, nn.LayerNorm):
            y = F.layer_norm(x, self.norm.normalized_shape, None, None, self.eps)
            affine_shape = tuple(self.norm.normalized_shape)
        else:
            y = F.group_norm(x, self.norm.num_groups, None, None, self.eps)
            affine_shape = (x.shape[1],) + (1,) * (x.dim() - 2)
        if self.weight is None and self.bias is None:
            return y
        if ctx.is_shared(y, self.qualified_name):
            y = ctx.expand(y)
        points = y.reshape(ctx.K, -1, *y.shape[1:])
        lead = (ctx.K,) + (1,) * (points.dim() - 1 - len(affine_shape))
        if self.weight is not None:
            points = points * self.per_point("weight").reshape(*lead, *affine_shape)
        if self.bias is not None:
            points = points + self.per_point("bias").reshape(*lead, *affine_shape)
        return points.reshape(y.shape)


_warned_fallback: set[str] = set()


class VmapFallback(_Twin):
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


def _refuse_reason(module: nn.Module) -> str | None:
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


def _relu_in_place(module: nn.Module) -> None:
    """In a plain ``nn.Sequential`` each module's output feeds only the next one, so a ReLU
    right after a twin (whose output is always a fresh tensor, and whose backward does not
    need it) can work in place: one K-fold activation less to allocate and write, which is
    most of a ReLU's cost on the CPU (DESIGN.md §8). See `ReLUAfterTwin` for autograd."""
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


class BatchedModel(nn.Module):
    """``forward(x [B, ...], coords [K, J]) -> [K, B, ...]``: the model at K points."""

    def __init__(self, model: nn.Module, subspace: Subspace):
        super().__init__()
        self.subspace = subspace
        self.ctx = PointContext()
        net = copy.deepcopy(model)
        params = dict(model.named_parameters())
        missing = params.keys() - subspace.basis.keys()
        if missing:
            raise ValueError(
                f"the subspace has no basis for parameters {sorted(missing)[:5]}; "
                "was it built from another architecture?"
            )
        for name, p in params.items():
            if subspace.basis[name].shape[1:] != p.shape:
                raise ValueError(
                    f"the subspace's basis for {name!r} is "
                    f"{list(subspace.basis[name].shape[1:])} but the model's "
                    f"parameter is {list(p.shape)}; was it built from another "
                    "architecture?"
                )
        self.net = self._swap(net, "")
        self.twins = [m for m in self.net.modules() if isinstance(m, _Twin)]

    def _basis(self, prefix: str, module: nn.Module, recurse: bool) -> dict[str, Tensor | None]:
        out: dict[str, Tensor | None] = {}
        for name, _ in module.named_parameters(recurse=recurse):
            out[name] = self.subspace.basis[prefix + name]
        return out

    def _twin(self, name: str, module: nn.Module) -> nn.Module | None:
        prefix = f"{name}." if name else ""
        reason = _refuse_reason(module)
        if reason:
            raise ValueError(
                f"module {name or '<root>'} ({type(module).__name__}) cannot run at "
                f"several points in one pass: {reason}"
            )
        direct = self._basis(prefix, module, recurse=False)
        for key in ("weight", "bias"):
            direct.setdefault(key, None)
        if type(module) in (nn.Linear,):
            return SubspaceLinear(self.ctx, name, direct)
        if type(module) in (nn.Conv1d, nn.Conv2d):
            return SubspaceConv(self.ctx, name, direct, module)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):  # SyncBatchNorm refused above
            return PointwiseBatchNorm(self.ctx, name, direct, module)
        if type(module) in (nn.LayerNorm, nn.GroupNorm):
            return PointwiseAffineNorm(self.ctx, name, direct, module)
        if any(True for _ in module.parameters(recurse=False)):
            return VmapFallback(self.ctx, name, self._basis(prefix, module, recurse=True), module)
        return None

    def _swap(self, module: nn.Module, name: str) -> nn.Module:
        twin = self._twin(name, module)
        if twin is not None:
            return twin
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            setattr(module, child_name, self._swap(child, full))
        _relu_in_place(module)
        return module

    @contextlib.contextmanager
    def caching_products(self, budget_bytes: int = 256 << 20):
        """Within this block, keep the products of shared-input layers across calls without
        autograd (see `SharedProducts`): for passes over the same batches at many points."""
        self.ctx.products = SharedProducts(budget_bytes)
        try:
            yield
        finally:
            self.ctx.products = None

    def load_basis(self, basis: Mapping[str, Tensor]) -> None:
        """Run the next passes on ``basis`` (``{parameter: [J, *shape]}``, the shapes, dtypes
        and devices of the current one) instead of the subspace's basis.

        The tensors are installed as they are, not copied, so tensors that require grad get
        gradients from the batched pass: fitting a curve installs
        ``torch.cat([w1[None], bends, w2[None]])`` before each step and trains ``bends``.
        ``self.subspace`` becomes a shallow copy holding ``basis``.
        """
        for twin in self.twins:
            prefix = f"{twin.qualified_name}." if twin.qualified_name else ""
            for key, param in twin.basis_params.items():
                current, name = twin._buffers[key], prefix + param
                if current is None:
                    continue
                new = basis.get(name)
                if new is None:
                    raise ValueError(f"load_basis: no basis given for parameter {name!r}")
                if (new.shape, new.dtype, new.device) != (
                    current.shape,
                    current.dtype,
                    current.device,
                ):
                    raise ValueError(
                        f"load_basis: {name!r} must be {list(current.shape)} {current.dtype} "
                        f"on {current.device}, got {list(new.shape)} {new.dtype} on {new.device}"
                    )
        for twin in self.twins:
            prefix = f"{twin.qualified_name}." if twin.qualified_name else ""
            for key, param in twin.basis_params.items():
                if twin._buffers[key] is not None:
                    twin._buffers[key] = basis[prefix + param]
        self.subspace = copy.copy(self.subspace)
        self.subspace.basis = dict(basis)
        if self.ctx.products is not None:  # cached products belong to the old basis
            self.ctx.products = SharedProducts(self.ctx.products.budget)

    def batch_norms(self) -> list[PointwiseBatchNorm]:
        return [m for m in self.net.modules() if isinstance(m, PointwiseBatchNorm)]

    def set_bn_statistics(self, K: int, mode: str, device: torch.device | str = "cpu") -> None:
        """``mode="recompute"``: zeroed statistics averaged over the next train-mode passes;
        ``mode="fixed"``: the reference model's statistics at every point."""
        for bn in self.batch_norms():
            if not bn.track_running_stats:
                continue
            C = bn.num_features
            if mode == "recompute":
                mean = torch.zeros(K, C, device=device)
                var = torch.ones(K, C, device=device)
            elif mode == "fixed":
                ref = self.subspace.reference_buffers
                key = bn.qualified_name
                if f"{key}.running_mean" not in ref:
                    raise ValueError(
                        f"bn='fixed' needs running statistics for {key}, "
                        "but the reference network has none"
                    )
                mean = ref[f"{key}.running_mean"].float().expand(K, C).clone().to(device)
                var = ref[f"{key}.running_var"].float().expand(K, C).clone().to(device)
            else:
                raise ValueError(f"mode must be 'recompute' or 'fixed', got {mode!r}")
            bn.set_statistics(mean, var, cumulative=mode == "recompute")

    def forward(self, x: Tensor, coords: Tensor) -> Tensor:
        K, B = coords.shape[0], x.shape[0]
        self.ctx.coords, self.ctx.B = coords, B
        try:
            y = self.net(x)
        finally:
            self.ctx.coords = None
        if y.shape[0] == B and K > 1:  # no parametrised layer: every point gives the same
            return y.unsqueeze(0).expand(K, *y.shape)
        return y.reshape(K, B, *y.shape[1:])


def batch(model: nn.Module, subspace: Subspace) -> BatchedModel:
    """The model at every point of ``subspace``: call the result with ``(x, coords)``."""
    return BatchedModel(model, subspace)
