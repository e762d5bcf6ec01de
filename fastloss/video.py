"""Videos of the loss surface in the plane of a training curve: `make_video`, `fastloss video`.

Paper 000's video: as a Bezier curve between two optima trains, the plane through w1, w2 and
the bend turns, and the loss in it goes from two isolated basins to a tunnel of low loss.
Each snapshot of the curve (`fastloss.snapshots`) gives one frame: the grid of its plane
evaluated by the engine (`fastloss.evaluate`). Frames go to one HDF5 file as they finish
(`fastloss.frames`), so a killed run resumes at the first unfinished frame, then
`fastloss.render` draws them with one colour scale into an MP4 and/or a GIF::

    make_video(None, "runs/curve", train=(x, y), mp4="video.mp4", gif="video.gif")
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, cast

import numpy as np
import torch
from torch import nn

import fastloss
from fastloss.data import data_hash
from fastloss.evaluate import CPU_BATCH_SIZE, GPU_BATCH_SIZE, _has_batch_norm, as_tensors, evaluate
from fastloss.frames import FramesWriter
from fastloss.models import build_model
from fastloss.render import render_video
from fastloss.snapshots import Snapshot, SnapshotsLike, default_grid, load_snapshots
from fastloss.subspace import Grid

__all__ = ["make_video", "register_cli", "render_video"]


def _model_from(snapshot: Snapshot) -> nn.Module:
    meta = snapshot.meta
    missing = [k for k in ("model", "in_shape", "num_classes") if k not in meta]
    if missing:
        raise ValueError(
            f"{snapshot.path} does not say how to build its model (no {', '.join(missing)} in "
            "its metadata); pass the model to make_video yourself"
        )
    return build_model(
        meta["model"], tuple(meta["in_shape"]), meta["num_classes"], **meta.get("kwargs", {})
    )


def make_video(
    model: nn.Module | None,
    snapshots: SnapshotsLike | list[Snapshot],
    train,
    test=None,
    grid: Grid | None = None,
    metric: str = "train_loss",
    frames: str | os.PathLike = "frames.h5",
    mp4: str | os.PathLike | None = "video.mp4",
    gif: str | os.PathLike | None = None,
    fps: float = 4,
    size: tuple[int, int] = (640, 480),
    dpi: int = 100,
    bn: str = "recompute",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate one frame per snapshot into ``frames`` (HDF5), then render ``mp4``/``gif``.

    ``snapshots``: a fit folder (``DIR/steps/*.pt``), curve checkpoint paths, or the result
    of `load_snapshots`; frames follow the steps. ``model`` is the architecture (None: built
    from the snapshots' metadata). ``grid`` is in each frame's plane coordinates, w1 at
    (0, 0) and w2 at (1, 0); None takes `default_grid`. ``train``/``test`` are ``(x, y)``;
    loss and accuracy of each given split are stored, ``metric`` is the one drawn. A rerun
    continues an interrupted ``frames`` file when its settings (grid, data, snapshots,
    bn, batch size, dtype) match, and refuses another one unless ``overwrite``. ``mp4=None``
    and ``gif=None`` skip rendering. Returns the paths and timings.
    """
    if isinstance(snapshots, list) and all(isinstance(s, Snapshot) for s in snapshots):
        snaps = cast(list[Snapshot], snapshots)
    else:
        snaps = load_snapshots(cast(SnapshotsLike, snapshots))
    model = model if model is not None else _model_from(snaps[0])
    grid = grid if grid is not None else default_grid(snaps)
    if grid.y is None:
        raise ValueError("a video frame is a plane: give the grid a y axis")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    splits = {n: as_tensors(d, n) for n, d in (("train", train), ("test", test)) if d is not None}
    if "train" not in splits:
        raise ValueError("make_video needs train=(x, y) data")
    metrics = [f"{split}_{m}" for split in splits for m in ("loss", "acc")]
    base = metric[: -len("_err")] + "_acc" if metric.endswith("_err") else metric
    if base not in metrics:
        raise ValueError(f"metric {metric!r} needs data it was not given; available: {metrics}")
    batch_size = batch_size or (CPU_BATCH_SIZE if device.type == "cpu" else GPU_BATCH_SIZE)
    xs, ys = (a.numpy() for a in grid.axes())  # type: ignore[union-attr]
    settings = {
        "grid": [xs.tolist(), ys.tolist()],
        "bn": bn if _has_batch_norm(model) else "none",
        "batch_size": batch_size,
        "dtype": str(dtype or torch.float32),
        "data": {s: {"n": int(d[0].shape[0]), "hash": data_hash(*d)} for s, d in splits.items()},
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "snapshots": [[s.step, s.digest] for s in snaps],
    }
    names = list(snaps[0].markers)
    static = {
        "steps": np.array([s.step for s in snaps]),
        "curve_xy": np.stack([s.xy for s in snaps]),
        "bends_xy": np.stack([s.bends_xy for s in snaps]),
        "markers": np.array([[s.markers[n] for n in names] for s in snaps], dtype=np.float64),
        "plane_source": np.array([s.plane_source for s in snaps]),
    }
    attrs = {
        "snapshot_paths": [s.path for s in snaps],
        "fastloss_version": fastloss.__version__,
        "torch_version": str(torch.__version__),
        "device": str(device),
        "model_repr": repr(model),
    }
    writer = FramesWriter(
        frames, xs, ys, metrics, static, names, settings, attrs, overwrite=overwrite
    )
    points = len(xs) * len(ys)
    pending = writer.pending()
    start = time.perf_counter()
    bar = _progress(len(snaps) * points, (len(snaps) - len(pending)) * points, progress)
    try:
        for f in pending:
            began = time.perf_counter()
            plane = snaps[f].plane(snaps)
            bar.set_postfix_str(f"frame {f + 1}/{len(snaps)}, step {snaps[f].step}")
            surface = evaluate(
                model,
                plane,
                grid,
                train=splits["train"],
                test=splits.get("test"),
                bn=bn,
                batch_size=batch_size,
                device=device,
                dtype=dtype,
                progress=False,
            )
            seconds = time.perf_counter() - began
            writer.write(int(f), surface.values, plane_norms=plane.norms(), seconds=seconds)
            bar.update(points)
    finally:
        bar.close()
        writer.close()
    evaluated = time.perf_counter() - start
    result: dict[str, Any] = {
        "frames_path": os.fspath(frames),
        "frames": len(snaps),
        "evaluated": len(pending),
        "points": points,
        "seconds_evaluating": evaluated,
    }
    if mp4 is not None or gif is not None:
        start = time.perf_counter()
        result.update(render_video(frames, mp4, gif, metric, fps, size, dpi, progress=progress))
        result["seconds_rendering"] = time.perf_counter() - start
    return result


