"""Run an unmodified ``nn.Module`` at K points of a subspace in one batched pass.

`batch(model, subspace)` copies the model and swaps its parametrised leaf modules for
subspace-aware twins; everything else (activations, pooling, reshapes, residual adds in
``forward``) runs unchanged on activations laid out as ``[K·B, ...]``. Until the first
parametrised layer the input is the same for every point, so the first layer receives
``[B, ...]`` and its twin computes J products instead of K (docs/design.md, "The one idea").
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from typing import cast

import torch
from torch import Tensor, nn

from fastloss.core.context import NO_POINTS, PointContext, SharedProducts
from fastloss.core.subspace import Subspace
from fastloss.core.twins import (
    PointwiseAffineNorm,
    PointwiseBatchNorm,
    SubspaceConv,
    SubspaceLinear,
    Twin,
    VmapFallback,
    gradients_in_output_layout,
    refuse_reason,
    relu_in_place,
)
from fastloss.errors import ArgumentError


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
            raise ArgumentError(
                f"the subspace has no basis for parameters {sorted(missing)[:5]}; "
                "was it built from another architecture?"
            )
        for name, p in params.items():
            if subspace.basis[name].shape[1:] != p.shape:
                raise ArgumentError(
                    f"the subspace's basis for {name!r} is "
                    f"{list(subspace.basis[name].shape[1:])} but the model's "
                    f"parameter is {list(p.shape)}; was it built from another "
                    "architecture?"
                )
        self.net = self._swap(net, "")
        self.twins = [m for m in self.net.modules() if isinstance(m, Twin)]
        for m in self.net.modules():
            if not isinstance(m, Twin) and next(m.children(), None) is None:
                gradients_in_output_layout(m)

    def _basis(self, prefix: str, module: nn.Module, recurse: bool) -> dict[str, Tensor | None]:
        out: dict[str, Tensor | None] = {}
        for name, _ in module.named_parameters(recurse=recurse):
            out[name] = self.subspace.basis[prefix + name]
        return out

    def _twin(self, name: str, module: nn.Module) -> nn.Module | None:
        prefix = f"{name}." if name else ""
        reason = refuse_reason(module)
        if reason:
            raise ArgumentError(
                f"module {name or '<root>'} ({type(module).__name__}) cannot run at "
                f"several points in one pass: {reason}"
            )
        direct = self._basis(prefix, module, recurse=False)
        for key in ("weight", "bias"):
            direct.setdefault(key, None)
        if type(module) in (nn.Linear,):
            return SubspaceLinear(self.ctx, name, direct)
        if type(module) in (nn.Conv1d, nn.Conv2d):
            return SubspaceConv(self.ctx, name, direct, cast(nn.Conv1d | nn.Conv2d, module))
        if isinstance(module, nn.modules.batchnorm._BatchNorm):  # SyncBatchNorm refused above
            return PointwiseBatchNorm(self.ctx, name, direct, module)
        if type(module) in (nn.LayerNorm, nn.GroupNorm):
            norm = cast(nn.LayerNorm | nn.GroupNorm, module)
            return PointwiseAffineNorm(self.ctx, name, direct, norm)
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
        relu_in_place(module)
        return module

    @contextlib.contextmanager
    def caching_products(self, cache: SharedProducts | None = None) -> Iterator[SharedProducts]:
        """Within this block, keep the products of shared-input layers across calls without
        autograd (see `SharedProducts`): for passes over the same batches at many points.
        Give ``cache`` to go on with the products of an earlier block."""
        self.ctx.products = cache if cache is not None else SharedProducts()
        try:
            yield self.ctx.products
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
                    raise ArgumentError(f"load_basis: no basis given for parameter {name!r}")
                if (new.shape, new.dtype, new.device) != (
                    current.shape,
                    current.dtype,
                    current.device,
                ):
                    raise ArgumentError(
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
            self.ctx.products.clear()

    def load_subspace(self, subspace: Subspace) -> None:
        """Run the next passes on another subspace of the same shapes, dtypes and devices
        (its basis through `load_basis`, and its reference BN statistics)."""
        self.load_basis(subspace.basis)
        self.subspace = subspace

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
                    raise ArgumentError(
                        f"bn='fixed' needs running statistics for {key}, "
                        "but the reference network has none"
                    )
                mean = ref[f"{key}.running_mean"].float().expand(K, C).clone().to(device)
                var = ref[f"{key}.running_var"].float().expand(K, C).clone().to(device)
            else:
                raise ArgumentError(f"mode must be 'recompute' or 'fixed', got {mode!r}")
            bn.set_statistics(mean, var, cumulative=mode == "recompute")

    def forward(self, x: Tensor, coords: Tensor, rows: Tensor | None = None) -> Tensor:
        """``rows``: the basis points that ``coords [K, len(rows)]`` refer to, when the pass
        needs only those (`used_rows`); by default all J, with ``coords [K, J]``."""
        K, B = coords.shape[0], x.shape[0]
        self.ctx.coords, self.ctx.B, self.ctx.rows = coords, B, rows
        try:
            y = self.net(x)
        finally:
            self.ctx.coords, self.ctx.rows = NO_POINTS, None
        if y.shape[0] == B and K > 1:  # no parametrised layer: every point gives the same
            return y.unsqueeze(0).expand(K, *y.shape)
        return y.reshape(K, B, *y.shape[1:])


def used_rows(coords: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(coords, None)`` if the points ``coords [K, J]`` use every basis point, else their
    coordinates over the basis points they use and those points' indices (`BatchedModel`'s
    ``rows``): a chunk of an ensemble's members, each a one-hot point, then reads only its
    members' weights instead of all J."""
    used = coords.ne(0).any(0)
    if bool(used.all()):
        return coords, None
    rows = used.nonzero().flatten()
    return coords[:, rows], rows


def batch(model: nn.Module, subspace: Subspace) -> BatchedModel:
    """The model at every point of ``subspace``: call the result with ``(x, coords)``."""
    return BatchedModel(model, subspace)
