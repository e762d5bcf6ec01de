"""`plot_file`: draw one metric of a result file, whatever it holds (the `fastloss plot`
command)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from fastloss.errors import ArgumentError
from fastloss.io import CurveResult, Surface
from fastloss.io.atomic import check_output_path, write_errors
from fastloss.io.foreign import imported_note
from fastloss.io.kinds import result_kind
from fastloss.viz.curves import plot_curve_plane, plot_curve_profile
from fastloss.viz.surfaces import KINDS, PLOTTERS, plot_profile


def plot_file(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    metric: str = "train_loss",
    kind: str = "contour",
    dpi: int = 150,
    on_note: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> str:
    """Plot one metric of a surface file (the ``fastloss plot`` command). A 1D surface is
    always drawn as a profile (``metric`` may then list several, comma-separated); a curve
    evaluation as its loss and error profiles along t (`plot_curve_profile`; ``metric`` and
    ``kind`` do not apply). Other tools' files that `fastloss.io.foreign` reads are drawn
    the same way, and ``on_note`` is called with what was converted
    (``attrs["imported_from"]``). ``out`` defaults to ``<file>_<metric>_<kind>.png``; its
    extension picks the format. Returns the path written."""
    if kind not in KINDS:
        raise ArgumentError(f"unknown kind {kind!r}; choose from {list(KINDS)}")
    if out is not None:
        check_output_path(out, overwrite=True)
    found = result_kind(path)
    if found not in ("curve", "surface"):
        what = "an ensemble evaluation" if found == "ensemble" else "a video's frames"
        raise ArgumentError(
            f"{os.fspath(path)} holds {what}; plot draws surfaces and curve evaluations"
        )
    result = CurveResult.load(path) if found == "curve" else Surface.load(path)
    note = imported_note(result.attrs)
    if note is not None and on_note is not None:
        on_note(note)
    if isinstance(result, CurveResult):
        fig = plot_curve_profile(result)
        names, kind = ["curve"], "profile"
    else:
        surface = result
        names = [m.strip() for m in metric.split(",") if m.strip()]
        for name in names:
            surface.metric(name)  # KeyError listing the metrics the file has
        if surface.y is None or kind == "profile":
            kind = "profile"
            fig = plot_profile(surface, names, **kwargs)
        else:
            if len(names) != 1:
                raise ArgumentError(f"a {kind} plot shows one metric, got {names}")
            if kind == "contour" and "xy" in (surface.attrs.get("curve") or {}):
                # a curve plane: draw the curve
                fig = plot_curve_plane(surface, metric=names[0], **kwargs)
            else:
                fig = PLOTTERS[kind](surface, names[0], **kwargs)
    if out is None:
        out = f"{os.path.splitext(os.fspath(path))[0]}_{'+'.join(names)}_{kind}.png"
    with write_errors(out):
        fig.savefig(out, dpi=dpi)
    return os.fspath(out)
