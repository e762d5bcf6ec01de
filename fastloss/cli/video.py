"""``fastloss video``: the loss surface in the plane of a training curve, frame by frame, to
MP4 and GIF."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from fastloss.cli.options import (
    add_data_options,
    add_run_options,
    axis,
    command,
    load_data_from,
    report,
    reports,
    run_options,
    size,
)
from fastloss.curves import default_grid, load_snapshots
from fastloss.viz import make_video, render_video


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "video",
        help="video of the loss surface in the plane of a training curve",
        description="One frame per curve snapshot (DIR/steps/*.pt from `fastloss curve fit`): "
        "the loss in the plane of the curve at that step, evaluated into a resumable frames "
        "file, then drawn with one colour scale into an MP4 (and a GIF). Given a frames .h5 "
        "file instead, renders it again without evaluating.",
    )
    p.add_argument("inputs", nargs="+", help="fit folder(s), snapshot files, or a frames .h5")
    add_data_options(
        p, None, "the data the curve was fitted on, as its snapshots record, else mnist1d"
    )
    p.add_argument("--x", type=axis, help="x axis as lo:hi:n (default -0.3:1.3, wider if needed)")
    p.add_argument("--y", type=axis, help="y axis as lo:hi:n (default: every curve, with margin)")
    p.add_argument("--resolution", type=int, default=41, help="points along default axes")
    p.add_argument("--metric", default="train_loss", help="train_loss, train_err, test_loss, ...")
    p.add_argument("--fps", type=float, default=4, help="frames per second (default 4)")
    p.add_argument("--size", type=size, default=(640, 480), help="WIDTHxHEIGHT in pixels")
    p.add_argument("--dpi", type=int, default=100, help="text scale: pixels per inch (100)")
    p.add_argument("--out", default="video.mp4", help="MP4 path (default video.mp4)")
    p.add_argument("--gif", help="also write this GIF")
    p.add_argument("--frames", help="frames HDF5 (default: the MP4's name with .frames.h5)")
    add_run_options(p)
    command(p, _video, sharded=True)


def _video(args: argparse.Namespace) -> int:
    render_only = len(args.inputs) == 1 and str(args.inputs[0]).endswith((".h5", ".hdf5"))
    if render_only:  # re-render a frames file, evaluating nothing
        start = time.perf_counter()
        done = render_video(
            args.inputs[0], args.out, args.gif, args.metric, args.fps, args.size, args.dpi
        )
        _print_rendered(done, args.fps, time.perf_counter() - start)
        _report_rendered(args, done, time.perf_counter() - start)
        return 0
    snaps = load_snapshots(args.inputs)
    straight = sum(s.straight for s in snaps)
    print(
        f"{len(snaps)} snapshots, steps {snaps[0].step} to {snaps[-1].step}"
        + (f" ({straight} straight: drawn in a neighbour's plane)" if straight else "")
    )
    grid = default_grid(snaps, args.x, args.y, args.resolution)
    args.data = args.data or snaps[-1].data or "mnist1d"  # the fit's data unless told
    train_data, test_data = load_data_from(args)
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
        **run_options(args),
    )
    if not reports():
        return 0
    seconds, n = result["seconds_evaluating"], result["evaluated"] * result["points"]
    assert grid.y is not None
    print(
        f"{frames}: {result['frames']} frames of {grid.y[2]}x{grid.x[2]} points, "
        f"{result['evaluated']} evaluated now in {seconds:.1f} s "
        f"({n / max(seconds, 1e-9):.1f} points/s)"
    )
    _print_rendered(result, args.fps, result["seconds_rendering"])
    report(
        args,
        frames_file=frames,
        snapshots=len(snaps),
        steps=[s.step for s in snaps],
        straight=straight,
        grid=[grid.y[2], grid.x[2]],
        points=result["frames"] * result["points"],
        evaluated=n,
        seconds=seconds,
        points_per_second=n / max(seconds, 1e-9),
    )
    _report_rendered(args, result, result["seconds_rendering"], frames)
    return 0


def _report_rendered(
    args: argparse.Namespace, done: dict[str, Any], seconds: float, *written: str
) -> None:
    videos = [path for path in (done["mp4"], done["gif"]) if path]
    report(
        args,
        out=args.out,
        files=[*written, *videos],
        frames=done["frames"],
        size=done["size"],
        fps=args.fps,
        colour_scale=done["limits"],
        render_seconds=seconds,
    )


def _print_rendered(done: dict[str, Any], fps: float, seconds: float) -> None:
    w, h = done["size"]
    lo, hi = done["limits"]
    for path in (done["mp4"], done["gif"]):
        if path:
            print(f"{path}: {done['frames']} frames, {w}x{h}, {fps:g} fps")
    print(f"  colour scale {lo:.4g} to {hi:.4g} for all frames; rendered in {seconds:.1f} s")
