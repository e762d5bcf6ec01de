"""The state every twin of one batched model shares during a pass: the points' coordinates,
the input batch size, and the cache of shared-input products."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from fastloss.errors import ArgumentError

NO_POINTS = torch.empty(0, 0)  # the coordinates outside a pass


class SharedProducts:
    """The J products of shared-input layers (``x·W_jᵀ + b_j``), kept across passes.

    An evaluation runs the same input batches once per chunk of points; with this cache the
    first layer's products are computed once per batch instead of once per chunk, so that
    layer costs O(J) for the whole grid. An entry holds its input tensor, so no other tensor
    can take its memory (and so its key) while the entry lives; the key includes the
    version counter, so an input modified in place is a miss.
    """

    def __init__(self, budget_bytes: int = 256 << 20) -> None:
        self.budget = budget_bytes
        self.used = 0
        self.entries: dict[tuple, tuple[Tensor, Tensor]] = {}

    def clear(self) -> None:
        """Forget every entry (the products belong to a basis that is being replaced)."""
        self.entries.clear()
        self.used = 0

    def get(self, name: str, x: Tensor, compute: Callable[[Tensor], Tensor]) -> Tensor:
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
        self.coords = NO_POINTS  # [K, J] during a pass of the batched model
        # The basis rows the coordinates refer to, when a pass uses only some (coords is then
        # [K, len(rows)]): an ensemble's chunk of members needs only their rows.
        self.rows: Tensor | None = None
        self.B = 0
        self.products: SharedProducts | None = None  # set by BatchedModel.caching_products

    @property
    def K(self) -> int:
        assert self.coords is not NO_POINTS, "batched model called without coordinates"
        return self.coords.shape[0]

    def is_shared(self, x: Tensor, module: str) -> bool:
        """True if ``x`` is the common input ``[B, ...]``; False if it is ``[K·B, ...]``."""
        n = x.shape[0]
        if n == self.K * self.B:  # also when K == 1, where both readings agree
            return False
        if n == self.B:
            return True
        raise ArgumentError(
            f"{module} received a batch of {n} rows; expected {self.B} (the input "
            f"batch) or K·B = {self.K * self.B}. Models that reshape the batch axis "
            "are not supported."
        )

    def expand(self, x: Tensor) -> Tensor:
        """``[B, ...] -> [K·B, ...]`` for layers that cannot use the shared input."""
        return x.unsqueeze(0).expand(self.K, *x.shape).reshape(-1, *x.shape[1:])
