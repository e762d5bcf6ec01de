"""MPO planes on disk: ordinary fastloss checkpoints holding θ (``origin.<param>``,
``up.<param>``, ``phi_right.<param>``, ``s``), the model's buffers (``buffers.<name>``) and
the pattern (``pattern``, uint8 ``[H, W]``, 1 = good), with the shifted scales' names and the
model spec that rebuilds the architecture in the JSON metadata."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastloss.errors import FileFormatError
from fastloss.io import load_checkpoint, save_checkpoint
from fastloss.models import build_from_spec
from fastloss.mpo.patterns import Pattern, PatternError
from fastloss.mpo.plane import VECTORS, MPOPlane

MPO_FORMAT = "fastloss-mpo/1"


def save_plane(
    plane: MPOPlane,
    pattern: Pattern,
    path: str | Path,
    meta: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write θ, the buffers and ``pattern`` with JSON ``meta`` atomically (.pt or
    .safetensors); an existing file is kept unless ``overwrite``."""
    state = {
        f"{vector}.{n}": t.detach().cpu().contiguous()
        for vector in VECTORS
        for n, t in getattr(plane, vector).items()
    }
    state["s"] = plane.s.detach().cpu().reshape(())
    state.update({f"buffers.{n}": b.detach().cpu() for n, b in plane.buffers.items()})
    state["pattern"] = torch.from_numpy(pattern.good.astype("uint8"))
    info = {"format": MPO_FORMAT, "shifted": list(plane.shifted), "pattern": pattern.name}
    return save_checkpoint(state, path, {**(meta or {}), "mpo": info}, overwrite=overwrite)


def load_plane(path: str | Path) -> tuple[MPOPlane, Pattern, dict[str, Any]]:
    """(θ, pattern, metadata) from a file written by `save_plane`."""
    state, meta = load_checkpoint(path)
    info = meta.get("mpo")
    if not isinstance(info, dict) or info.get("format") != MPO_FORMAT:
        raise FileFormatError(
            f"{path}: not a fastloss MPO plane (no {MPO_FORMAT!r} metadata); planes are "
            "written by fastloss mpo fit or fastloss.mpo.fit_pattern(out=...)"
        )
    parts: dict[str, dict[str, torch.Tensor]] = {v: {} for v in (*VECTORS, "buffers")}
    for key, t in state.items():
        head, _, name = key.partition(".")
        if head in parts and name:
            parts[head][name] = t
    if "s" not in state or "pattern" not in state or not parts["origin"]:
        raise FileFormatError(f"{path}: the MPO plane is incomplete (no s, pattern or origin)")
    if not parts["origin"].keys() == parts["up"].keys() == parts["phi_right"].keys():
        raise FileFormatError(f"{path}: the plane's three vectors hold different parameters")
    try:
        pattern = Pattern(state["pattern"].numpy().astype(bool), str(info.get("pattern")))
    except PatternError as e:
        raise FileFormatError(f"{path}: the stored pattern is damaged ({e})") from e
    plane = MPOPlane(
        parts["origin"],
        parts["up"],
        parts["phi_right"],
        state["s"].reshape(()),
        list(info.get("shifted", [])),
        parts["buffers"],
    )
    return plane, pattern, meta


def load_plane_model(path: str | Path) -> tuple[MPOPlane, Pattern, nn.Module, dict[str, Any]]:
    """(θ, pattern, a fresh model of its architecture, metadata) from a plane whose
    metadata holds the model spec (as `fastloss mpo fit` writes it)."""
    plane, pattern, meta = load_plane(path)
    return plane, pattern, build_from_spec(meta, f"{path}: the MPO plane"), meta
