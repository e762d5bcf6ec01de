"""``fastloss mpo fit | eval | bn-experiment`` end to end, and their one-line refusals."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

from fastloss.cli import main as cli
from fastloss.mpo import load_plane

DATA = ["--train-samples", "300", "--test-samples", "100"]
FIT = ["--model", "mlp", "--widths", "16", "--steps", "20", "--batch-size", "64"]
FIT += ["--cells", "5", "5", "--lr", "0.01", "--quiet", *DATA]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpo") / "fit"
    assert cli.main(["mpo", "fit", "letter", "--size", "10x8", "--out", str(out), *FIT]) == 0
    return out


def test_fit_then_eval(fitted, tmp_path, capsys):
    theta, pattern, meta = load_plane(fitted / "plane.pt")
    assert pattern.shape == (8, 10) and meta["data"] == "digits" and meta["model"] == "mlp"
    out = tmp_path / "surface.h5"
    assert (
        cli.main(["mpo", "eval", str(fitted / "plane.pt"), "--out", str(out), "--quiet", *DATA])
        == 0
    )
    printed = capsys.readouterr().out
    assert "train accuracy on good cells" in printed and "test  accuracy" in printed
    iou = float(printed.split("IoU ")[1].split()[0])
    assert 0 <= iou <= 1
    assert (tmp_path / "surface.png").stat().st_size > 10_000
    with h5py.File(out) as f:  # the loss-landscape layout, the pattern beside it
        assert f["train_loss"].shape == (8, 10) and len(f["xcoordinates"]) == 10
        assert (np.asarray(f["pattern"])[::-1] == pattern.good).all()
        assert set(np.unique(f["cells"])) <= {-1.0, 0.0, 1.0}
    stamp = out.stat().st_mtime_ns
    code = cli.main(["mpo", "eval", str(fitted / "plane.pt"), "--out", str(out), "--quiet"])
    assert code == 2 and out.stat().st_mtime_ns == stamp
    assert "--overwrite" in capsys.readouterr().err


def test_rerun_of_a_finished_fit_says_so(fitted, capsys):
    assert cli.main(["mpo", "fit", "letter", "--size", "10x8", "--out", str(fitted), *FIT]) == 0
    assert "already finished" in capsys.readouterr().out
    code = cli.main(["mpo", "fit", "cross", "--size", "10x8", "--out", str(fitted), *FIT])
    assert code == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and err.count("\n") == 1


def test_a_picture_file_is_a_pattern(tmp_path, capsys):
    picture = np.full((40, 40), 255, np.uint8)
    picture[8:32, 16:24] = 0
    Image.fromarray(picture).save(tmp_path / "bar.png")
    out = tmp_path / "fit"
    args = ["mpo", "fit", str(tmp_path / "bar.png"), "--size", "10", "--out", str(out), *FIT]
    assert cli.main(args) == 0
    _, pattern, _ = load_plane(out / "plane.pt")
    assert pattern.name == "bar" and pattern.good[5, 5] and not pattern.good[5, 0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", "nosuch.png"], "neither a built-in pattern"),
        (["fit", "random:1.5"], "(0, 1)"),
        (["fit", "WHITE"], "only bad cells"),
        (["fit", "cross", "--data", "nosuch.npz"], "nosuch.npz"),
        (["fit", "cross", "--steps", "0"], "steps >= 1"),
        (["fit", "cross", "--model", "mpo-cnn", "--widths", "8"], "--widths"),
        (["eval", "BROKEN"], "not"),
        (["bn-experiment", "--ps", "0.5,1.2"], "(0, 1)"),
    ],
)
def test_bad_input_gets_one_line_and_status_2(args, message, tmp_path):
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "white.png")
    (tmp_path / "broken.pt").write_bytes(b"\x00" * 16)
    args = [
        {"WHITE": str(tmp_path / "white.png"), "BROKEN": str(tmp_path / "broken.pt")}.get(a, a)
        for a in args
    ]
    result = subprocess.run(
        [sys.executable, "-m", "fastloss.cli", "mpo", *args, "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_bn_experiment_small_and_resumable(tmp_path, capsys):
    out = tmp_path / "bn"
    args = ["mpo", "bn-experiment", "--out", str(out), "--ps", "0.3,0.7", "--seeds", "1"]
    args += ["--size", "6", "--steps", "3", "--batch-size", "16", "--cells", "3", "--quiet"]
    args += ["--channels", "2", "2", "2", "2", "2", "2", "--hidden", "8", *DATA]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "4 runs (2 p x 1 seeds x 2 models)" in printed and "the paper's claim" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert [r["p"] for r in summary["summary"]] == [0.3, 0.7]
    assert all(-1 <= r["gap_diff"] <= 2 for r in summary["summary"])
    assert (out / "fig4a.png").exists() and (out / "fig4b.png").exists()
    assert len((out / "runs.csv").read_text().splitlines()) == 5
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    assert cli.main(args) == 0  # every run is reused
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamps
    assert cli.main([*args[: -len(DATA) - 1], "12", *DATA]) == 2  # other settings: refused


def test_help_of_every_command():
    for command in ("fit", "eval", "bn-experiment"):
        result = subprocess.run(
            [sys.executable, "-m", "fastloss.cli", "mpo", command, "--help"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0 and "usage: fastloss mpo" in result.stdout
