"""The `fastloss` command line, run as a user would."""

import os
import subprocess
import sys

import numpy as np
import pytest

from fastloss.io import Surface


def fastloss(*args, cwd=None, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "fastloss.cli", *args], capture_output=True, text=True, cwd=cwd
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.parametrize("command", ["info", "train", "plane", "line", "plot", "demo"])
def test_every_command_has_help(command):
    assert "usage: fastloss" in fastloss(command, "--help").stdout


def test_train_plane_line_plot(tmp_path):
    ckpts = [str(tmp_path / f"m{seed}.pt") for seed in range(3)]
    for seed, path in enumerate(ckpts):
        out = fastloss(
            "train",
            "--model",
            "mlp",
            "--widths",
            "32",
            "--data",
            "digits",
            "--epochs",
            "3",
            "--seed",
            str(seed),
            "--out",
            path,
            "--quiet",
        ).stdout
        assert path in out
    surface_path = str(tmp_path / "plane.h5")
    out = fastloss(
        "plane",
        *ckpts,
        "--data",
        "digits",
        "--x",
        "-0.5:1.5:5",
        "--y",
        "-0.5:1.5:4",
        "--out",
        surface_path,
        "--quiet",
    ).stdout
    assert "20 points" in out
    surface = Surface.load(surface_path)
    assert surface.values["test_acc"].shape == (4, 5) and surface.done.all()
    assert np.isfinite(surface.values["train_loss"]).all()
    # Running it again with other settings is refused, and the finished file is kept.
    again = fastloss(
        "plane",
        *ckpts,
        "--data",
        "digits",
        "--x",
        "0:1:3",
        "--y",
        "0:1:3",
        "--out",
        surface_path,
        "--quiet",
        check=False,
    )
    assert again.returncode == 2 and "--overwrite" in again.stderr
    np.testing.assert_array_equal(
        Surface.load(surface_path).values["train_loss"], surface.values["train_loss"]
    )
    line_path = str(tmp_path / "line.h5")
    fastloss(
        "line",
        ckpts[0],
        ckpts[1],
        "--data",
        "digits",
        "--x",
        "0:1:5",
        "--out",
        line_path,
        "--quiet",
    )
    assert Surface.load(line_path).values["train_loss"].shape == (5,)
    random_path = str(tmp_path / "random.h5")
    fastloss(
        "plane", ckpts[0], "--data", "digits", "--x", "-1:1:3", "--out", random_path, "--quiet"
    )
    assert Surface.load(random_path).values["train_loss"].shape == (3, 3)
    png = str(tmp_path / "fig.png")
    fastloss("plot", surface_path, "--out", png, "--metric", "test_loss")
    assert os.path.getsize(png) > 10_000


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    result = fastloss(
        "line",
        str(tmp_path / "nope.pt"),
        str(tmp_path / "nope2.pt"),
        "--out",
        str(tmp_path / "x.h5"),
        check=False,
    )
    assert result.returncode == 2 and "nope.pt" in result.stderr


def test_demo_small(tmp_path):
    out = fastloss(
        "demo", "--out", str(tmp_path / "demo"), "--resolution", "5", "--epochs", "1", "--quiet"
    ).stdout
    assert "surface.h5" in out and "test_loss_contour.png" in out
    surface = Surface.load(str(tmp_path / "demo" / "surface.h5"))
    assert surface.values["test_loss"].shape == (5, 5) and surface.done.all()
