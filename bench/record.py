"""Where the benchmark scripts write their results, and the header every results file has."""

from __future__ import annotations

import datetime
import json
import os
import sys
from typing import Any

import torch

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
