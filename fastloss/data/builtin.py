"""The built-in data sets, made offline and deterministically.

- ``"mnist1d"``: MNIST-1D made locally by the ``mnist1d`` package (``make_dataset`` with its
  default arguments, seed 42): ``x [N, 40]``, 4000 train / 1000 test, already centred and
  scaled to unit variance by the package.
- ``"digits"``: scikit-learn's 8×8 digits, ``x [N, 1, 8, 8]`` in ``[0, 1]``, a seeded
  stratified 80/20 split (1437 / 360).
"""

from __future__ import annotations

import functools
import random

import numpy as np

from fastloss.data.checks import Split, as_dataset
from fastloss.errors import DataError, DependencyError

BUILTINS = ("mnist1d", "digits")


@functools.lru_cache(maxsize=4)
def mnist1d_arrays(seed: int) -> tuple[np.ndarray, ...]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise DependencyError(
            "the built-in 'mnist1d' data set needs the mnist1d package: pip install mnist1d"
        ) from e
    args = get_dataset_args()
    args.seed = seed
    # make_dataset reseeds Python's and numpy's global generators; give the caller theirs back.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(args)  # generated locally; only get_dataset() would download
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return d["x"], d["y"], d["x_test"], d["y_test"]


@functools.lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DependencyError(
            "the built-in 'digits' data set needs scikit-learn: pip install scikit-learn"
        ) from e
    digits = load_digits()  # ships inside scikit-learn; no download
    return digits.images, digits.target


def load_builtin(name: str, seed: int = 42) -> Split:
    """A built-in data set, made offline: ``"mnist1d"`` or ``"digits"``.

    ``seed`` is MNIST-1D's generation seed (42 is the standard data set) and the digits
    train/test split seed.
    """
    if name == "mnist1d":
        # Copies: the cached arrays must not change when a caller edits its tensors.
        x, y, x_test, y_test = (a.copy() for a in mnist1d_arrays(seed))
        return as_dataset(x, y, "mnist1d"), as_dataset(x_test, y_test, "mnist1d")
    if name == "digits":
        from sklearn.model_selection import train_test_split

        images, target = digits_arrays()
        x = images[:, None].astype(np.float32) / 16  # pixel values are 0..16
        x_train, x_test, y_train, y_test = train_test_split(
            x, target, test_size=0.2, random_state=seed, stratify=target
        )
        return as_dataset(x_train, y_train, "digits"), as_dataset(x_test, y_test, "digits")
    raise DataError(f"unknown built-in data set {name!r}; the built-ins are {', '.join(BUILTINS)}")
