"""CIFAR-10 / CIFAR-100: the python pickles, read by an unpickler that only builds numpy arrays
and plain Python values."""

from __future__ import annotations

import builtins
import functools
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fastloss.data.checks import Split, as_dataset
from fastloss.errors import DataError, NotFoundError


def is_cifar_file(name: str) -> bool:
    return name in ("test_batch", "train", "test") or name.startswith("data_batch_")


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # noqa: PLC2701
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]  # noqa: PLC2701
    return _reconstruct


def _numpy_frombuffer():
    try:
        from numpy._core.numeric import _frombuffer  # noqa: PLC2701
    except ImportError:  # numpy < 2
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]  # noqa: PLC2701
    return _frombuffer


def _numpy_scalar():
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    return scalar


def _codecs_encode():
    import codecs

    return codecs.encode


# numpy's own reconstruction functions, which its pickles name (hence the private imports).
# What a pickle of numpy arrays, lists, dicts, strings and numbers may reference, and nothing
# else: no callable here can run code, import modules or touch files.
_PICKLE_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("_codecs", "encode"): _codecs_encode,  # how protocol-2 pickles from Python 3 store bytes
    **{
        (module, name): functools.partial(getattr, builtins, name)
        for module in ("builtins", "__builtin__")  # Python 3 and Python 2 pickles
        for name in ("set", "frozenset", "bytearray", "complex", "slice", "range")
    },
}


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        get = _PICKLE_ALLOWED.get((module, name))
        if get is None:
            raise _RefusedGlobal(
                f"refusing to load {module}.{name}: only numpy arrays and plain Python values "
                "are allowed in a data pickle"
            )
        return get()


def _load_array_pickle(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise NotFoundError(f"no such file: {path}")
    with path.open("rb") as f:
        try:
            # encoding="bytes" reads the Python 2 pickles CIFAR is distributed as.
            obj = _ArrayUnpickler(f, encoding="bytes").load()
        except _RefusedGlobal as e:
            raise DataError(f"{path}: {e}") from e
        except Exception as e:  # truncated or garbage files fail in many ways
            raise DataError(f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _load_array_pickle(path)
    if "data" not in d or label_key not in d:
        raise DataError(
            f"{path}: expected a CIFAR batch dict with keys 'data' and {label_key!r}, got keys "
            f"{sorted(d)}"
        )
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise DataError(
            f"{path}: 'data' must be a uint8 numpy array, got "
            f"{getattr(data, 'dtype', type(data).__name__)}"
        )
    if data.ndim == 2 and data.shape[1] == 3 * 32 * 32:
        data = data.reshape(-1, 3, 32, 32)
    if data.ndim != 4 or data.shape[1:] != (3, 32, 32):
        raise DataError(f"{path}: 'data' must be [N, 3072] (3×32×32), got {list(data.shape)}")
    labels = d[label_key]
    try:
        labels = np.asarray(labels)
    except Exception as e:
        raise DataError(f"{path}: {label_key!r} is not a list of integers") from e
    if labels.dtype.kind not in "iu" or labels.shape != (len(data),):
        raise DataError(
            f"{path}: {label_key!r} must be {len(data)} integers, got {labels.dtype} "
            f"{list(labels.shape)}"
        )
    return data, labels


def load_cifar(folder: str | Path) -> Split:
    """CIFAR-10 (``data_batch_1..5`` and ``test_batch``) or CIFAR-100 (``train`` and ``test``,
    fine labels) from the python-version folder (``cifar-10-batches-py``,
    ``cifar-100-python``) or the folder above it; ``x [N, 3, 32, 32]`` in ``[0, 1]``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotFoundError(f"no such folder: {folder}")
    for sub in ("cifar-10-batches-py", "cifar-100-python"):
        if (folder / sub).is_dir() and not (folder / "test_batch").exists():
            folder = folder / sub
            break
    batches = sorted(folder.glob("data_batch_*"))
    if batches and (folder / "test_batch").is_file():
        label_key, train_files, test_file = "labels", batches, folder / "test_batch"
    elif (folder / "train").is_file() and (folder / "test").is_file():
        label_key, train_files, test_file = "fine_labels", [folder / "train"], folder / "test"
    else:
        raise NotFoundError(
            f"{folder}: expected CIFAR-10 files data_batch_1 ... data_batch_5 and test_batch, or "
            "CIFAR-100 files train and test (the python versions, extracted from "
            "cifar-10-python.tar.gz / cifar-100-python.tar.gz)"
        )
    parts = [_cifar_batch(f, label_key) for f in train_files]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _cifar_batch(test_file, label_key)
    return as_dataset(train_x, train_y, str(folder)), as_dataset(test_x, test_y, str(folder))
