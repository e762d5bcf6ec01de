"""`result_kind`: which of fastloss's results a file holds, so that commands reading any of
them (``fastloss view``, ``fastloss export``) pick the right reader. Other tools' files that
`fastloss.io.foreign` reads count as the kind they are read as."""

from __future__ import annotations

import os
from typing import Literal

from fastloss.errors import FileFormatError, NotFoundError
from fastloss.io import curve_result, ensemble_file, foreign, frames, surface
from fastloss.io.hdf5 import open_h5

Kind = Literal["surface", "curve", "ensemble", "frames"]

KINDS: dict[str, Kind] = {  # the format attribute of the file's root -> its kind
    surface.FORMAT: "surface",
    curve_result.FORMAT: "curve",
    ensemble_file.FORMAT: "ensemble",
}


def result_kind(path: str | os.PathLike) -> Kind:
    """ "surface" (a plane or a line: `Surface`, also an MPO or a curve's plane, a
    loss-landscape surface file, dnn-mode-connectivity's plane.npz), "curve" (`CurveResult`,
    also dnn-mode-connectivity's curve.npz), "ensemble" (`load_ensemble_file`) or "frames"
    (`Frames`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NotFoundError(f"no such file: {path}")
    if foreign.is_npz(path):
        npz = foreign.npz_kind(path)
        if npz is not None:
            return npz
    else:
        with open_h5(path, "r") as f:
            kind = KINDS.get(str(f.attrs.get("format", "")))
            if kind is not None:
                return kind
            group = f.get("fastloss")
            if group is not None and group.attrs.get("format") == frames.FORMAT:
                return "frames"
            if foreign.is_loss_landscape(f):
                return "surface"
    raise FileFormatError(
        f"{path} is not a fastloss result (a surface, curve evaluation, ensemble evaluation "
        "or video frames file), a loss-landscape surface file or dnn-mode-connectivity's "
        "curve.npz or plane.npz"
    )
