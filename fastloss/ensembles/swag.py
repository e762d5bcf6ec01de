"""SWA-Gaussian (Maddox et al. 2019): a Gaussian over the weights from the SGD iterates.

`SWAG.collect` takes one model (once per epoch, or every c steps) and keeps the running
mean θ_SWA, the running mean of the squares, and the last K deviations ``θ_i − θ_SWA``
(``max_rank``, 20 by default). `SWAG.sample` draws

    θ = θ_SWA + √scale · (σ ⊙ z₁ + D z₂ / √(K_c − 1)),   σ² = mean(θ²) − θ_SWA²,

with ``D`` the ``[P, K_c]`` deviations actually kept and K_c their number. The reference code
(wjmaddox/swa_gaussian) divides by √(K − 1) with K the maximum; with K_c collected that is the
sample covariance's normaliser, ``DDᵀ/(K_c − 1)``, and only then does the low-rank part have
the spread of the deviations when fewer than K have been collected (the two agree once K
are). ``mode="diag"`` keeps only σ ⊙ z₁, ``"lowrank"`` only the D z₂ part; scale 0.5 (the
default) gives the paper's ``1/√2`` factors.

Memory-lean option: ``subset`` (glob patterns of parameter names, e.g. ``["fc*"]``) keeps
the second moment and the deviations only for those parameters; the others take their SWA
mean in every sample.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fastloss.errors import ArgumentError, DataError, FileFormatError, NotFoundError
from fastloss.io.atomic import atomic_output, write_errors
from fastloss.io.checkpoints import read_torch, write_torch

SWAG_MODES = ("full", "diag", "lowrank")
_VAR_FLOOR = 1e-30  # as the reference code: sq_mean − mean² can round below zero


def _parameters(model: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(model, nn.Module):
        return {n: p.detach() for n, p in model.named_parameters()}
    return dict(model)


class SWAG:
    """The SWAG posterior of ``model``'s parameters (see the module notes); ``collect``
    models of this architecture, then ``sample``. ``model`` is a module, or a mapping of its
    parameters only (a ``state_dict`` also holds BatchNorm buffers, which are not weights)."""

    def __init__(
        self,
        model: nn.Module | Mapping[str, Tensor],
        max_rank: int = 20,
        subset: Sequence[str] | None = None,
    ) -> None:
        if max_rank < 0:
            raise ArgumentError(f"max_rank must be >= 0, got {max_rank}")
        params = _parameters(model)
        self.shapes = {n: tuple(p.shape) for n, p in params.items()}
        self.dtypes = {n: p.dtype for n, p in params.items()}
        if subset is None:
            tracked = list(params)
        else:
            tracked = [n for n in params if any(fnmatch.fnmatch(n, g) for g in subset)]
            if not tracked:
                raise ArgumentError(
                    f"no parameter matches the SWAG subset {list(subset)}; the model's are "
                    f"{', '.join(list(params)[:8])}{', ...' if len(params) > 8 else ''}"
                )
        self.tracked = tracked
        self.max_rank = max_rank
        self.n = 0
        self.mean = {n: torch.zeros(s, dtype=torch.float64) for n, s in self.shapes.items()}
        size = sum(math.prod(self.shapes[n]) for n in tracked)
        self.sq_mean = torch.zeros(size, dtype=torch.float64)
        self.deviations: list[Tensor] = []  # the last max_rank, oldest first

    @property
    def rank(self) -> int:
        """K_c, the number of deviations kept."""
        return len(self.deviations)

    def _flat(self, tensors: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([tensors[n].reshape(-1).double() for n in self.tracked])

    def collect(self, model: nn.Module | Mapping[str, Tensor]) -> None:
        """Add one model to the moments and the deviations."""
        params = _parameters(model)
        if set(params) != set(self.shapes) or any(
            tuple(params[n].shape) != s for n, s in self.shapes.items()
        ):
            raise ArgumentError("SWAG.collect: the model's parameters differ from the first's")
        for name, p in params.items():
            if not torch.isfinite(p).all():
                raise DataError(f"SWAG.collect: parameter {name!r} holds NaN or inf")
        self.n += 1
        for name, p in params.items():
            self.mean[name] += (p.detach().cpu().double() - self.mean[name]) / self.n
        w = self._flat({n: params[n].detach().cpu() for n in self.tracked})
        self.sq_mean += (w.square() - self.sq_mean) / self.n
        if self.max_rank:
            self.deviations.append(w - self._flat(self.mean))
            del self.deviations[: -self.max_rank]

    def _check_collected(self, mode: str) -> None:
        if mode not in SWAG_MODES:
            raise ArgumentError(f"SWAG mode must be one of {SWAG_MODES}, got {mode!r}")
        if self.n == 0:
            raise ArgumentError("SWAG has no collected model yet")
        if mode in ("full", "lowrank") and self.rank < 2:
            raise ArgumentError(
                f"{mode} SWAG samples need at least two collected deviations, have "
                f"{self.rank}; collect more models or use mode='diag'"
            )

    def variance(self) -> Tensor:
        """σ², the diagonal variance of the tracked parameters (flat, float64)."""
        return (self.sq_mean - self._flat(self.mean).square()).clamp(min=_VAR_FLOOR)

    def mean_state(self) -> dict[str, Tensor]:
        """θ_SWA, in the parameters' own dtypes."""
        return {n: m.to(self.dtypes[n]) for n, m in self.mean.items()}

    def sample(
        self,
        scale: float = 0.5,
        mode: str = "full",
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """One draw of the parameters (see the module notes)."""
        self._check_collected(mode)
        if scale < 0:
            raise ArgumentError(f"scale must be >= 0, got {scale}")
        size = self.sq_mean.numel()
        noise = torch.zeros(size, dtype=torch.float64)
        if mode in ("full", "diag"):
            z1 = torch.randn(size, generator=generator, dtype=torch.float64)
            noise += self.variance().sqrt() * z1
        if mode in ("full", "lowrank"):
            z2 = torch.randn(self.rank, generator=generator, dtype=torch.float64)
            noise += torch.stack(self.deviations, 1) @ z2 / math.sqrt(self.rank - 1)
        flat = self._flat(self.mean) + math.sqrt(scale) * noise
        out = self.mean_state()
        offset = 0
        for name in self.tracked:
            count = math.prod(self.shapes[name])
            piece = flat[offset : offset + count].view(self.shapes[name])
            out[name] = piece.to(self.dtypes[name])
            offset += count
        return out

    def samples(
        self, count: int, scale: float = 0.5, mode: str = "full", seed: int = 0
    ) -> list[dict[str, Tensor]]:
        """``count`` draws from a generator seeded with ``seed``."""
        if count < 1:
            raise ArgumentError(f"need at least one sample, got {count}")
        generator = torch.Generator().manual_seed(seed)
        return [self.sample(scale, mode, generator) for _ in range(count)]

    # ---- persistence -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": "fastloss-swag-1",
            "shapes": {n: list(s) for n, s in self.shapes.items()},
            "dtypes": {n: str(d).removeprefix("torch.") for n, d in self.dtypes.items()},
            "tracked": self.tracked,
            "max_rank": self.max_rank,
            "n": self.n,
            "mean": self.mean,
            "sq_mean": self.sq_mean,
            "deviations": torch.stack(self.deviations) if self.deviations else None,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> SWAG:
        if not isinstance(state, Mapping) or state.get("format") != "fastloss-swag-1":
            raise DataError("not a SWAG state (no 'fastloss-swag-1' format marker)")
        shapes = {n: tuple(s) for n, s in state["shapes"].items()}
        params = {
            n: torch.zeros(s, dtype=getattr(torch, state["dtypes"][n])) for n, s in shapes.items()
        }
        swag = cls(params, state["max_rank"], subset=list(state["tracked"]))
        swag.tracked = list(state["tracked"])
        swag.n = int(state["n"])
        swag.mean = {n: t.double() for n, t in state["mean"].items()}
        swag.sq_mean = state["sq_mean"].double()
        devs = state["deviations"]
        swag.deviations = [] if devs is None else list(devs.double().unbind(0))
        return swag


def save_swag(
    swag: SWAG,
    path: str | os.PathLike,
    meta: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``swag`` and JSON-like ``meta`` (the model spec, the data) to ``path`` (written
    whole and renamed into place; an existing file is kept unless ``overwrite``)."""
    path = Path(path)
    with write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite) as tmp:
        write_torch({"swag": swag.state_dict(), "meta": dict(meta or {})}, tmp)
    return path


def load_swag(path: str | os.PathLike) -> tuple[SWAG, dict[str, Any]]:
    """``(swag, meta)`` from a file `save_swag` wrote."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path}: no such SWAG file")
    fix = "rerun fastloss swag collect, or pass another SWAG file"
    stored = read_torch(path, "SWAG file", fix)
    if not isinstance(stored, dict) or "swag" not in stored:
        raise FileFormatError(f"{path}: not a SWAG file (written by fastloss swag collect)")
    try:
        swag = SWAG.from_state_dict(stored["swag"])
    except DataError as e:
        raise FileFormatError(f"{path}: {e}") from e
    moments = [*swag.mean.values(), swag.sq_mean, *swag.deviations]
    if not all(bool(torch.isfinite(t).all()) for t in moments):
        raise FileFormatError(
            f"{path}: holds NaN or inf weights (the training it collected diverged); {fix}"
        )
    return swag, dict(stored.get("meta") or {})
