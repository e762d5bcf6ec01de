"""Variational networks on disk: a checkpoint of the posterior's parameters (μ, log α, log σ²
or σ, biases, BN buffers) whose metadata holds the model spec and, under ``"variational"``,
how it was made variational (kind, layers, rates), so `load_vnet` rebuilds it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from fastloss.errors import ArgumentError
from fastloss.io import load_checkpoint, save_checkpoint
from fastloss.models import build_from_spec, model_spec
from fastloss.variational.model import META_KEY, check_variational, variational


def save_vnet(
    model: nn.Module,
    path: str | Path,
    meta: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a variational model made by `variational` from a built-in or spec'd model,
    with ``meta`` beside its spec."""
    check_variational(model)
    how = getattr(model, "fastloss_variational", None)
    if how is None:
        raise ArgumentError("save_vnet takes a model made by fastloss.variational.variational")
    spec = model_spec(getattr(model, "fastloss_spec", {}))
    return save_checkpoint(
        model, path, {**spec, **(meta or {}), META_KEY: how}, overwrite=overwrite
    )


def load_vnet(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The variational model saved at ``path``, and the checkpoint's metadata."""
    state, meta = load_checkpoint(path)
    how = meta.get(META_KEY)
    if not isinstance(how, dict):
        raise ArgumentError(
            f"{path} is not a variational network (its metadata has no {META_KEY!r} entry); "
            "train one with fastloss vnet train"
        )
    base = build_from_spec(meta, str(path))
    model = variational(
        base,
        how["kind"],
        layers=how["layers"],
        alpha=how.get("alpha", 1.0),
        log_alpha=how.get("log_alpha", -4.0),
    )
    expected = model.state_dict().keys()
    if set(state) != set(expected):
        missing = sorted(set(expected) - set(state))[:3]
        raise ArgumentError(
            f"{path}: the variational parameters do not match its model ({missing} missing); "
            "was the file written by fastloss vnet train?"
        )
    model.load_state_dict(state)
    return model.eval(), meta
