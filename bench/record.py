"""Where the benchmark scripts write their results, the header every results file has, and
the compute floor some of them print beside their timings."""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

import fastloss


def write_results(
    kind: str, device: torch.device, device_label: str, rows: list, out: str | None, **extra: Any
) -> str:
    """Writes ``{device, threads, torch, fastloss, date, **extra, rows}`` as JSON to ``out``,
    by default ``bench/results/<kind>-<tag>.json`` (tag "cpu", or the GPU's model such as
    "h100"); returns the path."""
    if out is None:
        tag = (
            "cpu"
            if device.type == "cpu"
            else torch.cuda.get_device_name(device).split()[-1].lower()
        )
        out = os.path.join(os.path.dirname(__file__), "results", f"{kind}-{tag}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    header = {
        "device": device_label,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "fastloss": fastloss.__version__,
        "date": datetime.date.today().isoformat(),
    }
    with open(out, "w") as f:
        json.dump({**header, **extra, "rows": rows}, f, indent=1)
    print(f"\nwrote {out}", file=sys.stderr)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_rate(device: torch.device) -> float:
    """This device's float32 rate on batched GEMMs of an MLP's size (FLOP/s), best of 5."""
    a = torch.randn(30, 1024, 256, device=device)
    b = torch.randn(30, 256, 256, device=device)
    best = float("inf")
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        torch.bmm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * a.numel() * b.shape[-1] / best


@torch.no_grad()
def compute_floor(passes: Any, copies: int, device: torch.device) -> float:
    """Seconds that ``copies`` times the FLOPs of ``passes()`` (counted by
    ``FlopCounterMode``: one network's forward passes) take at the device's GEMM rate: no
    method that does the same arithmetic runs faster."""
    with FlopCounterMode(display=False) as counter:
        passes()
    return counter.get_total_flops() * copies / gemm_rate(device)
