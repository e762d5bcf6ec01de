"""Loss surfaces: the metrics of one model at every point of a grid on a plane or a line
(Li et al. 2018; Garipov et al. 2018, Fig. 2), as a `fastloss.io.Surface`, in memory or in
a resumable HDF5 file that loss-landscape's plotting scripts read; and `profile_surface`,
what such a surface will cost before it is run."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from fastloss.core import Grid, GridPoints, Subspace
from fastloss.engine import (
    LossMetrics,
    MemorySink,
    RunProfile,
    ShardedSink,
    check_metrics,
    collect_splits,
    prepare,
    profile_run,
    run,
    shard_folder,
    world,
)
from fastloss.engine.sharding import barrier, open_on_rank0
from fastloss.errors import ArgumentError, OutputExistsError
from fastloss.io import Surface, SurfaceWriter
from fastloss.io.hashing import tensor_digest
from fastloss.io.hdf5 import LAYOUT
from fastloss.ops.losses import Loss, PerSample, resolve_loss


def grid_points(
    subspace: Subspace, grid: Grid | Tensor
) -> tuple[Tensor | GridPoints, np.ndarray, np.ndarray | None]:
    """(coords [K, J], x axis, y axis or None) of a `Grid` (its `GridPoints`, made a chunk
    at a time), or of explicit coordinates ``[K, J]`` (then the x axis is 0 … K − 1)."""
    if isinstance(grid, Grid):
        points = GridPoints(grid)
        if points.shape[1] != subspace.J:
            raise ArgumentError(
                f"a {points.shape[1] - 1}-D grid needs a subspace with J = "
                f"{points.shape[1]} basis points; this one has J = {subspace.J}"
            )
        return points, points.xs.numpy(), None if points.ys is None else points.ys.numpy()
    coords = torch.as_tensor(grid, dtype=torch.float64)
    if coords.dim() != 2 or coords.shape[1] != subspace.J:
        raise ArgumentError(
            f"explicit coordinates must be [K, J] with J = {subspace.J}, got {list(coords.shape)}"
        )
    return coords, np.arange(coords.shape[0], dtype=np.float64), None


def evaluate(
    model: nn.Module,
    subspace: Subspace,
    grid: Grid | Tensor,
    train=None,
    test=None,
    metrics: Sequence[str] | None = None,
    bn: str = "recompute",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    points_per_chunk: int | None = None,
    loss: str | PerSample | Loss = "cross_entropy",
) -> Surface:
    """The metrics of ``model`` at every grid point of ``subspace`` -> `fastloss.io.Surface`.

    ``train``/``test`` are ``(x, y)`` tensors or DataLoaders. ``loss`` is ``"cross_entropy"``
    (metrics ``loss`` and ``acc``, in percent), ``"mse"``, ``"gaussian_nll"`` or a per-sample
    callable (see `fastloss.ops.losses`); ``metrics`` picks some of the loss's (default:
    all), stored as ``<split>_<metric>``. ``bn="recompute"`` recomputes BatchNorm statistics
    at each point over the train data; ``"fixed"`` uses those of the subspace's reference
    network. ``out`` writes an HDF5 file after every chunk; with ``resume`` a rerun with the
    same settings continues an interrupted file, and a file made with other settings is
    refused unless ``overwrite``. ``dtype=torch.bfloat16`` evaluates in bf16 with float32
    accumulation and loss. ``batch_size``: see `fastloss.engine.prepare`. In a process group
    (``torchrun``; `fastloss.engine.sharding`) the processes share the points and rank 0
    writes ``out``; every process returns the whole surface. The returned surface's
    ``attrs["evaluated"]`` counts the points this call evaluated (fewer when it resumed).
    """
    spec = resolve_loss(loss)
    splits = collect_splits(spec, train=train, test=test)
    metrics = check_metrics(metrics, spec)
    coords, xs, ys = grid_points(subspace, grid)
    if out is not None and not resume and not overwrite and os.path.exists(out):
        raise OutputExistsError(
            f"{out} exists; pass resume=True to continue it or overwrite=True to start afresh"
        )
    ev = prepare(
        model, subspace, splits, loss=spec, bn=bn, batch_size=batch_size, device=device, dtype=dtype
    )
    value_names = [f"{split}_{m}" for split in splits for m in metrics]
    settings = {
        "grid": [list(map(float, xs)), None if ys is None else list(map(float, ys))],
        "coords_hash": tensor_digest([("coords", coords)]),
        "metrics": value_names,
        "subspace": subspace.kind,
        "J": subspace.J,
        "basis_norms": [round(n, 6) for n in subspace.norms()],
        **ev.settings(),
    }
    attrs = {"layout": LAYOUT, **ev.provenance()}
    markers = dict(subspace.info.get("markers", {}))  # type: ignore[call-overload]
    reducer = LossMetrics(spec, metrics)
    if out is None:
        sink = MemorySink(coords.shape[0])
        info = run(ev, coords, reducer, sink, progress=progress, points_per_chunk=points_per_chunk)
        shape = (len(xs),) if ys is None else (len(ys), len(xs))
        attrs.update(_timings(info), evaluated=info.evaluated)
        return Surface(
            xs,
            ys,
            {m: sink.values[m].reshape(shape) for m in value_names},
            sink.done.reshape(shape),
            attrs=attrs,
            markers=markers,
            settings=settings,
        )

    def open_writer() -> SurfaceWriter:
        return SurfaceWriter(out, xs, ys, value_names, settings, attrs, markers, overwrite)

    if world()[1] > 1:
        key = tensor_digest([], prefix=json.dumps(settings, sort_keys=True, default=str))
        options = dict(progress=progress, points_per_chunk=points_per_chunk)
        return _evaluate_sharded(ev, coords, reducer, out, open_writer, key, **options)
    with open_writer() as writer:
        info = run(
            ev, coords, reducer, writer, progress=progress, points_per_chunk=points_per_chunk
        )
        if info.evaluated:  # a rerun of a finished file keeps the timings of the run that made it
            writer.update_attrs(**_timings(info))
        surface = writer.surface()
    surface.attrs["evaluated"] = info.evaluated
    return surface


def _evaluate_sharded(ev, coords, reducer, out, open_writer, key, progress, points_per_chunk):
    """`evaluate`'s file path in a process group: rank 0 opens ``out`` (`open_on_rank0`), the
    points are shared out (`ShardedSink`, shards of the settings ``key``), then every
    process reads the merged file back."""
    writer = open_on_rank0(open_writer, out)
    sink = ShardedSink(writer, shard_folder(out), key)
    with writer if writer is not None else contextlib.nullcontext():
        info = run(ev, coords, reducer, sink, progress=progress, points_per_chunk=points_per_chunk)
        sink.finish()
        if writer is not None and info.evaluated:
            writer.update_attrs(**_timings(info))
    barrier()
    surface = Surface.load(out)
    surface.attrs["evaluated"] = info.evaluated
    return surface


def _timings(info) -> dict[str, float | int]:
    timings: dict[str, float | int] = {
        "seconds": round(info.seconds, 3),
        "points_per_second": round(info.evaluated / max(info.seconds, 1e-9), 2),
    }
    if info.points_per_chunk is not None:
        timings.update(points_per_chunk=info.points_per_chunk, eval_batch_size=info.eval_batch_size)
    return timings


def profile_surface(
    model: nn.Module,
    subspace: Subspace,
    grid: Grid | Tensor,
    train=None,
    test=None,
    points: int = 16,
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16),
    bn: str = "recompute",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    loss: str | PerSample | Loss = "cross_entropy",
    top: int = 5,
) -> dict[torch.dtype, RunProfile]:
    """`evaluate` on ``points`` points spread evenly over ``grid``, once per dtype, under the
    profiler: the points per second and the top ``top`` ops of each (see
    `fastloss.engine.profile_run`). The profiles' ``values`` hold the points' metrics, so
    the dtypes' losses can be compared."""
    if points < 1:
        raise ArgumentError(f"points must be >= 1, got {points}")
    spec = resolve_loss(loss)
    splits = collect_splits(spec, train=train, test=test)
    coords, _, _ = grid_points(subspace, grid)
    pick = np.unique(np.linspace(0, coords.shape[0] - 1, min(points, coords.shape[0])).round())
    coords = coords[torch.as_tensor(pick, dtype=torch.long)]
    out = {}
    for dtype in dtypes:
        ev = prepare(
            model,
            subspace,
            splits,
            loss=spec,
            bn=bn,
            batch_size=batch_size,
            device=device,
            dtype=None if dtype == torch.float32 else dtype,
        )
        out[dtype] = profile_run(ev, coords, LossMetrics(spec), top=top)
    return out
