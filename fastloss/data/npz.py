"""``.npz`` files with ``x``, ``y`` (and optionally ``x_test``, ``y_test``), and any map-style
torch ``Dataset``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from fastloss.data.checks import Dataset, Split, as_dataset, check_split, random_split, starts_with
from fastloss.errors import DataError, NotFoundError


def load_npz(path: str | Path, seed: int = 42) -> Split:
    """An ``.npz`` with ``x [N, ...]`` and ``y [N]``, and optionally ``x_test``, ``y_test``
    (else a seeded 80/20 split). uint8 ``x`` is scaled to ``[0, 1]``; other types are cast to
    float32 as they are."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"no such file: {path}")
    if not starts_with(path, b"PK\x03\x04"):  # np.load would take anything else as a pickle
        raise DataError(f"{path}: not a readable .npz file (not a zip archive); corrupt?")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(
                f"{path}: holds pickled Python objects; save plain numeric arrays x and y"
            ) from e
        raise DataError(f"{path}: not a readable .npz file ({e})") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz file, corrupt or truncated ({e})") from e
    if "x" not in arrays or "y" not in arrays:
        raise DataError(
            f"{path}: expected arrays 'x' [N, ...] and 'y' [N] (and optionally 'x_test', "
            f"'y_test'), found {sorted(arrays) or 'none'}"
        )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: give both 'x_test' and 'y_test', or neither")
    train = as_dataset(arrays["x"], arrays["y"], f"{path} (x, y)")
    if "x_test" not in arrays:
        return random_split(train, seed)
    test = as_dataset(arrays["x_test"], arrays["y_test"], f"{path} (x_test, y_test)")
    return check_split(train, test, str(path))


# ---------------------------------------------------------------------------------------------
# Any torch Dataset


def from_torch_dataset(dataset: torch.utils.data.Dataset) -> Dataset:
    """Stack a map-style torch ``Dataset`` of ``(x, label)`` items into one ``(x, y)`` pair."""
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError("the torch Dataset is empty")
    xs, ys = [], []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"item {i} of the torch Dataset is not an (x, label) pair")
        xs.append(torch.as_tensor(item[0]))
        ys.append(int(item[1]))
    return as_dataset(torch.stack(xs), torch.tensor(ys), type(dataset).__name__)
