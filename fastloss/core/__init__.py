"""The core abstraction: many weight vectors in a small affine subspace, and one network run
at all of them in one batched pass.

- `Subspace` (J basis points per parameter), `Plane`, `Line`; `Grid` gives coordinates
  (`GridPoints`: a chunk at a time).
- `batch(model, subspace)` -> `BatchedModel`, ``(x [B, ...], coords [K, J]) -> [K, B, ...]``,
  built from layer twins (`twins`) that call the compiled ops.
"""

from fastloss.core.batched import BatchedModel, batch, used_rows
from fastloss.core.context import SharedProducts
from fastloss.core.grid import Grid, GridPoints, affine_coords
from fastloss.core.subspace import (
    CollinearPointsError,
    Line,
    Plane,
    StateLike,
    Subspace,
    check_same_keys,
    split_state,
)

__all__ = [
    "BatchedModel",
    "CollinearPointsError",
    "Grid",
    "GridPoints",
    "Line",
    "Plane",
    "SharedProducts",
    "StateLike",
    "Subspace",
    "affine_coords",
    "batch",
    "check_same_keys",
    "split_state",
    "used_rows",
]
