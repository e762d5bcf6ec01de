"""Videos of a training curve's plane: frames against the engine, resume after SIGKILL,
refused settings, MP4/GIF output with one colour scale, the command line."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import imageio.v2 as imageio
import numpy as np
import pytest
import torch

import fastloss.curves.video as frames_module
from fastloss.cli import main as cli
from fastloss.core import Grid
from fastloss.curves import (
    Bezier,
    PolyChain,
    curve_plane,
    load_curve,
    load_snapshots,
    save_curve,
)
from fastloss.io import Frames
from fastloss.models import build_model
from fastloss.surfaces import evaluate
from fastloss.viz import video

render = video  # rendering and make_video live in one module

GRID = Grid(x=(-0.3, 1.3, 9), y=(-0.4, 1.2, 7))
MODEL_META = {"model": "mlp", "in_shape": [40], "num_classes": 10}


def write_fit(folder, steps=(0, 5, 10, 15), kind=Bezier, bends=1, widths=(16,), seed=0):
    """A fit folder as `fastloss curve fit` writes it: step 0 straight, then the bends moving
    in a new direction each snapshot (so each frame has its own plane)."""
    torch.manual_seed(seed)
    w1, w2 = (build_model("mlp", (40,), 10, widths=widths) for _ in range(2))
    curve = kind(w1, w2, bends)
    g = torch.Generator().manual_seed(seed + 1)
    meta = {**MODEL_META, "kwargs": {"widths": list(widths)}}
    os.makedirs(folder / "steps", exist_ok=True)
    for k, step in enumerate(steps):
        if k:
            for b in curve.basis.values():
                b[1:-1] += 0.2 * torch.randn(b[1:-1].shape, generator=g)
        save_curve(curve, folder / "steps" / f"step-{step:07d}.pt", meta={"step": step, **meta})
    return folder


def mp4_frames(path):
    with imageio.get_reader(path) as reader:  # its len() is inf: list() would fail
        return [image for image in reader]


def data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 40, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A fit folder and its frames file, evaluated once for several tests."""
    root = tmp_path_factory.mktemp("video")
    fit = write_fit(root / "fit")
    frames = root / "frames.h5"
    result = video.make_video(
        None, fit, data(), test=data(32, 1), grid=GRID, frames=frames, mp4=None, progress=False
    )
    return fit, frames, result


def test_frames_match_the_engine_on_each_snapshots_plane(finished):
    fit, frames_path, result = finished
    frames = Frames.load(frames_path)
    assert result["evaluated"] == frames.count == 4 and frames.done.all()
    assert frames.steps.tolist() == [0, 5, 10, 15]
    assert frames.plane_source.tolist() == [1, 1, 2, 3]  # step 0 is straight: no plane of its own
    np.testing.assert_allclose(frames.curve_xy[0][:, 1], 0, atol=1e-12)  # drawn on w1–w2
    paths = sorted((fit / "steps").iterdir())
    model = build_model("mlp", (40,), 10, widths=(16,))
    for f in range(frames.count):
        curve, _ = load_curve(paths[frames.plane_source[f]])
        plane, info = curve_plane(curve)
        direct = evaluate(model, plane, GRID, train=data(), test=data(32, 1), progress=False)
        for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
            np.testing.assert_array_equal(frames.values[name][f], direct.values[name])
        if f:
            np.testing.assert_allclose(frames.curve_xy[f], info["xy"].numpy())
            np.testing.assert_allclose(frames.markers["bend"][f], info["bends_xy"][0].numpy())
        np.testing.assert_allclose(frames.markers["w2"][f], (1, 0), atol=1e-12)
    assert not np.array_equal(frames.values["train_loss"][1], frames.values["train_loss"][2])


