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


@pytest.mark.parametrize("command", ["info", "train", "plane", "line", "profile", "plot", "demo"])
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


def test_profile_prints_speed_and_top_ops_per_dtype(tmp_path):
    ckpt = str(tmp_path / "lenet.pt")
    fastloss("train", "--model", "lenet5", "--data", "digits", "--epochs", "1", "--out", ckpt)
    common = ["--data", "digits", "--train-samples", "200", "--test-samples", "100"]
    out = fastloss("profile", ckpt, *common, "--points", "4", "--top", "3").stdout
    lines = out.splitlines()
    assert lines[0].startswith("LeNet5, ") and "200 train + 100 test samples, 4 points" in lines[0]
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    assert set(rows) == {"float32", "bfloat16"}
    assert float(rows["float32"][1]) > 0 and rows["float32"][3] == "-"
    assert float(rows["bfloat16"][3]) < 5e-2  # bf16's max relative loss error vs float32
    assert sum(line.startswith("  ") for line in lines) == 6  # 3 ops per dtype
    line = one_line_error(fastloss("profile", ckpt, *common, "--points", "0", check=False))
    assert line == "fastloss profile: points must be >= 1, got 0"


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


def one_line_error(result):
    """Exit status 2, no traceback, one line on stderr."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_bad_input_is_one_line_with_exit_status_2(tmp_path):
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # an HDF5 signature, then nothing
    line = one_line_error(
        fastloss("plot", str(corrupt), "--out", str(tmp_path / "a.png"), check=False)
    )
    assert line.startswith("fastloss plot:") and "corrupt" in line
    assert corrupt.read_bytes().startswith(b"\x89HDF")  # left untouched
    line = one_line_error(fastloss("plane", "a.pt", "b.pt", "--out", "x.h5", check=False))
    assert "three checkpoints" in line
    line = one_line_error(
        fastloss("train", "--data", str(tmp_path / "none.npz"), "--out", "m.pt", check=False)
    )
    assert "no data set" in line


def test_api_arguments_read_as_flags():
    from fastloss.cli.main import build_parser
    from fastloss.cli.options import as_flags

    args = build_parser().parse_args(["curve", "eval", "c.pt", "--out", "e.h5"])
    message = "e.h5 exists; pass overwrite=True to replace it; bn='fixed' needs train data"
    assert as_flags(message, args.flags) == (
        "e.h5 exists; pass --overwrite to replace it; --bn fixed needs train data"
    )
    assert as_flags("pass resume=True or points=3", args.flags) == "pass resume=True or --points 3"


def test_a_closed_pipe_ends_quietly(monkeypatch, capsys):
    # `fastloss info | head -1`: the reader leaves early; no traceback, the shell's status
    from fastloss.cli import main as cli

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert cli.main(["info"]) == 141
