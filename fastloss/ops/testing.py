"""Devices and tolerances shared by the tests (pytorch_scatter's testing.py habit)."""

from __future__ import annotations

from typing import Any

import torch

devices: list[Any]
try:  # pytest is only needed by the tests; the CUDA entry shows as skipped without a GPU.
    import pytest

    devices = [
        pytest.param(torch.device("cpu"), id="cpu"),
        pytest.param(
            torch.device("cuda"),
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU visible"),
            id="cuda",
        ),
    ]
except ImportError:
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])

dtypes = [torch.float32, torch.float64, torch.bfloat16]

# (rtol, atol) against the reference evaluated in float64.
tolerances = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-4, 1e-4),
    torch.bfloat16: (3e-2, 3e-2),
    torch.float16: (5e-3, 5e-3),
}


def tensor(*shape: int, dtype: torch.dtype, device: torch.device, generator=None) -> torch.Tensor:
    """Random normal data, never zeros (zeros hide unwritten outputs)."""
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(
        dtype=dtype, device=device
    )
