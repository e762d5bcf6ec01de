"""The data-set convention every loader returns, and the checks that enforce it.

A data set is ``Dataset = (x, y)``: ``x`` float32 ``[N, *in_shape]``, and ``y`` int64 ``[N]``
class indices (classification) or float32 ``[N, ...]`` targets (regression); a loader returns
a ``(train, test)`` pair of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fastloss.errors import DataError

Dataset = tuple[Tensor, Tensor]
Split = tuple[Dataset, Dataset]


def to_tensor(a: np.ndarray | Tensor) -> Tensor:
    if isinstance(a, Tensor):
        return a
    # torch takes neither big-endian data (possible in .npz) nor negative strides.
    a = np.ascontiguousarray(a)
    return torch.from_numpy(a.astype(a.dtype.newbyteorder("="), copy=False))


def as_dataset(x: np.ndarray | Tensor, y: np.ndarray | Tensor, source: str) -> Dataset:
    """Validate and convert to the ``(float32 [N, ...], int64 [N])`` convention."""
    x, y = to_tensor(x), to_tensor(y)
    if x.dim() < 2:
        raise DataError(f"{source}: x must be [N, ...] with at least 2 dims, got {list(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise DataError(
            f"{source}: y must be [N] = [{x.shape[0]}] to match x {list(x.shape)}, "
            f"got {list(y.shape)}"
        )
    if x.shape[0] == 0:
        raise DataError(f"{source}: the data set is empty")
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise DataError(f"{source}: y must hold integer class labels, got fractional values")
    elif y.dtype == torch.bool or y.is_complex():
        raise DataError(f"{source}: y must hold integer class labels, got {y.dtype}")
    y = y.to(torch.int64)
    if (y < 0).any():
        raise DataError(f"{source}: class labels must be >= 0, got {int(y.min())}")
    if x.dtype == torch.uint8:  # 8-bit images: scale to [0, 1] as the other loaders do
        x = x.to(torch.float32) / 255
    elif x.dtype == torch.bool or x.is_complex():
        raise DataError(f"{source}: x must be real numbers, got {x.dtype}")
    x = x.to(torch.float32).contiguous()
    if not torch.isfinite(x).all():
        raise DataError(f"{source}: x holds NaN or inf values")
    return x, y.contiguous()


def check_split(train: Dataset, test: Dataset, source: str) -> Split:
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DataError(
            f"{source}: train x is {list(train[0].shape)} but test x is {list(test[0].shape)}; "
            "all samples must share one shape"
        )
    return train, test


def random_split(data: Dataset, seed: int, test_fraction: float = 0.2) -> Split:
    x, y = data
    n_test = max(1, round(test_fraction * len(y)))
    if n_test >= len(y):
        raise DataError(f"cannot split {len(y)} samples into train and test; give x_test, y_test")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    test, train = order[:n_test].sort().values, order[n_test:].sort().values
    return (x[train], y[train]), (x[test], y[test])


def starts_with(path: Path, magic: bytes) -> bool:
    with path.open("rb") as f:
        return f.read(len(magic)) == magic
