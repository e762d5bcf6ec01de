"""`load_data`: a data set by name or path, whatever format the path holds; subsets and
standardisation."""

from __future__ import annotations

from pathlib import Path

import torch

from fastloss.data.builtin import BUILTINS, load_builtin
from fastloss.data.checks import Dataset, Split, starts_with
from fastloss.data.cifar import is_cifar_file, load_cifar
from fastloss.data.idx import IDX_NAME, find_idx, load_mnist
from fastloss.data.npz import load_npz
from fastloss.errors import DataError, NotFoundError


def load_data(spec: str | Path, seed: int = 42, normalize: bool = False) -> Split:
    """``(train, test)`` for a built-in name (``"mnist1d"``, ``"digits"``) or a path:
    an ``.npz`` file, a folder of MNIST IDX files (or one of them), or a CIFAR-10/100 python
    folder (or one of its batch files).

    ``normalize=True`` standardises each channel with the train set's mean and std (see
    `standardize`). It is off by default: MNIST-1D comes standardised already, and the image
    loaders give ``[0, 1]`` pixels, on which the default training recipe does well.
    """
    spec_str = str(spec)
    if spec_str in BUILTINS:
        train, test = load_builtin(spec_str, seed=seed)
        return standardize(train, test) if normalize else (train, test)
    path = Path(spec).expanduser()
    if not path.exists():
        raise NotFoundError(
            f"no data set {spec_str!r}: not a built-in ({', '.join(BUILTINS)}) and no such file "
            "or folder; give an .npz file, a folder of MNIST IDX files or a CIFAR python folder"
        )
    if path.is_file():
        if IDX_NAME.match(path.name) or is_cifar_file(path.name):
            path = path.parent  # one file of a set: load the set
        elif path.suffix == ".npz" or starts_with(path, b"PK\x03\x04"):
            train, test = load_npz(path, seed=seed)
            return standardize(train, test) if normalize else (train, test)
        else:
            raise DataError(
                f"{path}: unrecognised data file; expected an .npz with x and y, an MNIST IDX "
                "file or a CIFAR batch file"
            )
    if find_idx(path) or ((path / "raw").is_dir() and find_idx(path / "raw")):
        train, test = load_mnist(path)
    elif (
        any(path.glob("data_batch_*"))
        or (path / "test_batch").exists()
        or ((path / "train").is_file() and (path / "test").is_file())
        or (path / "cifar-10-batches-py").is_dir()
        or (path / "cifar-100-python").is_dir()
    ):
        train, test = load_cifar(path)
    else:
        npz = sorted(path.glob("*.npz"))
        if len(npz) == 1:
            train, test = load_npz(npz[0], seed=seed)
        else:
            raise NotFoundError(
                f"{path}: no data set found there; expected MNIST IDX files "
                "(train-images-idx3-ubyte[.gz], ...), CIFAR python batches (data_batch_1 ... "
                "test_batch, or train and test for CIFAR-100) or a single .npz with x and y"
            )
    return standardize(train, test) if normalize else (train, test)


def subsample(data: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """A seeded random subset of ``n`` samples, in their original order. The same seed gives
    the same subset, and a smaller ``n`` gives a subset of a larger one; ``n=None`` or
    ``n >= N`` gives all of ``data``."""
    x, y = data
    if n is None or n >= len(y):
        return data
    if n < 1:
        raise DataError(f"subsample size must be >= 1, got {n}")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    keep = order[:n].sort().values.to(x.device)
    return x[keep], y[keep]


def standardize(train: Dataset, test: Dataset, eps: float = 1e-8) -> Split:
    """Per-channel standardisation with statistics from ``train``, applied to both.

    Channels are dim 1 of ``x [N, C, ...]``; ``x [N, D]`` (vectors, e.g. MNIST-1D) counts as
    one channel, so the shape of a signal is kept."""
    x = train[0]
    dims = list(range(x.dim())) if x.dim() == 2 else [0, *range(2, x.dim())]
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True).clamp_min(eps)
    return ((x - mean) / std, train[1]), ((test[0] - mean) / std, test[1])


def num_classes(*datasets: Dataset) -> int:
    """1 + the largest label in any of ``datasets``."""
    return 1 + max(int(y.max()) for _, y in datasets)
