"""Data sets as tensor pairs: the built-in ones and loaders for the formats users bring.

A data set is ``Dataset = (x, y)`` with ``x`` float32 ``[N, *in_shape]`` and ``y`` int64
``[N]``; every loader returns a ``(train, test)`` pair of them.

Built in, offline and deterministic:

- ``"mnist1d"``: MNIST-1D made locally by the ``mnist1d`` package (``make_dataset`` with its
  default arguments, seed 42): ``x [N, 40]``, 4000 train / 1000 test, already centred and
  scaled to unit variance by the package.
- ``"digits"``: scikit-learn's 8×8 digits, ``x [N, 1, 8, 8]`` in ``[0, 1]``, a seeded
  stratified 80/20 split (1437 / 360).

User data (nothing is ever downloaded): MNIST / Fashion-MNIST IDX files (gzipped or raw),
CIFAR-10 / CIFAR-100 python pickles (read by an unpickler that only builds numpy arrays),
``.npz`` files with ``x``, ``y`` and optionally ``x_test``, ``y_test``, and any map-style
torch ``Dataset`` through `from_torch_dataset`. `load_dataset` picks the loader from what a
path holds.
"""

from __future__ import annotations

import builtins
import functools
import gzip
import hashlib
import pickle
import random
import re
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

Dataset = tuple[Tensor, Tensor]
Split = tuple[Dataset, Dataset]

BUILTINS = ("mnist1d", "digits")

__all__ = [
    "BUILTINS",
    "Dataset",
    "data_hash",
    "from_torch_dataset",
    "load_builtin",
    "load_cifar",
    "load_dataset",
    "load_mnist",
    "load_mnist_files",
    "load_npz",
    "num_classes",
    "read_idx",
    "standardize",
    "subsample",
]


# ---------------------------------------------------------------------------------------------
# Checks shared by every loader


def _to_tensor(a: np.ndarray | Tensor) -> Tensor:
    if isinstance(a, Tensor):
        return a
    # torch takes neither big-endian data (possible in .npz) nor negative strides.
    a = np.ascontiguousarray(a)
    return torch.from_numpy(a.astype(a.dtype.newbyteorder("="), copy=False))


def _as_dataset(x: np.ndarray | Tensor, y: np.ndarray | Tensor, source: str) -> Dataset:
    """Validate and convert to the ``(float32 [N, ...], int64 [N])`` convention."""
    x, y = _to_tensor(x), _to_tensor(y)
    if x.dim() < 2:
        raise ValueError(f"{source}: x must be [N, ...] with at least 2 dims, got {list(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{source}: y must be [N] = [{x.shape[0]}] to match x {list(x.shape)}, "
            f"got {list(y.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{source}: the data set is empty")
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise ValueError(f"{source}: y must hold integer class labels, got fractional values")
    elif y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"{source}: y must hold integer class labels, got {y.dtype}")
    y = y.to(torch.int64)
    if (y < 0).any():
        raise ValueError(f"{source}: class labels must be >= 0, got {int(y.min())}")
    if x.dtype == torch.uint8:  # 8-bit images: scale to [0, 1] as the other loaders do
        x = x.to(torch.float32) / 255
    elif x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{source}: x must be real numbers, got {x.dtype}")
    x = x.to(torch.float32).contiguous()
    if not torch.isfinite(x).all():
        raise ValueError(f"{source}: x holds NaN or inf values")
    return x, y.contiguous()


def _check_split(train: Dataset, test: Dataset, source: str) -> Split:
    if train[0].shape[1:] != test[0].shape[1:]:
        raise ValueError(
            f"{source}: train x is {list(train[0].shape)} but test x is {list(test[0].shape)}; "
            "all samples must share one shape"
        )
    return train, test


def _random_split(data: Dataset, seed: int, test_fraction: float = 0.2) -> Split:
    x, y = data
    n_test = max(1, round(test_fraction * len(y)))
    if n_test >= len(y):
        raise ValueError(f"cannot split {len(y)} samples into train and test; give x_test, y_test")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    test, train = order[:n_test].sort().values, order[n_test:].sort().values
    return (x[train], y[train]), (x[test], y[test])


