"""Content hashes for provenance and resume checks: the same tensors give the same digest."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
from torch import Tensor


def tensor_digest(tensors: Iterable[tuple[str, Tensor]], prefix: str = "") -> str:
    """16 hex digits of SHA-256 over ``prefix`` and each named tensor's name, dtype, shape and
    bytes, in the order given."""
    h = hashlib.sha256(prefix.encode())
    for name, t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}{t.dtype}{list(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def data_hash(x: Tensor, y: Tensor) -> str:
    """The digest of a data set's samples and labels."""
    return tensor_digest([("", x), ("", y)])
