"""Evaluating curves between two networks (Garipov et al. 2018).

`evaluate_curve` runs the model at T points ``φ(t)`` along a curve and at the same ``t`` on
the straight segment ``w1 + t·(w2 − w1)``: per split the loss (the mean loss plus
``½·wd·‖φ(t)‖²``, as dnn-mode-connectivity's ``eval_curve.py`` reports it), and for
classification the NLL, accuracy and error, and the accuracy of the ensemble of w1 with each
point (Fig. 8). Both paths are points of the curve's own subspace (the segment is
``(1 − t)·e_w1 + t·e_w2``), so one batched model serves both, and BatchNorm statistics are
recomputed at every point over the train data. The results are a `fastloss.io.CurveResult`.

`evaluate_curve_plane` evaluates the plane the curve is drawn in (Fig. 2, middle/right).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fastloss.core import Grid
from fastloss.curves.curve import Curve
from fastloss.curves.plane import curve_plane
from fastloss.engine import (
    EnsembleWithReference,
    LossMetrics,
    MemorySink,
    Probabilities,
    collect_splits,
    prepare,
    run,
    run_in_memory,
)
from fastloss.engine.sharding import barrier, world
from fastloss.errors import ArgumentError
from fastloss.io import CurveResult, Surface
from fastloss.io.atomic import check_output_path
from fastloss.ops.losses import Loss, PerSample, resolve_loss
from fastloss.surfaces import evaluate

PATHS = ("curve", "segment")


def evaluate_curve(
    model: nn.Module,
    curve: Curve,
    train=None,
    test=None,
    points: int = 61,
    wd: float = 0.0,
    bn: str = "recompute",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    attrs: Mapping[str, Any] | None = None,
    loss: str | PerSample | Loss = "cross_entropy",
) -> CurveResult:
    """The curve and the straight segment w1 → w2 at ``points`` values of t in [0, 1].

    ``train``/``test``: ``(x, y)`` tensors or DataLoaders. Per split and path: ``loss``
    (the mean ``loss`` + ``0.5·wd·‖φ(t)‖²`` over the parameters) and the loss's other
    metrics; for cross-entropy also ``nll``, ``acc`` and ``err`` (percent), and the ensemble
    of w1 with each point (mean of the two softmax outputs) on the test data, or on train
    when there is no test. ``bn="recompute"`` recomputes BatchNorm statistics at each point
    over the train data (cumulative average over batches of ``batch_size``, as
    ``update_bn``); ``"fixed"`` uses the curve's stored statistics (those of w1). ``out``
    writes the result as HDF5 (atomically; an existing file is refused unless
    ``overwrite``); ``attrs`` are extra metadata for it (e.g. the curve's file).
    """
    start_time = time.perf_counter()
    if int(points) != points or points < 2:
        raise ArgumentError(f"points must be a whole number ≥ 2, got {points!r}")
    points = int(points)
    if out is not None:
        check_output_path(out, overwrite)  # fail before the work, not after it
    spec = resolve_loss(loss)
    splits = collect_splits(spec, train=train, test=test)
    ev = prepare(
        model, curve, splits, loss=spec, bn=bn, batch_size=batch_size, device=device, dtype=dtype
    )
    ensemble_split = "test" if "test" in splits else "train"

    t = torch.linspace(0, 1, points, dtype=torch.float64)
    curve_coords = curve.coords(t)
    segment_coords = torch.zeros_like(curve_coords)
    segment_coords[:, 0], segment_coords[:, -1] = 1 - t, t
    coords = torch.cat([curve_coords, segment_coords])  # [2T, J]
    gram = curve.gram()
    sq_norm = torch.einsum("kj,jl,kl->k", coords, gram, coords).numpy()  # ‖φ‖² over parameters

    reducers: list = [LossMetrics(spec)]
    if spec.classification:  # w1 alone first: the ensembles' fixed member
        reference = run_in_memory(ev, coords[:1], Probabilities(ensemble_split))["probs"][0]
        reference_probs = torch.as_tensor(reference, device=ev.device)
        reducers.append(EnsembleWithReference(reference_probs, ensemble_split))
    sink = MemorySink(coords.shape[0])
    run_info = run(ev, coords, reducers, sink, progress=progress)
    per_point = sink.values

    values: dict[str, np.ndarray] = {}
    for path, rows in (("curve", slice(0, points)), ("segment", slice(points, None))):
        for split in splits:
            for metric in spec.metrics:
                v = per_point[f"{split}_{metric}"][rows]
                if metric == "loss":
                    if spec.classification:
                        values[f"{path}/{split}_nll"] = v
                    v = v + 0.5 * wd * sq_norm[rows]
                values[f"{path}/{split}_{metric}"] = v
                if metric == "acc":
                    values[f"{path}/{split}_err"] = 100.0 - v
        if spec.classification:
            acc = per_point["ensemble_acc"][rows]
            values[f"ensemble/{path}/{ensemble_split}_acc"] = acc
            values[f"ensemble/{path}/{ensemble_split}_err"] = 100.0 - acc
            values[f"ensemble/{path}/{ensemble_split}_nll"] = per_point["ensemble_nll"][rows]

    segment_length = float(gram[0, 0] - 2 * gram[0, -1] + gram[-1, -1]) ** 0.5
    settings = {
        "points": points,
        "wd": float(wd),
        "splits": list(splits),
        "ensemble_split": ensemble_split if spec.classification else None,
        **ev.settings(),
    }
    provenance = ev.provenance()
    info = {
        "format": "fastloss-curve-eval",
        "format_version": 1,
        "fastloss_version": provenance["fastloss_version"],
        "torch_version": provenance["torch_version"],
        "device": provenance["device"],
        "settings": settings,
        "curve": {"kind": curve.kind, "bends": curve.J - 2, "names": list(curve.names)},
        "model": {
            "class": type(model).__name__,
            "parameters": settings["parameters"],
            "repr": provenance["model_repr"],
        },
        "points_per_chunk": run_info.points_per_chunk,
        "eval_batch_size": run_info.eval_batch_size,
        "seconds": round(time.perf_counter() - start_time, 3),
        **dict(attrs or {}),
    }
    result = CurveResult(
        t=t.numpy(),
        values=values,
        speed=curve.speed(t).numpy(),
        segment_length=segment_length,
        attrs=info,
    )
    if out is not None and world()[0] == 0:  # in a process group, rank 0 writes
        result.save(out, overwrite=overwrite)
    barrier()
    return result


def curve_plane_attrs(curve: Curve, plane_info: Mapping[str, Any]) -> dict[str, Any]:
    """What a surface file keeps about the curve drawn in its plane (JSON-ready)."""
    bends = curve.J - 2
    pca = bends > 1
    return {
        "curve": {
            "kind": curve.kind,
            "bends": bends,
            "plane": "pca" if pca else "through w1, w2 and the bend",
            "residual": float(plane_info["residual"]),
            "t": plane_info["t"].tolist(),
            "xy": plane_info["xy"].tolist(),
            "bends_xy": plane_info["bends_xy"].tolist(),
        },
        "xlabel": "x (units of ‖w2 − w1‖)",
        "ylabel": "y (units of ‖w2 − w1‖)",
        "aspect": "equal",
    }


def evaluate_curve_plane(
    model: nn.Module,
    curve: Curve,
    grid: Grid,
    train=None,
    test=None,
    bn: str = "recompute",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    samples: int = 101,
    loss: str | PerSample | Loss = "cross_entropy",
) -> Surface:
    """The loss surface on the plane of the curve (`curve_plane`): through w1, w2 and the bend
    for one bend (w1 at (0, 0), w2 at (1, 0)), the best 2D PCA plane for more. The surface's
    ``attrs["curve"]`` holds the curve's projected points (``t``, ``xy`` ``[samples, 2]``,
    ``bends_xy``), the plane's kind and the ``residual`` (the fraction of the curve outside
    the plane, 0 for one bend), so `fastloss.viz.plot_curve_plane` can redraw it from the
    file; the bends are markers. Other arguments as `fastloss.evaluate` (``out``: resumable
    HDF5)."""
    plane, info = curve_plane(curve, samples)
    surface = evaluate(
        model,
        plane,
        grid,
        train=train,
        test=test,
        bn=bn,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        out=None if out is None else os.fspath(out),
        overwrite=overwrite,
        progress=progress,
        loss=loss,
    )
    surface.attrs.update(curve_plane_attrs(curve, info))
    if out is not None and world()[0] == 0:  # the file, now with the curve (atomic rewrite)
        surface.save(out, overwrite=True)
    barrier()
    return surface
