"""Checkpoints: weights plus JSON metadata, written atomically, read without unpickling code.

Two formats, chosen by the file suffix:

- ``.pt`` / ``.pth``: ``torch.save`` of a flat ``{name: tensor}`` dict; the metadata is the
  UTF-8 JSON in a uint8 tensor under ``"__fastloss_meta__"``, so the file loads with
  ``torch.load(path, weights_only=True)`` in any tool.
- ``.safetensors``: the tensors, and the JSON under the ``"fastloss"`` metadata key.

The metadata says how to rebuild the model (``model``, ``in_shape``, ``num_classes``,
``kwargs``, filled in from a model made by `fastloss.models.build_model`; see
`fastloss.models.build_from_checkpoint`) plus whatever the caller adds (data set, seed,
accuracy, ...).
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fastloss.errors import (
    ArgumentError,
    ArgumentTypeError,
    DependencyError,
    FileFormatError,
    NotFoundError,
)
from fastloss.io.atomic import atomic_output, write_errors

META_KEY = "__fastloss_meta__"
SAFETENSORS_META_KEY = "fastloss"
TORCH_SUFFIXES = (".pt", ".pth")
SAFETENSORS_SUFFIXES = (".safetensors",)
# Where training scripts commonly nest the weights inside a larger checkpoint dict.
_NESTED_STATE_KEYS = ("state_dict", "model_state", "model_state_dict", "model")

__all__ = [
    "load_checkpoint",
    "load_state_dict",
    "save_checkpoint",
]


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return "torch"
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    raise ArgumentError(
        f"{path}: unknown checkpoint format {suffix!r}; use .pt / .pth (torch.save) or .safetensors"
    )


def _check_finite(
    state: Mapping[str, Tensor], where: str, error: type[Exception] = FileFormatError
) -> None:
    for name, t in state.items():
        if (t.is_floating_point() or t.is_complex()) and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise error(
                f"{where}: parameter {name!r} has {bad} NaN/inf value(s) of {t.numel()}; "
                "the run that made it diverged"
            )


def _tensor_state(model_or_state_dict: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    state = (
        model_or_state_dict.state_dict()
        if isinstance(model_or_state_dict, nn.Module)
        else model_or_state_dict
    )
    out: dict[str, Tensor] = {}
    for name, t in state.items():
        if not isinstance(t, Tensor):
            raise ArgumentTypeError(
                f"state_dict entry {name!r} is a {type(t).__name__}, not a tensor"
            )
        if name == META_KEY:
            raise ArgumentError(f"{META_KEY!r} is reserved for fastloss metadata")
        # Own, contiguous CPU copies: safetensors refuses shared storage, and nothing the
        # caller does to the model afterwards may change what is written.
        out[name] = t.detach().to("cpu", copy=True).contiguous()
    return out


def _meta_json(model_or_state_dict: Any, meta: Mapping[str, Any] | None) -> str:
    full: dict[str, Any] = dict(getattr(model_or_state_dict, "fastloss_spec", None) or {})
    full.update(meta or {})
    try:
        return json.dumps(full, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ArgumentError(
            f"checkpoint metadata must be JSON (str, numbers, lists, dicts; no NaN): {e}"
        ) from e


def save_checkpoint(
    model_or_state_dict: nn.Module | Mapping[str, Tensor],
    path: str | Path,
    meta: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write the weights (and BN buffers) of a model or state_dict to ``path`` (.pt, .pth or
    .safetensors) with JSON ``meta``; returns the path.

    The file is written beside ``path`` under a temporary name and renamed into place, so an
    interrupted save never leaves a partial checkpoint. An existing ``path`` is kept unless
    ``overwrite=True``. Weights with NaN/inf are refused: they could never be loaded back.
    """
    path = Path(path)
    fmt = _format(path)
    state = _tensor_state(model_or_state_dict)
    _check_finite(state, "save_checkpoint", ArgumentError)
    meta_json = _meta_json(model_or_state_dict, meta)
    with write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite) as tmp:
        if fmt == "torch":
            meta_tensor = torch.frombuffer(bytearray(meta_json.encode()), dtype=torch.uint8)
            write_torch({**state, META_KEY: meta_tensor}, tmp)
        else:
            from safetensors.torch import save_file

            save_file(state, tmp, metadata={SAFETENSORS_META_KEY: meta_json})
    return path


