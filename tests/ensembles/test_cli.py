"""``fastloss swa | swag collect | swag predict | fge | ensemble eval`` end to end on digits,
and their one-line refusals."""

import subprocess
import sys

import h5py
import pytest

from fastloss.cli import main as cli
from fastloss.io import load_checkpoint, save_checkpoint
from fastloss.io.ensemble_file import load_ensemble_file

DATA = ["--data", "digits", "--train-samples", "300", "--test-samples", "120"]
SWA = ["--widths", "16", "--epochs", "5", "--swa-start", "3", "--quiet", *DATA]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    assert cli.main(["swag", "collect", "--out", str(root / "swag"), "--rank", "3", *SWA]) == 0
    return root


def test_swa_writes_both_networks_and_prints_their_scores(tmp_path, capsys):
    assert cli.main(["swa", "--out", str(tmp_path), *SWA]) == 0
    printed = capsys.readouterr().out
    assert "3 models averaged" in printed and "SWA" in printed
    _, meta = load_checkpoint(tmp_path / "swa.pt")
    assert meta["model"] == "mlp" and 0 <= meta["test_acc"] <= 100
    assert cli.main(["swa", "--out", str(tmp_path), *SWA]) == 2  # finished results are kept


def test_swag_predict_writes_scores_and_a_reliability_diagram(runs, tmp_path, capsys):
    out = tmp_path / "bma.h5"
    args = ["swag", "predict", str(runs / "swag" / "swag.pt"), "--samples", "4", "--out", str(out)]
    assert cli.main([*args, *DATA, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "SWAG BMA (4)" in printed and out.with_suffix(".png").exists()
    stored = load_ensemble_file(out)
    assert stored["members"]["acc"].shape == (4,) and 0 < stored["ensemble"]["nll"] < 5
    assert stored["probs"].shape == (120, 10)


def test_fge_and_ensemble_eval(runs, tmp_path, capsys):
    start = runs / "swag" / "sgd.pt"
    args = ["fge", str(start), "--cycles", "2", "--cycle-epochs", "1", "--out", str(tmp_path)]
    assert cli.main([*args, *DATA, "--quiet"]) == 0
    assert "ensemble acc" in capsys.readouterr().out
    with h5py.File(tmp_path / "fge.h5") as f:
        assert f["cumulative/acc"].shape == (2,)
    snapshots = [str(tmp_path / "snapshot-01.pt"), str(tmp_path / "snapshot-02.pt"), str(start)]
    out = tmp_path / "ens.h5"
    assert cli.main(["ensemble", "eval", *snapshots, "--out", str(out), *DATA, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "snapshot-02.pt" in printed and "ensemble" in printed and out.exists()


def _refused(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "fastloss.cli", *args], capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_bad_input_gets_one_line(runs, tmp_path):
    swag = str(runs / "swag" / "swag.pt")
    sgd = str(runs / "swag" / "sgd.pt")
    bare = tmp_path / "bare.pt"  # weights without the model spec
    save_checkpoint(load_checkpoint(sgd)[0], bare)
    _refused(["fge", str(bare), "--out", str(tmp_path / "g"), *DATA], "how to build its model")
    _refused(["ensemble", "eval", sgd, "--out", str(tmp_path / "a.h5"), *DATA], "at least two")
    _refused(
        ["swag", "predict", str(tmp_path / "none.pt"), "--out", str(tmp_path / "b.h5")],
        "no such SWAG file",
    )
    _refused(
        ["fge", sgd, "--cycles", "1", "--out", str(tmp_path / "f"), *DATA], "at least 2 cycles"
    )
    assert (
        cli.main(
            [
                "swa",
                "--out",
                str(tmp_path / "w"),
                "--widths",
                "8",
                "--epochs",
                "2",
                "--swa-start",
                "1",
                "--quiet",
                *DATA,
            ]
        )
        == 0
    )
    _refused(
        [
            "ensemble",
            "eval",
            sgd,
            str(tmp_path / "w" / "swa.pt"),
            "--out",
            str(tmp_path / "c.h5"),
            *DATA,
        ],
        "another architecture",
    )
    _refused(
        ["swag", "predict", swag, "--out", str(tmp_path / "d.h5"), "--data", "mnist1d"],
        "takes inputs of shape",
    )


def test_help_of_every_command():
    for command in (
        ["swa"],
        ["swag", "collect"],
        ["swag", "predict"],
        ["fge"],
        ["ensemble", "eval"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "fastloss.cli", *command, "--help"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0 and "usage" in result.stdout