def _progress(total: int, done: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=done, unit="pt", disable=not enabled, desc="video", dynamic_ncols=True
    )


# --------------------------------------------------------------------------- command line


def _size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 640x480, got {text!r}"
        ) from None


def _video(args: argparse.Namespace) -> int:
    from fastloss.cli import _dtype, _load_data

    render_only = len(args.inputs) == 1 and str(args.inputs[0]).endswith((".h5", ".hdf5"))
    if render_only:  # re-render a frames file, evaluating nothing
        start = time.perf_counter()
        done = render_video(
            args.inputs[0], args.out, args.gif, args.metric, args.fps, args.size, args.dpi
        )
        _print_rendered(done, args.fps, time.perf_counter() - start)
        return 0
    snaps = load_snapshots(args.inputs)
    straight = sum(s.straight for s in snaps)
    print(
        f"{len(snaps)} snapshots, steps {snaps[0].step} to {snaps[-1].step}"
        + (f" ({straight} straight: drawn in a neighbour's plane)" if straight else "")
    )
    grid = default_grid(snaps, args.x, args.y, args.resolution)
    args.data = args.data or snaps[-1].data or "mnist1d"  # the fit's data unless told
    train_data, test_data = _load_data(args)
    frames = args.frames or os.path.splitext(args.out)[0] + ".frames.h5"
    result = make_video(
        None,
        snaps,
        train_data,
        test_data if args.metric.startswith("test_") else None,
        grid=grid,
        metric=args.metric,
        frames=frames,
        mp4=args.out,
        gif=args.gif,
        fps=args.fps,
        size=args.size,
        dpi=args.dpi,
        bn=args.bn,
        batch_size=args.batch_size,
        device=args.device,
        dtype=_dtype(args.dtype),
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    seconds, n = result["seconds_evaluating"], result["evaluated"] * result["points"]
    assert grid.y is not None
    print(
        f"{frames}: {result['frames']} frames of {grid.y[2]}x{grid.x[2]} points, "
        f"{result['evaluated']} evaluated now in {seconds:.1f} s "
        f"({n / max(seconds, 1e-9):.1f} points/s)"
    )
    _print_rendered(result, args.fps, result["seconds_rendering"])
    return 0


def _print_rendered(done: dict[str, Any], fps: float, seconds: float) -> None:
    w, h = done["size"]
    lo, hi = done["limits"]
    for path in (done["mp4"], done["gif"]):
        if path:
            print(f"{path}: {done['frames']} frames, {w}x{h}, {fps:g} fps")
    print(f"  colour scale {lo:.4g} to {hi:.4g} for all frames; rendered in {seconds:.1f} s")


def register_cli(commands) -> None:
    """Adds this module's command(s) to an argparse subparsers object."""
    from fastloss.cli import _axis

    p = commands.add_parser(
        "video",
        help="video of the loss surface in the plane of a training curve",
        description="One frame per curve snapshot (DIR/steps/*.pt from `fastloss curve fit`): "
        "the loss in the plane of the curve at that step, evaluated into a resumable frames "
        "file, then drawn with one colour scale into an MP4 (and a GIF). Given a frames .h5 "
        "file instead, renders it again without evaluating.",
    )
    p.add_argument("inputs", nargs="+", help="fit folder(s), snapshot files, or a frames .h5")
    p.add_argument(
        "--data",
        help="mnist1d, digits, or a data path (default: the data the curve was fitted on, "
        "as its snapshots record, else mnist1d)",
    )
    p.add_argument("--train-samples", type=int, help="evaluate on a seeded subset of the train set")
    p.add_argument("--test-samples", type=int, help="subset of the test set (test_* metrics)")
    p.add_argument("--data-seed", type=int, default=42)
    p.add_argument("--x", type=_axis, help="x axis as lo:hi:n (default -0.3:1.3, wider if needed)")
    p.add_argument("--y", type=_axis, help="y axis as lo:hi:n (default: every curve, with margin)")
    p.add_argument("--resolution", type=int, default=41, help="points along default axes")
    p.add_argument("--metric", default="train_loss", help="train_loss, train_err, test_loss, ...")
    p.add_argument("--fps", type=float, default=4, help="frames per second (default 4)")
    p.add_argument("--size", type=_size, default=(640, 480), help="WIDTHxHEIGHT in pixels")
    p.add_argument("--dpi", type=int, default=100, help="text scale: pixels per inch (100)")
    p.add_argument("--out", default="video.mp4", help="MP4 path (default video.mp4)")
    p.add_argument("--gif", help="also write this GIF")
    p.add_argument("--frames", help="frames HDF5 (default: the MP4's name with .frames.h5)")
    p.add_argument("--bn", choices=("recompute", "fixed"), default="recompute")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float64"), default="float32")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a frames file from other settings"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_video)