def _sniff(path: Path) -> str:
    """The format from the file's first bytes; the suffix decides when they are unclear."""
    with path.open("rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch zip or legacy pickle
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":  # 8-byte header length, then JSON
        return "safetensors"
    return _format(path)


def _reason(e: Exception) -> str:
    """The useful sentence of torch's error, without its advice to unpickle anyway."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
    text = " ".join(text.split()).split(". ")[0].rstrip(".")
    return text or type(e).__name__


def read_torch(path: Path, what: str, fix: str, objects_fix: str | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU. A file it cannot read raises
    `FileFormatError` naming ``path``, ``what`` it should be and the ``fix``; so does one
    holding Python objects besides tensors (never unpickled), with ``objects_fix``."""
    if path.stat().st_size == 0:
        raise FileFormatError(f"{path}: empty file (0 bytes), not a {what}; {fix}")
    try:
        with warnings.catch_warnings():  # damaged headers warn of unknown pickle protocols
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):  # a class weights_only refuses, not damage
            raise FileFormatError(
                f"{path}: holds Python objects besides tensors ({_reason(e)}), which fastloss "
                f"never unpickles (weights_only=True); {objects_fix or fix}"
            ) from e
        raise FileFormatError(
            f"{path}: not a readable {what}, corrupt or truncated ({_reason(e)}); {fix}"
        ) from e
    except Exception as e:  # torch raises errors of every kind on damaged files
        raise FileFormatError(
            f"{path}: not a readable {what}, corrupt or truncated ({_reason(e)}); {fix}"
        ) from e


def write_torch(obj: Any, path: str) -> None:
    """``torch.save`` through a Python file: a full disk then raises ``OSError`` (ENOSPC),
    where torch's own writer says "unexpected pos"."""
    with open(path, "wb") as f:
        torch.save(obj, f)


def _load_torch(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    obj = read_torch(
        path,
        "torch checkpoint",
        "rerun what wrote it, or pass another checkpoint",
        "re-save it as a plain state_dict: torch.save(model.state_dict(), path)",
    )
    if not isinstance(obj, dict):
        raise FileFormatError(f"{path}: expected a dict of tensors, got a {type(obj).__name__}")
    if not all(isinstance(v, Tensor) for v in obj.values()):
        for key in _NESTED_STATE_KEYS:
            inner = obj.get(key)
            if (
                isinstance(inner, dict)
                and inner
                and all(isinstance(v, Tensor) for v in inner.values())
            ):
                obj = inner
                break
    meta: dict[str, Any] = {}
    raw_meta = obj.pop(META_KEY, None)
    if raw_meta is not None:
        if not isinstance(raw_meta, Tensor) or raw_meta.dtype != torch.uint8:
            raise FileFormatError(f"{path}: {META_KEY!r} must be a uint8 tensor of UTF-8 JSON")
        meta = _parse_meta(bytes(raw_meta.tolist()).decode("utf-8", errors="replace"), path)
    return obj, meta


def _load_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        from safetensors import safe_open
    except ImportError as e:
        raise DependencyError(f"{path}: reading .safetensors needs: pip install safetensors") from e
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
            header = f.metadata() or {}
    except Exception as e:  # SafetensorError and friends: header or data is damaged
        raise FileFormatError(
            f"{path}: not a readable safetensors file, corrupt or truncated ({e})"
        ) from e
    raw = header.get(SAFETENSORS_META_KEY)
    return state, (_parse_meta(raw, path) if raw is not None else {})


def _parse_meta(text: str, path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise FileFormatError(f"{path}: the fastloss metadata is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise FileFormatError(f"{path}: the fastloss metadata must be a JSON object")
    return meta


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` from a checkpoint; ``meta`` is ``{}`` for files not written by
    fastloss (plain ``torch.save(model.state_dict())`` files and safetensors load too, as do
    dicts nesting the weights under ``state_dict`` / ``model_state``).

    Errors name the problem: ``FileNotFoundError``, or ``ValueError`` for a corrupt or
    truncated file, an entry that is not a tensor, or a NaN/inf weight (named)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"no such checkpoint: {path}")
    state, meta = _load_torch(path) if _sniff(path) == "torch" else _load_safetensors(path)
    for name, value in state.items():
        if not isinstance(value, Tensor):
            raise FileFormatError(
                f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor; expected a "
                "state_dict of tensors"
            )
    _check_finite(state, str(path))
    return state, meta


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The ``{name: tensor}`` weights of a checkpoint (see `load_checkpoint`)."""
    return load_checkpoint(path)[0]
