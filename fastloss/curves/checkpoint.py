"""Curve checkpoints: ordinary fastloss checkpoints holding ``basis.<param>`` tensors
``[J, ...]``, ``buffers.<name>`` (BN statistics of w1) and the curve's kind and point names
in the JSON metadata, beside the model spec that rebuilds the architecture."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from fastloss.core import Subspace
from fastloss.curves.curve import CURVES, Curve
from fastloss.errors import FileFormatError
from fastloss.io import load_checkpoint, save_checkpoint
from fastloss.models import build_from_spec

CURVE_FORMAT = "fastloss-curve/1"


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
        raise FileFormatError(
            f"{path}: not a fastloss curve checkpoint (no {CURVE_FORMAT!r} metadata); "
            "curves are written by fit_curve(out=...) or fastloss.curves.save_curve"
        )
    kind, names = info.get("kind"), info.get("names")
    if kind not in CURVES or not isinstance(names, list) or len(names) < 2:
        raise FileFormatError(f"{path}: curve metadata is damaged (kind {kind!r}, names {names!r})")
    basis = {k[len("basis.") :]: v for k, v in state.items() if k.startswith("basis.")}
    buffers = {k[len("buffers.") :]: v for k, v in state.items() if k.startswith("buffers.")}
    for name, b in basis.items():
        if b.dim() < 1 or b.shape[0] != len(names):
            raise FileFormatError(
                f"{path}: basis of {name!r} has shape {list(b.shape)}; expected "
                f"[{len(names)}, ...] for the curve's {len(names)} points"
            )
    if not basis:
        raise FileFormatError(f"{path}: the curve checkpoint holds no basis tensors")
    curve = CURVES[kind].__new__(CURVES[kind])
    Subspace.__init__(curve, basis, list(names), kind, buffers, {"bends": len(names) - 2})
    return curve, meta


def load_curve_model(path: str | Path) -> tuple[Curve, nn.Module, dict[str, Any]]:
    """(curve, a fresh model of its architecture, metadata) from a curve checkpoint whose
    metadata holds the model spec (as `fastloss curve fit` writes it)."""
    curve, meta = load_curve(path)
    return curve, build_from_spec(meta, f"{path}: the curve"), meta
