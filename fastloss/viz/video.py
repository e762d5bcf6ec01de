"""Videos: a frames file -> MP4 / GIF, one contour figure per finished frame, one colour scale
for all; `make_video` evaluates the frames of a training curve first.

Each frame is `plot_contour` of the frame's plane (log-spaced levels for
losses) with the curve drawn over it, its bends as diamonds, w1 and w2 labelled and the step
in the title. The colour limits are the minimum and maximum over every frame, so the colour
of a loss value never changes during the video. Needs only the frames file, so a finished
one can be re-rendered at another size or frame rate without evaluating anything.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from fastloss.core import Grid
from fastloss.curves import Snapshot, evaluate_frames
from fastloss.curves.snapshots import SnapshotsLike
from fastloss.engine import progress_bar, world
from fastloss.errors import ArgumentError
from fastloss.io import Frames
from fastloss.io.atomic import atomic_output
from fastloss.viz.style import metric_label, shared_limits, uses_log_scale
from fastloss.viz.surfaces import plot_contour

CURVE_COLOUR = "#ff2fd0"  # magenta, as the papers draw curves


def even_size(size: tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` in pixels, odd values rounded up (H.264 in yuv420p needs even)."""
    w, h = (int(v) for v in size)
    if w < 16 or h < 16:
        raise ArgumentError(f"the video size must be at least 16x16 pixels, got {w}x{h}")
    return w + w % 2, h + h % 2


def render_frame(
    frames: Frames,
    frame: int,
    metric: str,
    limits: tuple[float, float],
    size: tuple[int, int] = (640, 480),
    dpi: int = 100,
    cmap: str = "viridis",
    log: bool | None = None,
) -> np.ndarray:
    """One frame as ``[height, width, 3]`` uint8 RGB, exactly ``size`` pixels."""
    w, h = size
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    title = f"{metric_label(metric)} — step {int(frames.steps[frame])}"
    if frames.plane_source[frame] != frame:
        title += f" (plane of step {int(frames.steps[frames.plane_source[frame]])})"
    surface = frames.surface(frame, metric)
    plot_contour(
        surface, metric, ax=ax, vmin=limits[0], vmax=limits[1], log=log, cmap=cmap, title=title
    )
    xy, bends = frames.curve_xy[frame], frames.bends_xy[frame]
    ax.plot(xy[:, 0], xy[:, 1], color=CURVE_COLOUR, lw=2.2, zorder=4)
    ends = [surface.markers.get("w1", (0.0, 0.0)), surface.markers.get("w2", (1.0, 0.0))]
    control = np.concatenate([ends[:1], bends, ends[1:]])
    ax.plot(control[:, 0], control[:, 1], ":", color=CURVE_COLOUR, lw=1, zorder=4)
    ax.plot(bends[:, 0], bends[:, 1], "D", ms=7, mfc=CURVE_COLOUR, mec="black", mew=1.2, zorder=5)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    out = np.full((h, w, 3), 255, dtype=np.uint8)  # rounding of inches may lose a pixel
    out[: min(h, rgb.shape[0]), : min(w, rgb.shape[1])] = rgb[:h, :w]
    return out


def colour_limits(frames: Frames, metric: str, log: bool | None = None) -> tuple[float, float]:
    """(vmin, vmax) of ``metric`` over every finished frame (positive values on a log scale)."""
    finished = np.flatnonzero(frames.done)
    return shared_limits((frames.surface(int(f), metric) for f in finished), metric, log)


