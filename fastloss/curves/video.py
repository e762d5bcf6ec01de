"""The frames of a training video: the loss surface in the plane of a curve at each of its
snapshots (Garipov et al. 2018, the video of a curve training between two optima).

As the curve trains, the plane through w1, w2 and the bend turns, and the loss in it goes
from two isolated basins to a tunnel of low loss. Each snapshot (`fastloss.curves.snapshots`)
gives one frame: the grid of its plane, evaluated by the engine into one HDF5 frames file
(`fastloss.io.Frames`) as each frame finishes, so a killed run resumes at the first
unfinished frame. Under torchrun the processes share each frame's points and rank 0 writes
the file (`fastloss.engine.sharding`). `fastloss.viz.render_video` draws the frames;
`fastloss.viz.make_video` does both.
"""

from __future__ import annotations

import os
import time
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from fastloss.core import Grid
from fastloss.curves.snapshots import Snapshot, SnapshotsLike, default_grid, load_snapshots
from fastloss.engine import LossMetrics, MemorySink, collect_splits, prepare, progress_bar, run
from fastloss.engine.sharding import from_rank0, open_on_rank0
from fastloss.errors import ArgumentError
from fastloss.io import FramesWriter
from fastloss.models import build_from_spec
from fastloss.ops.losses import Loss, PerSample, resolve_loss
from fastloss.surfaces import grid_points


class FrameSink(MemorySink):
    """The points of one frame, written to the frames file as a whole once all are done
    (``writer`` None: a process of a group other than rank 0, which writes)."""

    def __init__(self, writer: FramesWriter | None, frame: int, shape: tuple[int, int]):
        super().__init__(shape[0] * shape[1])
        self.writer, self.frame, self.shape = writer, frame, shape

    def finish(self, **per_frame: Any) -> None:
        if self.writer is not None:
            values = {m: v.reshape(self.shape) for m, v in self.values.items()}
            self.writer.write(self.frame, values, **per_frame)


def as_snapshots(snapshots: SnapshotsLike | list[Snapshot]) -> list[Snapshot]:
    if isinstance(snapshots, list) and all(isinstance(s, Snapshot) for s in snapshots):
        return cast(list[Snapshot], snapshots)
    return load_snapshots(cast(SnapshotsLike, snapshots))


def evaluate_frames(
    model: nn.Module | None,
    snapshots: SnapshotsLike | list[Snapshot],
    train,
    test=None,
    grid: Grid | None = None,
    frames: str | os.PathLike = "frames.h5",
    bn: str = "recompute",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    progress: bool = True,
    loss: str | PerSample | Loss = "cross_entropy",
) -> dict[str, Any]:
    """Evaluate one frame per snapshot into ``frames`` (HDF5); returns the path, the frame
    count, how many were evaluated now, the points per frame and the time taken.

    ``snapshots``: a fit folder (``DIR/steps/*.pt``), curve checkpoint paths, or the result
    of `load_snapshots`; frames follow the steps. ``model`` is the architecture (None: built
    from the snapshots' metadata). ``grid`` is in each frame's plane coordinates, w1 at
    (0, 0) and w2 at (1, 0); None takes `default_grid`. ``train``/``test`` are ``(x, y)``;
    the loss's metrics on each given split are stored. A rerun continues an interrupted
    ``frames`` file when its settings (grid, data, snapshots, bn, batch size, dtype) match,
    and refuses another one unless ``overwrite``.
    """
    snaps = as_snapshots(snapshots)
    model = model if model is not None else build_from_spec(snaps[0].meta, snaps[0].path)
    grid = grid if grid is not None else default_grid(snaps)
    if grid.y is None:
        raise ArgumentError("a video frame is a plane: give the grid a y axis")
    if train is None:
        raise ArgumentError("the frames need train=(x, y) data")
    spec = resolve_loss(loss)
    splits = collect_splits(spec, train=train, test=test)
    first_plane = snaps[0].plane(snaps)
    ev = prepare(
        model,
        first_plane,
        splits,
        loss=spec,
        bn=bn,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
    )
    metrics = [f"{split}_{m}" for split in splits for m in spec.metrics]
    coords, xs, ys = grid_points(first_plane, grid)
    assert ys is not None
    settings = {
        "grid": [xs.tolist(), ys.tolist()],
        "snapshots": [[s.step, s.digest] for s in snaps],
        **ev.settings(),
    }
    names = list(snaps[0].markers)
    static = {
        "steps": np.array([s.step for s in snaps]),
        "curve_xy": np.stack([s.xy for s in snaps]),
        "bends_xy": np.stack([s.bends_xy for s in snaps]),
        "markers": np.array([[s.markers[n] for n in names] for s in snaps], dtype=np.float64),
        "plane_source": np.array([s.plane_source for s in snaps]),
    }
    attrs = {"snapshot_paths": [s.path for s in snaps], **ev.provenance()}
    writer = open_on_rank0(
        lambda: FramesWriter(
            frames, xs, ys, metrics, static, names, settings, attrs, overwrite=overwrite
        ),
        frames,
    )
    shape = (len(ys), len(xs))
    points = shape[0] * shape[1]
    pending = from_rank0(None if writer is None else writer.pending())
    start = time.perf_counter()
    bar = progress_bar(
        len(snaps) * points, (len(snaps) - len(pending)) * points, progress, desc="video"
    )
    try:
        for f in pending:
            began = time.perf_counter()
            plane = first_plane if f == 0 else snaps[f].plane(snaps)
            ev.load_subspace(plane)
            bar.set_postfix_str(f"frame {f + 1}/{len(snaps)}, step {snaps[f].step}")
            sink = FrameSink(writer, int(f), shape)
            run(ev, coords, LossMetrics(spec), sink, progress=bar)
            sink.finish(plane_norms=plane.norms(), seconds=time.perf_counter() - began)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return {
        "frames_path": os.fspath(frames),
        "frames": len(snaps),
        "evaluated": len(pending),
        "points": points,
        "seconds_evaluating": time.perf_counter() - start,
    }
