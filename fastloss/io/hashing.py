"""Content hashes for provenance and resume checks: the same tensors give the same digest."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

ROWS_PER_BLOCK = 1 << 16


def tensor_digest(tensors: Iterable[tuple[str, Any]], prefix: str = "") -> str:
    """16 hex digits of SHA-256 over ``prefix`` and each named tensor's name, dtype, shape and
    bytes, in the order given. A tensor may also be rows made on demand (``t[rows]``, with
    ``len``, ``shape`` and ``dtype``, as `fastloss.core.GridPoints`): hashed a block of rows
    at a time, to the digest of the whole tensor."""
    h = hashlib.sha256(prefix.encode())
    for name, t in tensors:
        h.update(f"{name}{t.dtype}{list(t.shape)};".encode())
        blocks = (
            [t]
            if isinstance(t, Tensor)
            else (t[slice(i, i + ROWS_PER_BLOCK)] for i in range(0, len(t), ROWS_PER_BLOCK))
        )
        for block in blocks:
            block = block.detach().cpu().contiguous()
            h.update(block.view(torch.uint8).numpy().tobytes() if block.numel() else b"")
    return h.hexdigest()[:16]


def data_hash(x: Tensor, y: Tensor) -> str:
    """The digest of a data set's samples and labels."""
    return tensor_digest([("", x), ("", y)])
