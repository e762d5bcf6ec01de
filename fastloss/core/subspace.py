"""Subspaces of weight space: J basis points per parameter and coordinates for K points.

A point with coordinates ``c [J]`` has weights ``w = Σ_j c_j basis_j`` for every parameter.
BatchNorm running statistics are never interpolated: evaluation recomputes them at each
point (``bn="recompute"``) or takes them from one reference model (``bn="fixed"``, the first
network given); `Subspace.reference_buffers` holds the latter.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from fastloss.errors import ArgumentError, ArgumentTypeError

StateLike = nn.Module | Mapping[str, Tensor]
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class CollinearPointsError(ArgumentError):
    """Three networks on one line: no plane passes through them alone."""


def split_state(
    w: StateLike, check_finite: bool = True
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(parameters, buffers) of a module or a state_dict, detached, on the CPU; refuses NaN
    or infinite parameters unless ``check_finite`` is false (the caller checks them)."""
    if isinstance(w, nn.Module):
        params = {n: p.detach() for n, p in w.named_parameters()}
        buffers = {n: b.detach() for n, b in w.named_buffers()}
    elif isinstance(w, Mapping):
        params, buffers = {}, {}
        for name, t in w.items():
            if not isinstance(t, Tensor):
                raise ArgumentTypeError(
                    f"state_dict entry {name!r} is {type(t).__name__}, not a tensor"
                )
            is_buffer = name.rsplit(".", 1)[-1] in _BN_BUFFERS or not t.is_floating_point()
            (buffers if is_buffer else params)[name] = t.detach()
    else:
        raise ArgumentTypeError(f"expected an nn.Module or a state_dict, got {type(w).__name__}")
    for name, t in params.items() if check_finite else ():
        if not torch.isfinite(t).all():
            raise ArgumentError(
                f"parameter {name!r} has NaN or infinite values; check the checkpoint"
            )
    return params, buffers


def check_same_keys(reference: dict[str, Tensor], other: dict[str, Tensor], what: str) -> None:
    missing, extra = reference.keys() - other.keys(), other.keys() - reference.keys()
    if missing or extra:
        raise ArgumentError(
            f"{what} has different parameters: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(extra)[:5]}; are they the same architecture?"
        )
    for name, t in reference.items():
        if other[name].shape != t.shape:
            raise ArgumentError(
                f"{what}: parameter {name!r} has shape {list(other[name].shape)}, "
                f"expected {list(t.shape)}; the networks are different architectures, give "
                "networks of one model"
            )


@dataclass
class Subspace:
    """J basis points for every parameter: ``basis[name]`` is ``[J, *param.shape]``."""

    basis: dict[str, Tensor]
    names: list[str]
    kind: str = "subspace"
    reference_buffers: dict[str, Tensor] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)

    @property
    def J(self) -> int:
        return len(self.names)

    @classmethod
    def from_points(
        cls,
        points: Sequence[StateLike],
        names: Sequence[str] | None = None,
        kind: str = "points",
        check_finite: bool = True,
    ) -> Subspace:
        """Basis = the given networks themselves (ensembles, curves' control points).
        ``check_finite=False`` leaves the NaN check to the caller (one pass over the
        stacked basis instead of one per network)."""
        splits = [split_state(w, check_finite) for w in points]
        params0 = splits[0][0]
        for i, (params, _) in enumerate(splits[1:], start=2):
            check_same_keys(params0, params, f"network {i}")
        basis = {n: torch.stack([s[0][n] for s in splits]) for n in params0}
        names = list(names) if names is not None else [f"w{i + 1}" for i in range(len(points))]
        return cls(basis, names, kind, dict(splits[0][1]))

    def to(self, device=None, dtype: torch.dtype | None = None) -> Subspace:
        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        out = copy.copy(self)  # keeps the class (Plane, Line, curves)
        out.basis = {n: move(b) for n, b in self.basis.items()}
        out.reference_buffers = {n: move(b) for n, b in self.reference_buffers.items()}
        out.info = dict(self.info)
        return out

    def point(self, coords: Sequence[float] | Tensor) -> dict[str, Tensor]:
        """The parameters at one point, materialised (for the serial loop and tests)."""
        c = torch.as_tensor(coords, dtype=torch.float64)
        return {n: torch.tensordot(c.to(b.dtype), b, dims=1) for n, b in self.basis.items()}

    def norms(self) -> list[float]:
        """Euclidean norm of each basis vector over all parameters."""
        return [
            math.sqrt(sum(float(b[j].double().square().sum()) for b in self.basis.values()))
            for j in range(self.J)
        ]


