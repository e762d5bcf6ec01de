"""Sinks: where the engine puts each finished chunk of points.

A sink says which points are still to do (`pending`, so a rerun resumes) and stores a
chunk's values (`write`). `MemorySink` keeps them in arrays; `fastloss.io.SurfaceWriter`
is the HDF5 sink of surfaces (written durably, chunk by chunk); workflows wrap these for
their own files (a video's frames, a curve's profiles).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np


class Sink(Protocol):
    def pending(self) -> np.ndarray:
        """Indices of the points not done yet, ascending."""
        ...

    def write(self, indices: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        """Store ``values[name]`` ``[len(indices), ...]`` at those points."""
        ...


class MemorySink:
    """``values[name]`` ``[K, ...]`` float64 arrays (NaN until written) and a ``done`` mask."""

    def __init__(self, K: int):
        self.values: dict[str, np.ndarray] = {}
        self.done = np.zeros(K, dtype=bool)

    def pending(self) -> np.ndarray:
        return np.flatnonzero(~self.done)

    def write(self, indices: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        for name, v in values.items():
            if name not in self.values:
                self.values[name] = np.full((len(self.done), *v.shape[1:]), np.nan)
            self.values[name][indices] = v
        self.done[indices] = True
