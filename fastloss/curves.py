"""Curves between two networks (Garipov et al., paper 000): Bezier curves and polygonal chains.

A curve with n bends is a `Subspace` with J = n + 2 basis points, ``[w1, θ_1 … θ_n, w2]``;
the point at ``t ∈ [0, 1]`` has coordinates ``coords(t) [T, J]``, so everything that runs on
subspaces (the batched model, the evaluation engine) runs on curves. The endpoints stay
fixed; fitting moves the bends.

- `Bezier`: the Bernstein basis, ``φ(t) = Σ_j C(m, j) t^j (1 − t)^(m − j) P_j`` with m = n + 1;
  one bend gives the quadratic curve ``(1 − t)² w1 + 2t(1 − t) θ + t² w2``.
- `PolyChain`: straight pieces between ``w1, θ_1, …, θ_n, w2`` at ``t = i / (n + 1)``.

Bends start equally spaced on the straight segment (then the curve *is* the segment), or
come from given networks. Curve checkpoints (`save_curve` / `load_curve`) are ordinary
fastloss checkpoints: ``basis.<param>`` tensors ``[J, ...]``, ``buffers.<name>`` (BN
statistics of w1) and the curve's kind, bends and names in the JSON metadata.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fastloss.checkpoints import load_checkpoint, save_checkpoint
from fastloss.subspace import Plane, StateLike, Subspace, _check_same_keys, _split_state

CURVE_FORMAT = "fastloss-curve/1"


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
            raise ValueError(f"bends must be a whole number ≥ 0, got {bends!r}")
        bends = int(bends)
        (p1, b1), (p2, _) = _split_state(w1), _split_state(w2)
        _check_same_keys(p1, p2, "w2")
        if init is not None:
            if len(init) != bends:
                raise ValueError(f"init has {len(init)} networks for {bends} bends")
            inner = [_split_state(w)[0] for w in init]
            for i, p in enumerate(inner, start=1):
                _check_same_keys(p1, p, f"bend {i}")
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
        raise ValueError("t must lie in [0, 1]")
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
        raise ValueError(f"unknown curve {kind!r}; choose from {sorted(CURVES)}")
    return CURVES[kind](w1, w2, bends, init)


def save_curve(
    curve: Curve, path: str | Path, meta: Mapping[str, Any] | None = None, *, overwrite=False
) -> Path:
    """Write ``curve`` (basis, w1's buffers) with JSON ``meta`` as a fastloss checkpoint
    (.pt or .safetensors), atomically; an existing file is kept unless ``overwrite``."""
    state = {f"basis.{n}": b.detach().cpu().contiguous() for n, b in curve.basis.items()}
    state.update(
        {f"buffers.{n}": b.detach().cpu().contiguous() for n, b in curve.reference_buffers.items()}
    )
    info = {"format": CURVE_FORMAT, "kind": curve.kind, "names": list(curve.names)}
    return save_checkpoint(state, path, {**(meta or {}), "curve": info}, overwrite=overwrite)


def load_curve(path: str | Path) -> tuple[Curve, dict[str, Any]]:
    """(curve, metadata) from a file written by `save_curve`."""
    state, meta = load_checkpoint(path)
    info = meta.get("curve")
    if not isinstance(info, dict) or info.get("format") != CURVE_FORMAT:
        raise ValueError(
            f"{path}: not a fastloss curve checkpoint (no {CURVE_FORMAT!r} metadata); "
            "curves are written by `fastloss curve fit` or fastloss.curves.save_curve"
        )
    kind, names = info.get("kind"), info.get("names")
    if kind not in CURVES or not isinstance(names, list) or len(names) < 2:
        raise ValueError(f"{path}: curve metadata is damaged (kind {kind!r}, names {names!r})")
    basis = {k[len("basis.") :]: v for k, v in state.items() if k.startswith("basis.")}
    buffers = {k[len("buffers.") :]: v for k, v in state.items() if k.startswith("buffers.")}
    for name, b in basis.items():
        if b.dim() < 1 or b.shape[0] != len(names):
            raise ValueError(
                f"{path}: basis of {name!r} has shape {list(b.shape)}; expected "
                f"[{len(names)}, ...] for the curve's {len(names)} points"
            )
    if not basis:
        raise ValueError(f"{path}: the curve checkpoint holds no basis tensors")
    curve = CURVES[kind].__new__(CURVES[kind])
    Subspace.__init__(curve, basis, list(names), kind, buffers, {"bends": len(names) - 2})
    return curve, meta


def curve_plane(curve: Curve, samples: int = 101) -> tuple[Plane, dict[str, Any]]:
    """The plane a curve is drawn in, and where the curve lies in it.

    With one bend (or none) the curve lies in the plane through w1, w2 and the bend:
    `Plane.through(w1, w2, θ)`, w1 at (0, 0) and w2 at (1, 0), and the projection is exact.
    With more bends the curve leaves every plane, so this is the plane through w1 spanned
    by the two leading principal directions of the curve's points (``samples`` values of t,
    the best 2D PCA fit), turned so that w2 lies on the +x axis, in units of ‖w2 − w1‖;
    ``info["residual"]`` is the fraction of the points' squared distance from w1 that lies
    outside the plane. ``info`` also has ``t``, ``xy`` (the curve, ``[samples, 2]``) and
    ``bends_xy`` (the control points, ``[n, 2]``).
    """
    t = torch.linspace(0, 1, samples, dtype=torch.float64)
    if curve.bends <= 1:
        if curve.bends == 0:
            raise ValueError("a curve without bends is a straight line: use fastloss.Line")
        (third,) = curve.bend_points().values()
        state1 = {**{n: b[0] for n, b in curve.basis.items()}, **curve.reference_buffers}
        w2 = {n: b[-1] for n, b in curve.basis.items()}
        try:
            plane = Plane.through(state1, w2, third)
        except ValueError as e:
            if "collinear" not in str(e):
                raise
            raise ValueError(
                "the curve is straight (its bend lies on the segment w1–w2), so no plane "
                "contains it alone: fit it first, or draw it in the plane of a fitted curve"
            ) from None
        markers: dict[str, tuple[float, float]] = plane.info["markers"]  # type: ignore[assignment]
        bend_xy = torch.tensor([markers["w3"]], dtype=torch.float64)
        control = torch.cat([torch.tensor([[0.0, 0.0]]), bend_xy, torch.tensor([[1.0, 0.0]])])
        xy = curve.coords(t) @ control.double()
        plane.info["markers"] = {
            "w1": (0.0, 0.0),
            "w2": (1.0, 0.0),
            "bend": tuple(bend_xy[0].tolist()),
        }
        return plane, {"t": t, "xy": xy, "bends_xy": bend_xy, "residual": 0.0}
    # More bends: principal directions of the curve's points about w1 (Gram trick: [T, T]).
    J = curve.J
    flat = torch.cat([b.reshape(J, -1).double() for b in curve.basis.values()], dim=1)
    points = curve.coords(t) @ flat - flat[0]  # [T, D], relative to w1
    centred = points - points.mean(0)
    gram = centred @ centred.T
    evals, evecs = torch.linalg.eigh(gram)
    if evals[-2] <= 1e-12 * evals[-1].clamp_min(1e-300):
        raise ValueError(
            "the curve is straight (its bends lie on the segment w1–w2), so no plane "
            "contains it alone: fit it first, or draw it in the plane of a fitted curve"
        )
    top = evecs[:, -2:].flip(1) / evals[-2:].flip(0).clamp_min(1e-30).sqrt()
    directions = (centred.T @ top).T  # [2, D], orthonormal
    w2_xy = points[-1] @ directions.T  # turn the plane so that w2 lies on the +x axis
    cos, sin = (w2_xy / w2_xy.norm().clamp_min(1e-30)).tolist()
    directions = torch.stack(
        [cos * directions[0] + sin * directions[1], -sin * directions[0] + cos * directions[1]]
    )
    unit = float((flat[-1] - flat[0]).norm())
    xy = points @ directions.T / unit
    total = float(points.square().sum())
    residual = float((points - (xy * unit) @ directions).square().sum()) / max(total, 1e-30)
    basis, offset = {}, 0
    for n, b in curve.basis.items():
        size = b[0].numel()
        pc = directions[:, offset : offset + size].reshape(2, *b.shape[1:]) * unit
        basis[n] = torch.stack([b[0], pc[0].to(b.dtype), pc[1].to(b.dtype)])
        offset += size
    bend_xy = (flat[1:-1] - flat[0]) @ directions.T / unit
    markers = {"w1": (0.0, 0.0), "w2": tuple(xy[-1].tolist())}
    markers.update({f"bend{i + 1}": tuple(p.tolist()) for i, p in enumerate(bend_xy)})
    plane = Plane(
        basis,
        ["w1", "pc1", "pc2"],
        "curve_pca",
        dict(curve.reference_buffers),
        {"markers": markers, "residual": residual},
    )
    return plane, {"t": t, "xy": xy, "bends_xy": bend_xy, "residual": residual}