def _dot(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    return sum(float((a[n].double() * b[n].double()).sum()) for n in a)


@dataclass
class Plane(Subspace):
    """A plane ``w_O + α·e_x + β·e_y``; coordinates are ``(1, α, β)``."""

    @classmethod
    def through(cls, w1: StateLike, w2: StateLike, w3: StateLike) -> Plane:
        """The plane through three networks (Garipov et al.): u = w2 − w1, v = w3 − w1
        orthogonalised to u; coordinates in units of ‖u‖, so w1 is (0, 0) and w2 is (1, 0)."""
        (p1, b1), (p2, _), (p3, _) = (split_state(w) for w in (w1, w2, w3))
        check_same_keys(p1, p2, "w2")
        check_same_keys(p1, p3, "w3")
        u = {n: p2[n] - p1[n] for n in p1}
        d = {n: p3[n] - p1[n] for n in p1}
        uu = _dot(u, u)
        if uu == 0:
            raise ArgumentError("w1 and w2 are identical: the plane through them is undefined")
        a = _dot(d, u) / uu
        v = {n: d[n] - a * u[n] for n in p1}
        vv = _dot(v, v)
        if vv <= 1e-12 * uu:
            raise CollinearPointsError("w1, w2 and w3 are collinear: no plane through them")
        scale = math.sqrt(uu / vv)  # e_y gets the length of u
        basis = {n: torch.stack([p1[n], u[n], v[n] * scale]) for n in p1}
        markers = {"w1": (0.0, 0.0), "w2": (1.0, 0.0), "w3": (a, math.sqrt(vv / uu))}
        return cls(
            basis,
            ["w1", "u", "v"],
            "plane_through",
            dict(b1),
            {"markers": markers, "norm_u": math.sqrt(uu)},
        )

    @classmethod
    def random(
        cls, w: StateLike, seed: int = 0, norm: str = "filter", ignore: str | None = "biasbn"
    ) -> Plane:
        """Two random directions around ``w`` (Li et al.). ``norm="filter"`` scales each filter
        (slice along dim 0) of a direction to the norm of the same filter of ``w``; "layer"
        scales per parameter tensor; "none" keeps the Gaussian draw. With ``ignore="biasbn"``
        one-dimensional parameters (biases, norm affines) get zero directions; otherwise they
        get ``w``'s own values, as loss-landscape does."""
        if norm not in ("filter", "layer", "none"):
            raise ArgumentError(f"norm must be 'filter', 'layer' or 'none', got {norm!r}")
        if ignore not in ("biasbn", None):
            raise ArgumentError(f"ignore must be 'biasbn' or None, got {ignore!r}")
        params, buffers = split_state(w)
        gen = torch.Generator().manual_seed(seed)
        directions = []
        for _ in range(2):
            d = {}
            for name, p in params.items():
                r = torch.randn(p.shape, generator=gen, dtype=torch.float64)
                if p.dim() <= 1:
                    r = torch.zeros_like(r) if ignore == "biasbn" else p.double().clone()
                elif norm == "filter":
                    flat_p, flat_r = p.double().reshape(p.shape[0], -1), r.reshape(p.shape[0], -1)
                    r = (
                        flat_r
                        * (
                            flat_p.norm(dim=1, keepdim=True)
                            / (flat_r.norm(dim=1, keepdim=True) + 1e-10)
                        )
                    ).reshape(p.shape)
                elif norm == "layer":
                    r = r * (p.double().norm() / (r.norm() + 1e-10))
                d[name] = r.to(p.dtype)
            directions.append(d)
        basis = {n: torch.stack([p, directions[0][n], directions[1][n]]) for n, p in params.items()}
        return cls(
            basis,
            ["w", "d1", "d2"],
            f"random_{norm}",
            dict(buffers),
            {"markers": {"w": (0.0, 0.0)}, "seed": seed, "norm": norm, "ignore": ignore},
        )


class Line(Subspace):
    """The line ``w1 + t·(w2 − w1)``; coordinates ``(1, t)``: t = 0 is w1, t = 1 is w2."""

    def __init__(self, w1: StateLike, w2: StateLike):
        (p1, b1), (p2, _) = split_state(w1), split_state(w2)
        check_same_keys(p1, p2, "w2")
        basis = {n: torch.stack([p1[n], p2[n] - p1[n]]) for n in p1}
        super().__init__(
            basis,
            ["w1", "w2-w1"],
            "line",
            dict(b1),
            {"markers": {"w1": (0.0, 0.0), "w2": (1.0, 0.0)}},
        )
