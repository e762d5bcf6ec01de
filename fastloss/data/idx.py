"""MNIST / Fashion-MNIST: IDX files, gzipped or raw."""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from fastloss.data.checks import Dataset, Split, as_dataset, check_split
from fastloss.errors import DataError, NotFoundError

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# Both the canonical names and the dotted ones some mirrors use; optionally gzipped.
IDX_NAME = re.compile(r"^(train|t10k)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$")
_IDX_ROLES = {
    ("train", "images"): "train_images",
    ("train", "labels"): "train_labels",
    ("t10k", "images"): "test_images",
    ("t10k", "labels"): "test_labels",
}


def _read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it starts with the gzip magic number."""
    if not path.is_file():
        raise NotFoundError(f"no such file: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip file ({e})") from e
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file (the MNIST format), gzipped or raw, as a numpy array of its shape."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'none'}; expected "
            "00 00 <type> <ndim>, e.g. 00000803 for MNIST images, 00000801 for labels)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dims)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
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
        raise DataError(f"{images}: expected images [N, H, W], got shape {list(x.shape)}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{labels}: expected {len(x)} labels [N] to match {images.name}, got {list(y.shape)}"
        )
    return as_dataset(x, y, str(images.parent))


def load_mnist_files(
    train_images: str | Path,
    train_labels: str | Path,
    test_images: str | Path,
    test_labels: str | Path,
) -> Split:
    """MNIST-format data from four explicit IDX files; ``x [N, 1, H, W]`` in ``[0, 1]``."""
    train = _idx_pair(Path(train_images), Path(train_labels))
    test = _idx_pair(Path(test_images), Path(test_labels))
    return check_split(train, test, "MNIST files")


def find_idx(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        m = IDX_NAME.match(f.name)
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
        raise NotFoundError(f"no such folder: {folder}")
    found = find_idx(folder)
    if not found and (folder / "raw").is_dir():
        found = find_idx(folder / "raw")
    missing = [role for role in _IDX_ROLES.values() if role not in found]
    if missing:
        names = {
            "train_images": "train-images-idx3-ubyte",
            "train_labels": "train-labels-idx1-ubyte",
            "test_images": "t10k-images-idx3-ubyte",
            "test_labels": "t10k-labels-idx1-ubyte",
        }
        raise NotFoundError(
            f"{folder}: missing MNIST IDX file(s) {', '.join(names[m] for m in missing)} "
            "(optionally .gz); put the four files of MNIST or Fashion-MNIST there, or pass "
            "the paths to load_mnist_files"
        )
    return load_mnist_files(**found)