def test_a_straight_chain_is_drawn_on_the_segment(tmp_path):
    snaps = load_snapshots(write_fit(tmp_path, steps=(0, 1), kind=PolyChain, bends=2))
    assert [s.straight for s in snaps] == [True, False]
    w2 = np.asarray(snaps[1].markers["w2"])
    np.testing.assert_allclose(snaps[0].bends_xy, [w2 / 3, 2 * w2 / 3], atol=1e-6)
    assert list(snaps[0].markers) == ["w1", "w2", "bend1", "bend2"]


RESUME_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import torch
    import fastloss.curves.video as frames_module
    from fastloss.core import Grid
    from fastloss.viz import video

    engine = frames_module.run
    def slow_run(*args, **kwargs):  # slower frames, so the kill lands mid-run
        time.sleep(0.3)
        return engine(*args, **kwargs)
    frames_module.run = slow_run
    g = torch.Generator().manual_seed(0)
    train = torch.randn(64, 40, generator=g), torch.randint(0, 10, (64,), generator=g)
    grid = Grid(x=(-0.3, 1.3, 9), y=(-0.4, 1.2, 7))
    result = video.make_video(None, Path(sys.argv[1]), train, grid=grid, frames=sys.argv[2],
                              mp4=None, device="cpu", progress=False)
    print(json.dumps({"evaluated": result["evaluated"]}))
    """
)


def test_kill_and_resume_gives_the_same_arrays(tmp_path):
    fit = write_fit(tmp_path / "fit", steps=tuple(range(0, 60, 10)))
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT)
    reference, resumed = str(tmp_path / "ref.h5"), str(tmp_path / "resumed.h5")
    run = [sys.executable, str(script), str(fit)]
    subprocess.run([*run, reference], check=True, capture_output=True)
    proc = subprocess.Popen([*run, resumed], stdout=subprocess.DEVNULL)
    done = 0
    while proc.poll() is None and done < 1:
        with contextlib.suppress(Exception), h5py.File(resumed, "r", locking=False) as f:
            done = int(f["fastloss/done"][()].sum())
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = Frames.load(resumed)
    kept = int(partial.done.sum())
    assert 0 < kept < 6, "the kill should land mid-run"
    out = subprocess.run([*run, resumed], check=True, capture_output=True, text=True).stdout
    assert json.loads(out.splitlines()[-1])["evaluated"] == 6 - kept  # finished frames kept
    a, b = Frames.load(reference), Frames.load(resumed)
    assert b.done.all()
    for name in a.values:
        np.testing.assert_array_equal(a.values[name], b.values[name])
    for f in np.flatnonzero(partial.done):
        np.testing.assert_array_equal(partial.values["train_loss"][f], b.values["train_loss"][f])


def test_a_file_from_other_settings_is_refused(finished, tmp_path):
    fit, frames_path, _ = finished
    copy = tmp_path / "frames.h5"
    copy.write_bytes(frames_path.read_bytes())
    same = {"test": data(32, 1), "frames": copy, "mp4": None, "progress": False}
    assert video.make_video(None, fit, data(), grid=GRID, **same)["evaluated"] == 0
    other_grid = Grid(x=(-0.3, 1.3, 9), y=(-0.4, 1.2, 5))
    cases = [
        ({"grid": other_grid}, "grid"),
        ({"train": data(64, seed=5)}, "data"),
        ({"snapshots": sorted((fit / "steps").iterdir())[:3]}, "snapshots"),
        ({"batch_size": 7}, "batch_size"),
    ]
    for change, word in cases:
        kwargs = {"snapshots": fit, "train": data(), "grid": GRID, **same, **change}
        with pytest.raises(FileExistsError, match=word):
            video.make_video(None, **kwargs)
    kwargs = {"snapshots": fit, "train": data(), **same, "grid": other_grid, "overwrite": True}
    assert video.make_video(None, **kwargs)["evaluated"] == 4
    assert Frames.load(copy).values["train_loss"].shape == (4, 5, 9)


def test_mp4_and_gif_have_every_frame_at_the_size_asked_for(finished, tmp_path):
    _, frames_path, _ = finished
    mp4, gif = tmp_path / "v.mp4", tmp_path / "v.gif"
    done = render.render_video(frames_path, mp4, gif, fps=5, size=(320, 240), dpi=60)
    assert done["frames"] == 4 and done["size"] == (320, 240)
    images = mp4_frames(mp4)
    assert len(images) == 4 and all(im.shape == (240, 320, 3) for im in images)
    assert imageio.get_reader(mp4).get_meta_data()["fps"] == 5
    assert len(imageio.mimread(gif)) == 4
    assert render.render_video(frames_path, mp4, size=(321, 239))["size"] == (322, 240)
    assert imageio.get_reader(mp4).get_meta_data()["size"] == (322, 240)


def test_every_frame_uses_one_colour_scale(finished, tmp_path, monkeypatch):
    _, frames_path, _ = finished
    seen = []

    def recording(*args, **kwargs):
        seen.append((kwargs["vmin"], kwargs["vmax"]))
        return contour(*args, **kwargs)

    contour = render.plot_contour
    monkeypatch.setattr(render, "plot_contour", recording)
    render.render_video(frames_path, tmp_path / "v.mp4", size=(160, 120), dpi=40)
    loss = Frames.load(frames_path).values["train_loss"]
    assert seen == [(loss.min(), loss.max())] * 4


def test_progress_counts_frames_times_points(finished, tmp_path, monkeypatch):
    fit, _, _ = finished
    bars = []
    original = frames_module.progress_bar
    monkeypatch.setattr(
        frames_module, "progress_bar", lambda *a, **k: bars.append(a) or original(*a, **k)
    )
    video.make_video(None, fit, data(), grid=GRID, frames=tmp_path / "f.h5", mp4=None)
    assert bars == [(4 * 63, 0, True)]


def test_snapshots_that_do_not_belong_together_are_refused(tmp_path):
    write_fit(tmp_path / "a", steps=(0, 1))
    write_fit(tmp_path / "wide", steps=(2,), widths=(8,))
    write_fit(tmp_path / "other", steps=(2,), seed=3)
    steps = sorted((tmp_path / "a" / "steps").iterdir())
    with pytest.raises(ValueError, match="different architectures"):
        load_snapshots([*steps, tmp_path / "wide"])
    with pytest.raises(ValueError, match="another w1"):
        load_snapshots([*steps, tmp_path / "other"])
    with pytest.raises(ValueError, match="same step"):
        load_snapshots([*steps, steps[1]])
    with pytest.raises(ValueError, match="straight"):
        load_snapshots(steps[:1])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no curve snapshots"):
        load_snapshots(tmp_path / "empty")
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(2)}, plain)
    with pytest.raises(ValueError, match="curve"):
        load_snapshots([*steps, plain])


def test_command_line_end_to_end(tmp_path, capsys):
    fit = write_fit(tmp_path / "fit", steps=(0, 1, 2))
    out, gif = str(tmp_path / "v.mp4"), str(tmp_path / "v.gif")
    args = ["video", str(fit), "--train-samples", "100", "--x", "-0.3:1.3:5", "--fps", "4"]
    args += ["--size", "320x240", "--out", out, "--gif", gif, "--quiet", "--device", "cpu"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    frames = str(tmp_path / "v.frames.h5")
    assert out in printed and gif in printed and frames in printed
    assert len(mp4_frames(out)) == 3 and len(imageio.mimread(gif)) == 3
    again = str(tmp_path / "again.mp4")  # re-render the frames file: nothing evaluated
    assert cli.main(["video", frames, "--out", again, "--size", "160x120", "--dpi", "40"]) == 0
    assert imageio.get_reader(again).get_meta_data()["size"] == (160, 120)
    (tmp_path / "empty").mkdir()
    assert cli.main(["video", str(tmp_path / "empty"), "--out", out, "--quiet"]) == 2
    assert "no curve snapshots" in capsys.readouterr().err
    help_text = subprocess.run(
        [sys.executable, "-m", "fastloss.cli", "video", "--help"], capture_output=True, text=True
    ).stdout
    assert "usage: fastloss video" in help_text