# ---------------------------------------------------------------------------------------------
# Built-in data sets


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(seed: int) -> tuple[np.ndarray, ...]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise ImportError(
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
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
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
        x, y, x_test, y_test = (a.copy() for a in _mnist1d_arrays(seed))
        return _as_dataset(x, y, "mnist1d"), _as_dataset(x_test, y_test, "mnist1d")
    if name == "digits":
        from sklearn.model_selection import train_test_split

        images, target = _digits_arrays()
        x = images[:, None].astype(np.float32) / 16  # pixel values are 0..16
        x_train, x_test, y_train, y_test = train_test_split(
            x, target, test_size=0.2, random_state=seed, stratify=target
        )
        return _as_dataset(x_train, y_train, "digits"), _as_dataset(x_test, y_test, "digits")
    raise ValueError(f"unknown built-in data set {name!r}; the built-ins are {', '.join(BUILTINS)}")


# ---------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST: IDX files

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# Both the canonical names and the dotted ones some mirrors use; optionally gzipped.
_IDX_NAME = re.compile(r"^(train|t10k)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$")
_IDX_ROLES = {
    ("train", "images"): "train_images",
    ("train", "labels"): "train_labels",
    ("t10k", "images"): "test_images",
    ("t10k", "labels"): "test_labels",
}


def _read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it starts with the gzip magic number."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip file ({e})") from e
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file (the MNIST format), gzipped or raw, as a numpy array of its shape."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'none'}; expected "
            "00 00 <type> <ndim>, e.g. 00000803 for MNIST images, 00000801 for labels)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dims)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX header says shape {list(shape)} ({expected} bytes of data) but the file "
            f"holds {len(raw) - header}; the file is truncated or corrupt, download it again"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _idx_pair(images: Path, labels: Path) -> Dataset:
    x, y = read_idx(images), read_idx(labels)
    if x.ndim == 3:  # [N, H, W] -> [N, 1, H, W]
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"{images}: expected images [N, H, W], got shape {list(x.shape)}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"{labels}: expected {len(x)} labels [N] to match {images.name}, got {list(y.shape)}"
        )
    return _as_dataset(x, y, str(images.parent))


def load_mnist_files(
    train_images: str | Path,
    train_labels: str | Path,
    test_images: str | Path,
    test_labels: str | Path,
) -> Split:
    """MNIST-format data from four explicit IDX files; ``x [N, 1, H, W]`` in ``[0, 1]``."""
    train = _idx_pair(Path(train_images), Path(train_labels))
    test = _idx_pair(Path(test_images), Path(test_labels))
    return _check_split(train, test, "MNIST files")


def _find_idx(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        m = _IDX_NAME.match(f.name)
        if m and f.is_file():
            found.setdefault(_IDX_ROLES[m.group(1), m.group(2)], f)
    return found


def load_mnist(folder: str | Path) -> Split:
    """MNIST or Fashion-MNIST from a folder holding the four standard IDX files
    (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, each optionally ``.gz``; a ``raw/`` subfolder as torchvision
    lays them out also works); ``x [N, 1, 28, 28]`` in ``[0, 1]``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    found = _find_idx(folder)
    if not found and (folder / "raw").is_dir():
        found = _find_idx(folder / "raw")
    missing = [role for role in _IDX_ROLES.values() if role not in found]
    if missing:
        names = {
            "train_images": "train-images-idx3-ubyte",
            "train_labels": "train-labels-idx1-ubyte",
            "test_images": "t10k-images-idx3-ubyte",
            "test_labels": "t10k-labels-idx1-ubyte",
        }
        raise FileNotFoundError(
            f"{folder}: missing MNIST IDX file(s) {', '.join(names[m] for m in missing)} "
            "(optionally .gz); put the four files of MNIST or Fashion-MNIST there, or pass "
            "the paths to load_mnist_files"
        )
    return load_mnist_files(**found)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: python pickles, unpickled by an allow-list


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


def _numpy_frombuffer():
    try:
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]
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
        raise FileNotFoundError(f"no such file: {path}")
    with path.open("rb") as f:
        try:
            # encoding="bytes" reads the Python 2 pickles CIFAR is distributed as.
            obj = _ArrayUnpickler(f, encoding="bytes").load()
        except _RefusedGlobal as e:
            raise ValueError(f"{path}: {e}") from e
        except Exception as e:  # truncated or garbage files fail in many ways
            raise ValueError(
                f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e})"
            ) from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _load_array_pickle(path)
    if "data" not in d or label_key not in d:
        raise ValueError(
            f"{path}: expected a CIFAR batch dict with keys 'data' and {label_key!r}, got keys "
            f"{sorted(d)}"
        )
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise ValueError(
            f"{path}: 'data' must be a uint8 numpy array, got "
            f"{getattr(data, 'dtype', type(data).__name__)}"
        )
    if data.ndim == 2 and data.shape[1] == 3 * 32 * 32:
        data = data.reshape(-1, 3, 32, 32)
    if data.ndim != 4 or data.shape[1:] != (3, 32, 32):
        raise ValueError(f"{path}: 'data' must be [N, 3072] (3×32×32), got {list(data.shape)}")
    labels = d[label_key]
    try:
        labels = np.asarray(labels)
    except Exception as e:
        raise ValueError(f"{path}: {label_key!r} is not a list of integers") from e
    if labels.dtype.kind not in "iu" or labels.shape != (len(data),):
        raise ValueError(
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
        raise FileNotFoundError(f"no such folder: {folder}")
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
        raise FileNotFoundError(
            f"{folder}: expected CIFAR-10 files data_batch_1 ... data_batch_5 and test_batch, or "
            "CIFAR-100 files train and test (the python versions, extracted from "
            "cifar-10-python.tar.gz / cifar-100-python.tar.gz)"
        )
    parts = [_cifar_batch(f, label_key) for f in train_files]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _cifar_batch(test_file, label_key)
    return _as_dataset(train_x, train_y, str(folder)), _as_dataset(test_x, test_y, str(folder))


# ---------------------------------------------------------------------------------------------
# .npz


def load_npz(path: str | Path, seed: int = 42) -> Split:
    """An ``.npz`` with ``x [N, ...]`` and ``y [N]``, and optionally ``x_test``, ``y_test``
    (else a seeded 80/20 split). uint8 ``x`` is scaled to ``[0, 1]``; other types are cast to
    float32 as they are."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if not _starts_with(path, b"PK\x03\x04"):  # np.load would take anything else as a pickle
        raise ValueError(f"{path}: not a readable .npz file (not a zip archive); corrupt?")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(
                f"{path}: holds pickled Python objects; save plain numeric arrays x and y"
            ) from e
        raise ValueError(f"{path}: not a readable .npz file ({e})") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz file, corrupt or truncated ({e})") from e
    if "x" not in arrays or "y" not in arrays:
        raise ValueError(
            f"{path}: expected arrays 'x' [N, ...] and 'y' [N] (and optionally 'x_test', "
            f"'y_test'), found {sorted(arrays) or 'none'}"
        )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"{path}: give both 'x_test' and 'y_test', or neither")
    train = _as_dataset(arrays["x"], arrays["y"], f"{path} (x, y)")
    if "x_test" not in arrays:
        return _random_split(train, seed)
    test = _as_dataset(arrays["x_test"], arrays["y_test"], f"{path} (x_test, y_test)")
    return _check_split(train, test, str(path))


