"""The trainable plane of multi-point optimization (Skorokhodov & Burtsev 2019, §3).

θ = {w_O, w_up, φ_right, s}. ``w_right`` is φ_right made orthogonal to w_up by Gram–Schmidt
over the whole weight vector and rescaled to ‖w_up‖ (eq. 2), so the plane's axes are
orthogonal and equally long however θ moves; the cell at plane coordinates (α, β) has the
weights ``w_O + s·(α·w_right + β·w_up)`` (eq. 1). As a `Subspace` that is the basis
``[w_O, w_right, w_up]`` with coordinates ``(1, s·α, s·β)`` (docs/design.md, "The one
idea"), so the compiled ops carry the gradient to all of θ, s included.

Normalisation scales (the ``weight`` of BatchNorm, GroupNorm, LayerNorm) are stored shifted
(appendix C): θ holds ``γ − 0.5``, drawn from U[−0.5, 0.5], and the origin's entry gets the
0.5 back when the basis is built. Stored unshifted, the scales' large positive mean makes
⟨φ_right, w_up⟩ large, and Gram–Schmidt then drives most of w_right's scales negative.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from fastloss.core import Plane, split_state
from fastloss.errors import ArgumentError

SCALE_SHIFT = 0.5
INITS = ("xavier", "model")
VECTORS = ("origin", "up", "phi_right")
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def norm_scales(model: nn.Module) -> list[str]:
    """The names of the normalisation layers' scale parameters (stored shifted)."""
    return [
        f"{name}.weight" if name else "weight"
        for name, m in model.named_modules()
        if isinstance(m, _NORMS) and getattr(m, "weight", None) is not None
    ]


def _dot(a: dict[str, Tensor], b: dict[str, Tensor]) -> Tensor:
    return sum((a[n] * b[n]).sum() for n in a)  # type: ignore[return-value]


@dataclass
class MPOPlane:
    """θ: ``origin``, ``up``, ``phi_right`` (``{parameter: tensor}`` each, normalisation
    scales stored minus `SCALE_SHIFT`), the scale ``s`` (a 0-d tensor), the names of the
    shifted parameters, and the model's buffers (BatchNorm's running statistics, unused by
    training, which takes each cell's batch statistics)."""

    origin: dict[str, Tensor]
    up: dict[str, Tensor]
    phi_right: dict[str, Tensor]
    s: Tensor
    shifted: list[str] = field(default_factory=list)
    buffers: dict[str, Tensor] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.origin)

    def parameters(self) -> list[Tensor]:
        """Every trained tensor: the three vectors' entries, then ``s``."""
        return [d[n] for d in (self.origin, self.up, self.phi_right) for n in d] + [self.s]

    def right(self) -> dict[str, Tensor]:
        """``w_right``: φ_right orthogonalised against w_up and rescaled to ‖w_up‖ (eq. 2);
        differentiable in both."""
        uu = _dot(self.up, self.up)
        a = _dot(self.phi_right, self.up) / uu
        hat = {n: self.phi_right[n] - a * self.up[n] for n in self.up}
        scale = torch.sqrt(uu / _dot(hat, hat))
        return {n: scale * t for n, t in hat.items()}

    def basis(self) -> dict[str, Tensor]:
        """``{parameter: [3, ...]}`` = ``[w_O, w_right, w_up]``, the normalisation scales of
        the origin shifted back: what `fastloss.batch` runs on (gradients flow to θ)."""
        right = self.right()
        return {
            n: torch.stack([o + SCALE_SHIFT if n in self.shifted else o, right[n], self.up[n]])
            for n, o in self.origin.items()
        }

    def coords(self, positions: Tensor) -> Tensor:
        """``[K, 3]`` subspace coordinates ``(1, s·α, s·β)`` of cells at ``positions [K, 2]``
        (differentiable in ``s``)."""
        positions = positions.to(self.s.device, self.s.dtype)
        return torch.cat([torch.ones_like(positions[:, :1]), self.s * positions], dim=1)

    def plane(self) -> Plane:
        """The found plane, detached: basis ``[w_O, s·w_right, s·w_up]``, so its coordinates
        are the cells' (α, β) and ``Grid`` evaluates it like any other plane."""
        with torch.no_grad():
            basis = self.basis()
            s = self.s.detach()
            basis = {n: torch.stack([b[0], s * b[1], s * b[2]]) for n, b in basis.items()}
        return Plane(
            basis,
            ["w_O", "s·w_right", "s·w_up"],
            "mpo",
            dict(self.buffers),
            {"markers": {"w_O": (0.0, 0.0)}, "s": float(s)},
        )

    def detached(self, device=None, dtype: torch.dtype | None = None) -> MPOPlane:
        """A copy with plain tensors (on ``device``, floating ones in ``dtype`` if given), for
        saving, evaluating, and float64 checks."""

        def move(t: Tensor) -> Tensor:
            return t.detach().to(device, dtype if t.is_floating_point() else None, copy=True)

        def cut(d: dict[str, Tensor]) -> dict[str, Tensor]:
            return {n: move(t) for n, t in d.items()}

        return MPOPlane(
            cut(self.origin),
            cut(self.up),
            cut(self.phi_right),
            move(self.s),
            list(self.shifted),
            cut(self.buffers),
        )

    def requires_grad_(self) -> MPOPlane:
        for t in self.parameters():
            t.requires_grad_(True)
        return self


def _draw(model: nn.Module, init: str, scales: list[str]) -> dict[str, Tensor]:
    """One vector of θ from torch's global generator: the model's own initialisers
    (``reset_parameters``), then Xavier-uniform for weights of two or more dimensions
    (``init="xavier"``, as the paper), and U[−0.5, 0.5] for the shifted scales."""
    fresh = copy.deepcopy(model)
    with torch.no_grad():
        for m in fresh.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
        params = dict(fresh.named_parameters())
        for name, p in params.items():
            if name in scales:
                p.uniform_(-SCALE_SHIFT, SCALE_SHIFT)
            elif init == "xavier" and p.dim() >= 2:
                nn.init.xavier_uniform_(p)
    return {n: p.detach().clone() for n, p in params.items()}


def init_plane(model: nn.Module, seed: int = 0, init: str = "xavier", s: float = 0.1) -> MPOPlane:
    """A fresh θ for ``model``'s architecture: w_O, w_up and φ_right drawn independently by
    ``init`` (``"xavier"``: Xavier-uniform weights, the paper's; ``"model"``: the model's own
    initialisers), the normalisation scales from U[−0.5, 0.5] (stored shifted), and
    ``s = 0.1``. The draws come from a generator seeded with ``seed``; torch's global
    generator is left as it was."""
    if init not in INITS:
        raise ArgumentError(f"init must be one of {INITS}, got {init!r}")
    if not s > 0:
        raise ArgumentError(f"the initial scale s must be > 0, got {s}")
    _, buffers = split_state(model)
    scales = norm_scales(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        origin, up, phi = (_draw(model, init, scales) for _ in VECTORS)
    dtype = next(iter(origin.values())).dtype
    return MPOPlane(origin, up, phi, torch.tensor(float(s), dtype=dtype), scales, buffers)
