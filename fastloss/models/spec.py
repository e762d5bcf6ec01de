"""The model spec: the metadata keys that say how to rebuild a model, and rebuilding it.

`build_model` records ``{"model", "in_shape", "num_classes", "kwargs"}`` in
``model.fastloss_spec``; checkpoints, curves and snapshots carry it in their metadata, and
`build_from_spec` turns it back into a fresh model of the same architecture.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from fastloss.errors import FileFormatError
from fastloss.io.checkpoints import load_checkpoint
from fastloss.models.registry import build_model

SPEC_KEYS = ("model", "in_shape", "num_classes", "kwargs")
_REQUIRED = SPEC_KEYS[:3]


def model_spec(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The spec keys present in ``meta`` (checkpoint metadata or ``model.fastloss_spec``)."""
    return {k: meta[k] for k in SPEC_KEYS if k in meta}


def build_from_spec(meta: Mapping[str, Any], source: str = "the metadata") -> nn.Module:
    """A fresh model of the architecture ``meta`` describes; ``source`` names where the
    metadata came from in the error when it does not say how to build the model."""
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise FileFormatError(
            f"{source} does not say how to build its model (no {', '.join(missing)} in its "
            "metadata); build the model yourself and pass it, or load its weights with "
            "model.load_state_dict(fastloss.io.load_state_dict(path))"
        )
    return build_model(
        meta["model"], tuple(meta["in_shape"]), meta["num_classes"], **(meta.get("kwargs") or {})
    )


def architecture_difference(first: Mapping[str, Any], second: Mapping[str, Any]) -> str | None:
    """The first spec key on which two metadata dicts disagree (keys missing from ``second``
    are not compared), or None."""
    for key in SPEC_KEYS:
        if key in second and second[key] != first.get(key):
            return key
    return None


def build_from_checkpoint(path: str | Path) -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (strictly: every key
    must match). The model comes back on the CPU in train mode, as a new model would."""
    state, meta = load_checkpoint(path)
    model = build_from_spec(meta, f"{path}: the checkpoint")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise FileFormatError(
            f"{path}: the weights do not fit model {meta['model']!r} built from the metadata: {e}"
        ) from e
    return model