# ---------------------------------------------------------------------------------------------
# Any torch Dataset


def from_torch_dataset(dataset: torch.utils.data.Dataset) -> Dataset:
    """Stack a map-style torch ``Dataset`` of ``(x, label)`` items into one ``(x, y)`` pair."""
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("the torch Dataset is empty")
    xs, ys = [], []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError(f"item {i} of the torch Dataset is not an (x, label) pair")
        xs.append(torch.as_tensor(item[0]))
        ys.append(int(item[1]))
    return _as_dataset(torch.stack(xs), torch.tensor(ys), type(dataset).__name__)


# ---------------------------------------------------------------------------------------------
# Dispatch, subsets, normalisation, provenance


def _is_cifar_file(name: str) -> bool:
    return name in ("test_batch", "train", "test") or name.startswith("data_batch_")


def _starts_with(path: Path, magic: bytes) -> bool:
    with path.open("rb") as f:
        return f.read(len(magic)) == magic


def load_dataset(spec: str | Path, seed: int = 42, normalize: bool = False) -> Split:
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
        raise FileNotFoundError(
            f"no data set {spec_str!r}: not a built-in ({', '.join(BUILTINS)}) and no such file "
            "or folder; give an .npz file, a folder of MNIST IDX files or a CIFAR python folder"
        )
    if path.is_file():
        if _IDX_NAME.match(path.name) or _is_cifar_file(path.name):
            path = path.parent  # one file of a set: load the set
        elif path.suffix == ".npz" or _starts_with(path, b"PK\x03\x04"):
            train, test = load_npz(path, seed=seed)
            return standardize(train, test) if normalize else (train, test)
        else:
            raise ValueError(
                f"{path}: unrecognised data file; expected an .npz with x and y, an MNIST IDX "
                "file or a CIFAR batch file"
            )
    if _find_idx(path) or ((path / "raw").is_dir() and _find_idx(path / "raw")):
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
            raise FileNotFoundError(
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
        raise ValueError(f"subsample size must be >= 1, got {n}")
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


def data_hash(x: Tensor, y: Tensor) -> str:
    """A short SHA-256 of the samples and labels (with their shapes and dtypes), for
    provenance metadata: the same data gives the same 16 hex digits."""
    h = hashlib.sha256()
    for t in (x, y):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{list(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