def render_video(
    frames_h5: str | os.PathLike,
    mp4: str | os.PathLike | None = "video.mp4",
    gif: str | os.PathLike | None = None,
    metric: str = "train_loss",
    fps: float = 4,
    size: tuple[int, int] = (640, 480),
    dpi: int = 100,
    cmap: str = "viridis",
    log: bool | None = None,
    progress: bool = False,
) -> dict[str, object]:
    """Render the finished frames of ``frames_h5`` to an MP4 (H.264, yuv420p) and/or a GIF.

    ``size`` is ``(width, height)`` in pixels (odd values rounded up to even); ``dpi`` sets
    the text size relative to it. Outputs are written to a temporary file and renamed, so an
    existing video is replaced only by a complete one. GIFs hold every frame in memory
    (palette images, one byte per pixel): keep them for short or small videos. Returns the
    paths written, the frame count and the size.
    """
    if fps <= 0:
        raise ArgumentError(f"fps must be positive, got {fps}")
    if mp4 is None and gif is None:
        raise ArgumentError("nothing to render: give mp4= and/or gif=")
    try:
        frames = Frames.load(frames_h5, [stored_metric(metric)])
    except KeyError as e:  # a ValueError, as the command line reports
        raise ArgumentError(e.args[0]) from None
    finished = [int(f) for f in np.flatnonzero(frames.done)]
    if not finished:
        raise ArgumentError(f"{frames_h5} has no finished frames to render yet")
    size = even_size(size)
    limits = colour_limits(frames, metric, log)

    def images() -> Iterator[np.ndarray]:
        bar = progress_bar(len(finished), 0, progress, desc="render", unit="frame")
        with bar:
            for f in finished:
                yield render_frame(frames, f, metric, limits, size, dpi, cmap, log)
                bar.update(1)

    with contextlib.ExitStack() as outputs:  # both files appear only when both are complete
        mp4_tmp = None if mp4 is None else outputs.enter_context(atomic_output(mp4, True, True))
        gif_tmp = None if gif is None else outputs.enter_context(atomic_output(gif, True, True))
        _write(images(), mp4_tmp, gif_tmp, fps)
    return {
        "mp4": None if mp4 is None else os.fspath(mp4),
        "gif": None if gif is None else os.fspath(gif),
        "frames": len(finished),
        "of": frames.count,
        "size": size,
        "limits": limits,
        "log": uses_log_scale(metric, log),
    }


def _write(images: Iterator[np.ndarray], mp4: str | None, gif: str | None, fps: float) -> None:
    """One pass over the images, streamed to ffmpeg; the GIF's frames collected as palettes."""
    import imageio.v2 as imageio
    from PIL import Image

    writer = None
    if mp4 is not None:
        writer = imageio.get_writer(
            mp4,
            format="FFMPEG",  # type: ignore[arg-type]
            mode="I",
            fps=fps,
            codec="libx264",
            pixelformat="yuv420p",
            macro_block_size=2,  # sizes are even already: never rescale
            quality=8,
            ffmpeg_log_level="error",
        )
    palettes = []
    try:
        for rgb in images:
            if writer is not None:
                writer.append_data(rgb)
            if gif is not None:
                palettes.append(Image.fromarray(rgb).quantize(256, dither=Image.Dither.NONE))
    finally:
        if writer is not None:
            writer.close()
    if gif is not None:
        palettes[0].save(
            gif,
            format="GIF",
            save_all=True,
            append_images=palettes[1:],
            duration=max(20, round(1000 / fps)),
            loop=0,
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
    """Evaluate one frame per snapshot into ``frames`` (`fastloss.curves.evaluate_frames`,
    resumable), then render ``mp4``/``gif`` (`render_video`; ``None`` for both skips
    rendering). ``metric`` is the one drawn; it needs the data it is measured on. Returns the
    paths and timings::

        make_video(None, "runs/curve", train=(x, y), mp4="video.mp4", gif="video.gif")
    """
    given = ["train", *(["test"] if test is not None else [])]
    available = [f"{split}_{m}" for split in given for m in ("loss", "acc")]
    if stored_metric(metric) not in available:
        raise ArgumentError(
            f"metric {metric!r} needs data it was not given; available: {available}"
        )
    result = evaluate_frames(
        model,
        snapshots,
        train,
        test,
        grid=grid,
        frames=frames,
        bn=bn,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        overwrite=overwrite,
        progress=progress,
    )
    if (mp4 is not None or gif is not None) and world()[0] == 0:  # rank 0 of a group draws
        start = time.perf_counter()
        result.update(render_video(frames, mp4, gif, metric, fps, size, dpi, progress=progress))
        result["seconds_rendering"] = time.perf_counter() - start
    return result


def stored_metric(metric: str) -> str:
    """The stored metric a drawn one comes from (``*_err`` from ``*_acc``)."""
    return metric[: -len("_err")] + "_acc" if metric.endswith("_err") else metric
