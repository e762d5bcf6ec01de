"""One progress bar for every long loop (points, frames, steps)."""

from __future__ import annotations

from typing import Any


def progress_bar(
    total: int, done: int = 0, enabled: bool = True, desc: str = "fastloss", unit: str = "pt"
) -> Any:
    """A tqdm bar at ``done`` of ``total`` (disabled: it counts silently; in a process group
    only rank 0 shows one)."""
    from tqdm.auto import tqdm

    from fastloss.engine.sharding import world

    return tqdm(
        total=total,
        initial=done,
        unit=unit,
        disable=not enabled or world()[0] != 0,
        smoothing=0.1,
        desc=desc,
        dynamic_ncols=True,
    )
