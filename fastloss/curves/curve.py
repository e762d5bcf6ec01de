"""Curves between two networks (Garipov et al. 2018): Bezier curves and polygonal chains.

A curve with n bends is a `Subspace` with J = n + 2 basis points, ``[w1, θ_1 … θ_n, w2]``;
the point at ``t ∈ [0, 1]`` has coordinates ``coords(t) [T, J]``, so everything that runs on
subspaces (the batched model, the evaluation engine) runs on curves. The endpoints stay
fixed; fitting moves the bends.

- `Bezier`: the Bernstein basis, ``φ(t) = Σ_j C(m, j) t^j (1 − t)^(m − j) P_j`` with m = n + 1;
  one bend gives the quadratic curve ``(1 − t)² w1 + 2t(1 − t) θ + t² w2``.
- `PolyChain`: straight pieces between ``w1, θ_1, …, θ_n, w2`` at ``t = i / (n + 1)``.

Bends start equally spaced on the straight segment (then the curve *is* the segment), or
come from given networks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from fastloss.core import StateLike, Subspace, check_same_keys, split_state
from fastloss.errors import ArgumentError


class Curve(Subspace):
    """Base of `Bezier` and `PolyChain`: basis ``[w1, θ_1 … θ_n, w2]`` per parameter."""

    kind_name = "curve"

    def __init__(
        self,
        w1: StateLike,
        w2: StateLike,
        bends: int = 1,
        init: Sequence[StateLike] | None = None,
    ):
        if int(bends) != bends or bends < 0:
            raise ArgumentError(f"bends must be a whole number ≥ 0, got {bends!r}")
        bends = int(bends)
        (p1, b1), (p2, _) = split_state(w1), split_state(w2)
        check_same_keys(p1, p2, "w2")
        if init is not None:
            if len(init) != bends:
                raise ArgumentError(f"init has {len(init)} networks for {bends} bends")
            inner = [split_state(w)[0] for w in init]
            for i, p in enumerate(inner, start=1):
                check_same_keys(p1, p, f"bend {i}")
        else:  # equally spaced on the segment: the curve starts as the straight line
            inner = [
                {n: p1[n] + (i / (bends + 1)) * (p2[n] - p1[n]) for n in p1}
                for i in range(1, bends + 1)
            ]
        points = [p1, *inner, p2]
        basis = {n: torch.stack([p[n] for p in points]) for n in p1}
        names = ["w1", *(f"bend{i}" for i in range(1, bends + 1)), "w2"]
        super().__init__(basis, names, self.kind_name, dict(b1), {"bends": bends})

    @property
    def bends(self) -> int:
        return self.J - 2

    def coords(self, t: Tensor | Sequence[float] | float) -> Tensor:
        """``[T] -> [T, J]``: the basis coefficients of the points at ``t``."""
        raise NotImplementedError

    def velocity(self, t: Tensor | Sequence[float] | float) -> Tensor:
        """``[T] -> [T, J]``: d coords / dt (for the arc length ``‖φ'(t)‖``)."""
        raise NotImplementedError

    def bend_points(self) -> dict[str, dict[str, Tensor]]:
        """The bends as parameter dicts, by name."""
        return {
            name: {n: b[j] for n, b in self.basis.items()}
            for j, name in enumerate(self.names)
            if 0 < j < self.J - 1
        }

    def speed(self, t: Tensor | Sequence[float] | float) -> Tensor:
        """``‖φ'(t)‖`` over all parameters, in float64, from the basis Gram matrix."""
        gram = self.gram()
        v = self.velocity(t)
        return torch.einsum("tj,jk,tk->t", v, gram, v).clamp_min(0).sqrt()

    def gram(self) -> Tensor:
        """``[J, J]`` inner products of the basis points over all parameters (float64)."""
        flat = torch.cat([b.reshape(self.J, -1).double() for b in self.basis.values()], dim=1)
        return flat @ flat.T


def _as_t(t: Tensor | Sequence[float] | float) -> Tensor:
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    if ((t < 0) | (t > 1)).any() or not torch.isfinite(t).all():
        raise ArgumentError("t must lie in [0, 1]")
    return t


class Bezier(Curve):
    """Bezier curve from w1 to w2 with ``bends`` control points (1: the quadratic curve)."""

    kind_name = "bezier"

    def coords(self, t):
        t = _as_t(t)
        m = self.J - 1
        j = torch.arange(self.J, dtype=torch.float64)
        binom = torch.tensor([math.comb(m, int(k)) for k in j], dtype=torch.float64)
        return binom * t[:, None] ** j * (1 - t[:, None]) ** (m - j)

    def velocity(self, t):
        t = _as_t(t)
        m = self.J - 1
        v = torch.zeros(t.shape[0], self.J, dtype=torch.float64)
        for k in range(m):  # d/dt Σ_j B_{j,m} P_j = m Σ_k B_{k,m-1} (P_{k+1} − P_k)
            b = math.comb(m - 1, k) * t**k * (1 - t) ** (m - 1 - k)
            v[:, k + 1] += m * b
            v[:, k] -= m * b
        return v


class PolyChain(Curve):
    """Polygonal chain w1 → θ_1 → … → θ_n → w2, the pieces meeting at t = i / (n + 1)."""

    kind_name = "polychain"

    def _piece(self, t: Tensor) -> tuple[Tensor, Tensor]:
        pieces = self.J - 1
        i = torch.clamp((t * pieces).floor().long(), max=pieces - 1)
        return i, t * pieces - i.double()

    def coords(self, t):
        t = _as_t(t)
        i, s = self._piece(t)
        c = torch.zeros(t.shape[0], self.J, dtype=torch.float64)
        rows = torch.arange(t.shape[0])
        c[rows, i] = 1 - s
        c[rows, i + 1] += s
        return c

    def velocity(self, t):
        t = _as_t(t)
        i, _ = self._piece(t)
        v = torch.zeros(t.shape[0], self.J, dtype=torch.float64)
        rows = torch.arange(t.shape[0])
        v[rows, i] = -(self.J - 1.0)
        v[rows, i + 1] = self.J - 1.0
        return v


CURVES: dict[str, type[Curve]] = {"bezier": Bezier, "polychain": PolyChain}


def make_curve(kind: str, w1: StateLike, w2: StateLike, bends: int = 1, init=None) -> Curve:
    """``kind`` is "bezier" or "polychain"."""
    if kind not in CURVES:
        raise ArgumentError(f"unknown curve {kind!r}; choose from {sorted(CURVES)}")
    return CURVES[kind](w1, w2, bends, init)
