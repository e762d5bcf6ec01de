"""Evaluating curves between two networks (Garipov et al., paper 000).

`evaluate_curve` runs the model at T points ``φ(t)`` along a curve and at the same ``t`` on
the straight segment ``w1 + t·(w2 − w1)``: per split the loss (NLL + ½·wd·‖φ(t)‖², as
dnn-mode-connectivity's ``eval_curve.py`` reports it), NLL, accuracy and error, and the
accuracy of the ensemble of w1 with each point (paper 000, Fig. 8). Both paths are points
of the curve's own subspace (the segment is ``(1 − t)·e_w1 + t·e_w2``), so one batched
model serves both, and BatchNorm statistics are recomputed at every point over the train
data in the same pass. The results are a `fastloss.curve_results.CurveResult`.

`evaluate_curve_plane` evaluates the plane the curve is drawn in (Fig. 2, middle/right).
Figures are in `fastloss.plot_curves`, the command line in `fastloss.curve_cli`.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import fastloss
from fastloss.batched import BatchedModel
from fastloss.curve_results import CurveResult
from fastloss.curves import Curve, curve_plane
from fastloss.data import data_hash
from fastloss.evaluate import (
    CPU_BATCH_SIZE,
    GPU_BATCH_SIZE,
    _batches,
    _has_batch_norm,
    _progress,
    as_tensors,
    evaluate,
    plan_tiles,
    prepare,
    recompute_bn,
)
from fastloss.io import Surface
from fastloss.subspace import Grid

__all__ = ["CurveResult", "evaluate_curve", "evaluate_curve_plane", "register_cli"]

Data = tuple[Tensor, Tensor]


def check_data_fits(model: nn.Module, data: Mapping[str, Data]) -> None:
    """A clear `ValueError` when samples do not fit the model's input, or labels exceed its
    outputs, instead of a shape error from deep inside the batched pass."""
    probe = copy.deepcopy(model).cpu().float().eval()
    for split, (x, y) in data.items():
        try:
            with torch.no_grad():
                logits = probe(x[:2].cpu().float())
        except (RuntimeError, ValueError) as e:
            raise ValueError(
                f"the {split} data (samples of shape {list(x.shape[1:])}) do not fit the model "
                f"{type(model).__name__}: {str(e).splitlines()[0]}"
            ) from None
        if logits.dim() != 2:
            raise ValueError(f"the model gives outputs {list(logits.shape)}; expected [B, C]")
        if int(y.max()) >= logits.shape[1] or int(y.min()) < 0:
            raise ValueError(
                f"the {split} labels run from {int(y.min())} to {int(y.max())}, but the model "
                f"has {logits.shape[1]} outputs"
            )


@torch.no_grad()
def _chunk_sums(
    batched: BatchedModel,
    coords: Tensor,
    data: Mapping[str, Data],
    eval_batch: int,
    ensemble_split: str,
    reference: Tensor | None,
) -> tuple[dict[str, Tensor], Tensor | None]:
    """Per-point sums over each split for one chunk of points (BN statistics already set):
    ``<split>_nll``, ``<split>_correct`` and, on ``ensemble_split`` with the ``reference``
    probabilities ``[N, C]`` of w1, ``ens_nll`` and ``ens_correct``. With no reference the
    softmax of point 0 on ``ensemble_split`` comes back instead (to become the reference)."""
    K = coords.shape[0]
    sums: dict[str, Tensor] = {}
    kept: list[Tensor] = []
    for split, (x, y) in data.items():
        nll = torch.zeros(K, dtype=torch.float64, device=coords.device)
        correct = torch.zeros(K, dtype=torch.int64, device=coords.device)
        ens_nll, ens_correct = torch.zeros_like(nll), torch.zeros_like(correct)
        start = 0
        for xb, yb in _batches(x, y, eval_batch):
            B = xb.shape[0]
            logp = torch.log_softmax(batched(xb, coords).reshape(K, B, -1).double(), dim=-1)
            target = yb.expand(K, B)[..., None]
            nll -= logp.gather(2, target)[..., 0].sum(1)
            correct += (logp.argmax(-1) == yb).sum(1)
            if split == ensemble_split:
                if reference is None:
                    kept.append(logp[0].exp().float())
                else:  # the ensemble averages the two softmax outputs
                    probs = 0.5 * (logp.exp() + reference[start : start + B].double())
                    ens_nll -= probs.gather(2, target)[..., 0].clamp_min(1e-300).log().sum(1)
                    ens_correct += (probs.argmax(-1) == yb).sum(1)
            start += B
        sums[f"{split}_nll"], sums[f"{split}_correct"] = nll, correct
        if split == ensemble_split:
            sums["ens_nll"], sums["ens_correct"] = ens_nll, ens_correct
    return sums, (torch.cat(kept) if kept else None)


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
) -> CurveResult:
    """The curve and the straight segment w1 → w2 at ``points`` values of t in [0, 1].

    ``train``/``test``: ``(x, y)`` tensors or DataLoaders. Per split and path: ``loss``
    (NLL + ``0.5·wd·‖φ(t)‖²`` over the parameters), ``nll``, ``acc`` and ``err`` (percent).
    ``bn="recompute"`` recomputes BatchNorm statistics at each point over the train data
    (cumulative average over batches of ``batch_size``, as ``update_bn``); ``"fixed"`` uses
    the curve's stored statistics (those of w1). The ensemble of w1 with each point (mean of
    the two softmax outputs) is evaluated on the test data, or on train when there is no
    test. ``out`` writes the result as HDF5 (atomically; an existing file is refused unless
    ``overwrite``); ``attrs`` are extra metadata for it (e.g. the curve's file).
    """
    start_time = time.perf_counter()
    if int(points) != points or points < 2:
        raise ValueError(f"points must be a whole number ≥ 2, got {points!r}")
    points = int(points)
    if out is not None:
        _check_output(os.fspath(out), overwrite)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    splits = {
        name: as_tensors(d, name) for name, d in (("train", train), ("test", test)) if d is not None
    }
    if not splits:
        raise ValueError("nothing to evaluate: give train=(x, y) and/or test=(x, y)")
    if bn not in ("recompute", "fixed"):
        raise ValueError(f"bn must be 'recompute' or 'fixed', got {bn!r}")
    uses_bn = _has_batch_norm(model)
    if uses_bn and bn == "recompute" and "train" not in splits:
        raise ValueError("bn='recompute' needs train data to compute BatchNorm statistics")
    check_data_fits(model, splits)
    batch_size = batch_size or (CPU_BATCH_SIZE if device.type == "cpu" else GPU_BATCH_SIZE)
    ensemble_split = "test" if "test" in splits else "train"

    t = torch.linspace(0, 1, points, dtype=torch.float64)
    curve_coords = curve.coords(t)
    segment_coords = torch.zeros_like(curve_coords)
    segment_coords[:, 0], segment_coords[:, -1] = 1 - t, t
    coords = torch.cat([curve_coords, segment_coords])  # [2T, J]
    gram = curve.gram()
    sq_norm = torch.einsum("kj,jl,kl->k", coords, gram, coords)  # ‖φ‖² over the parameters

    batched, data, coords_dev = prepare(model, curve, splits, coords, device, dtype)
    probe = next(iter(data.values()))[0]
    chunk, eval_batch = plan_tiles(batched, coords_dev, probe, batch_size)

    def set_statistics(c: Tensor) -> None:
        if not uses_bn:
            return
        if bn == "recompute":
            recompute_bn(batched, c, data["train"], batch_size)
        else:
            batched.set_bn_statistics(c.shape[0], "fixed", c.device)

    totals: dict[str, list[Tensor]] = {}
    bar = _progress(coords.shape[0] + 1, 0, progress)
    try:
        with batched.caching_products():
            set_statistics(coords_dev[:1])  # w1 alone: the ensembles' fixed member
            ensemble_data = {ensemble_split: data[ensemble_split]}
            _, reference = _chunk_sums(
                batched, coords_dev[:1], ensemble_data, eval_batch, ensemble_split, None
            )
            bar.update(1)
            i = 0
            while i < coords.shape[0]:
                c = coords_dev[i : i + chunk]
                try:
                    set_statistics(c)
                    sums, _ = _chunk_sums(batched, c, data, eval_batch, ensemble_split, reference)
                except torch.cuda.OutOfMemoryError:
                    if chunk == 1:
                        raise
                    chunk = max(1, chunk // 2)  # retry the same points in smaller chunks
                    torch.cuda.empty_cache()
                    continue
                for name, value in sums.items():
                    totals.setdefault(name, []).append(value.cpu())
                i += c.shape[0]
                bar.update(c.shape[0])
    finally:
        bar.close()

    per_point = {name: torch.cat(v).double().numpy() for name, v in totals.items()}
    values: dict[str, np.ndarray] = {}
    for path, rows in (("curve", slice(0, points)), ("segment", slice(points, None))):
        for split, (x, _) in splits.items():
            n = x.shape[0]
            nll = per_point[f"{split}_nll"][rows] / n
            acc = per_point[f"{split}_correct"][rows] * (100.0 / n)
            values[f"{path}/{split}_loss"] = nll + 0.5 * wd * sq_norm[rows].numpy()
            values[f"{path}/{split}_nll"] = nll
            values[f"{path}/{split}_acc"] = acc
            values[f"{path}/{split}_err"] = 100.0 - acc
        n = splits[ensemble_split][0].shape[0]
        acc = per_point["ens_correct"][rows] * (100.0 / n)
        values[f"ensemble/{path}/{ensemble_split}_acc"] = acc
        values[f"ensemble/{path}/{ensemble_split}_err"] = 100.0 - acc
        values[f"ensemble/{path}/{ensemble_split}_nll"] = per_point["ens_nll"][rows] / n

    segment_length = float(gram[0, 0] - 2 * gram[0, -1] + gram[-1, -1]) ** 0.5
    settings = {
        "points": points,
        "wd": float(wd),
        "bn": bn if uses_bn else "none",
        "batch_size": batch_size,
        "dtype": str(dtype or torch.float32),
        "splits": list(splits),
        "ensemble_split": ensemble_split,
        "data": {s: {"n": int(d[0].shape[0]), "hash": data_hash(*d)} for s, d in splits.items()},
    }
    info = {
        "format": "fastloss-curve-eval",
        "format_version": 1,
        "fastloss_version": fastloss.__version__,
        "torch_version": str(torch.__version__),
        "device": str(device),
        "settings": settings,
        "curve": {"kind": curve.kind, "bends": curve.J - 2, "names": list(curve.names)},
        "model": {
            "class": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "repr": repr(model),
        },
        "points_per_chunk": chunk,
        "eval_batch_size": eval_batch,
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
    if out is not None:
        result.save(out, overwrite=overwrite)
    return result


def _check_output(path: str, overwrite: bool) -> None:
    """Fail before the work, not after it."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"folder {folder} does not exist")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )


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
) -> Surface:
    """The loss surface on the plane of the curve (`fastloss.curves.curve_plane`): through
    w1, w2 and the bend for one bend (w1 at (0, 0), w2 at (1, 0)), the best 2D PCA plane for
    more. The surface's ``attrs["curve"]`` holds the curve's projected points (``t``, ``xy``
    ``[samples, 2]``, ``bends_xy``), the plane's kind and the ``residual`` (the fraction of
    the curve outside the plane, 0 for one bend), so `plot_curves.plot_curve_plane` can
    redraw it from the file; the bends are markers. Other arguments as `fastloss.evaluate`
    (``out``: resumable HDF5)."""
    plane, info = curve_plane(curve, samples)
    splits = {n: as_tensors(d, n) for n, d in (("train", train), ("test", test)) if d is not None}
    check_data_fits(model, splits)
    surface = evaluate(
        model,
        plane,
        grid,
        train=splits.get("train"),
        test=splits.get("test"),
        bn=bn,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        out=None if out is None else os.fspath(out),
        overwrite=overwrite,
        progress=progress,
    )
    surface.attrs.update(curve_plane_attrs(curve, info))
    if out is not None:  # the evaluation's file, now with the curve (an atomic rewrite)
        surface.save(out, overwrite=True)
    return surface


def register_cli(commands) -> None:
    """Adds ``curve eval`` and ``curve plane`` to the ``curve`` group's subparsers."""
    from fastloss.curve_cli import register

    register(commands)
