"""HDF5 helpers shared by the result files: opening with messages that say what to do, the
lock check, JSON in attributes, and the surface layout convention."""

from __future__ import annotations

from typing import Any

import h5py

from fastloss.errors import NotFoundError, SurfaceFileError
from fastloss.io.settings import canonical_json

LAYOUT = "values[i, j] is at (xcoordinates[j], ycoordinates[i])"
LAYOUT_1D = "values[j] is at xcoordinates[j]"
MAX_ATTRIBUTE_BYTES = 32768  # larger JSON goes into a dataset (compact attributes stop at 64 KiB)


def open_h5(path: str, mode: str) -> h5py.File:
    """Open, turning h5py's errors into `SurfaceFileError` messages that say what to do."""
    try:
        return h5py.File(path, mode)
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {path}") from None
    except (OSError, ValueError) as e:
        text = str(e)
        if is_lock_error(e):
            if mode == "r":
                # Our writers change raw data only, so reading beside one is safe.
                try:
                    return h5py.File(path, "r", locking=False)
                except (OSError, ValueError) as e2:
                    text = str(e2)
            else:
                raise SurfaceFileError(
                    f"{path} is locked by another process (is another run writing to it?): {text}"
                ) from e
        raise SurfaceFileError(
            f"cannot read {path} as an HDF5 surface ({text}); the file may be corrupt, "
            "truncated or not HDF5. It was left untouched: move it away, or choose another "
            "output path."
        ) from e


def is_lock_error(e: BaseException) -> bool:
    # HDF5: "unable to lock file, errno = 11, ..." (not "sblock->...": that is a damaged file)
    return "unable to lock file" in str(e).lower()


def check_not_locked(path: str) -> None:
    """Refuse to replace a file that another process is writing."""
    try:
        h5py.File(path, "r").close()
    except (OSError, ValueError) as e:
        if is_lock_error(e):
            raise SurfaceFileError(
                f"{path} is locked by another process (is another run writing to it?): {e}"
            ) from e


def check_replaceable(path: str) -> None:
    """An existing ``path`` may be replaced (``overwrite=True``) only if it is an HDF5 file
    that no other process is writing: anything else may be a typo for another output."""
    if not h5py.is_hdf5(path):
        raise SurfaceFileError(
            f"{path} exists and is not an HDF5 file; refusing to replace it even with "
            "overwrite=True (is the output path a typo?). Remove it yourself or choose "
            "another output path."
        )
    check_not_locked(path)


def put_json(group: h5py.Group, name: str, obj: Any) -> None:
    """``obj`` as JSON in attribute ``name`` (a dataset ``name_json`` when too large)."""
    text = canonical_json(obj)
    if len(text.encode()) <= MAX_ATTRIBUTE_BYTES:
        group.attrs[name] = text
    else:
        group.create_dataset(name + "_json", data=text, dtype=h5py.string_dtype())


def get_json(group: h5py.Group, name: str, default: Any) -> Any:
    """What `put_json` stored under ``name``, or ``default``."""
    import json

    if name in group.attrs:
        text = group.attrs[name]
    elif name + "_json" in group:
        text = group[name + "_json"][()]
    else:
        return default
    if isinstance(text, bytes):
        text = text.decode()
    return json.loads(text)
