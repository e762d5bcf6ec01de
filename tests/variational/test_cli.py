"""``fastloss vnet train | eval`` end to end on digits, and their one-line refusals."""

import json

import pytest

from fastloss.cli import main as cli
from fastloss.io import load_checkpoint
from fastloss.variational import variational_layers
from fastloss.variational.checkpoint import load_vnet

DATA = ["--data", "digits", "--train-samples", "300", "--test-samples", "120"]
TRAIN = ["--model", "mlp-bn", "--widths", "16", "16", "--epochs", "2", "--samples", "6", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("vnet") / "run"
    assert cli.main(["vnet", "train", "--kind", "variance", "--out", str(out), *TRAIN, *DATA]) == 0
    return out


def test_train_writes_the_network_its_modes_and_figures(trained):
    files = ("vnet.pt", "modes.json", "accuracy_by_k.png", "snr.png")
    assert all((trained / name).stat().st_size > 0 for name in files)
    model, meta = load_vnet(trained / "vnet.pt")
    assert meta["variational"]["kind"] == "variance" and meta["model"] == "mlp-bn"
    # a variance network keeps its first and output layers deterministic by default
    assert [n for n, _ in variational_layers(model)] == ["4"]
    modes = json.loads((trained / "modes.json").read_text())
    assert len(modes["ensemble_acc_by_k"]) == 6 and 0 <= modes["ensemble"]["acc"] <= 1


def test_eval_gives_what_train_printed(trained, tmp_path, capsys):
    args = ["vnet", "eval", str(trained / "vnet.pt"), "--samples", "6", "--out", str(tmp_path)]
    assert cli.main([*args, *DATA, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "variance network, mlp-bn" in printed
    again = json.loads((tmp_path / "modes.json").read_text())
    first = json.loads((trained / "modes.json").read_text())
    assert again["ensemble"] == pytest.approx(first["ensemble"])
    assert again["deterministic"] == pytest.approx(first["deterministic"])
    assert cli.main([*args, *DATA]) == 2  # a finished result is kept


def test_refusals(trained, tmp_path, capsys):
    plain = tmp_path / "plain.pt"
    assert cli.main(["train", "--model", "mlp", "--epochs", "1", "--out", str(plain), *DATA]) == 0
    capsys.readouterr()
    assert cli.main(["vnet", "eval", str(plain), "--out", str(tmp_path / "e"), *DATA]) == 2
    assert "is not a variational network" in capsys.readouterr().err
    args = ["vnet", "eval", str(trained / "vnet.pt"), "--samples", "1", "--out", str(tmp_path)]
    assert cli.main([*args, *DATA]) == 2
    assert "--samples must be >= 2" in capsys.readouterr().err
    bad = ["vnet", "train", "--model", "mpo-cnn", "--layers", "zz*", "--out", str(tmp_path)]
    assert cli.main([*bad, *DATA]) == 2
    assert "matching ['zz*']" in capsys.readouterr().err
    mlp = ["vnet", "train", "--model", "mlp", "--channels", "4", "8", "--out", str(tmp_path)]
    assert cli.main([*mlp, *DATA]) == 2
    assert "does not take 'channels'" in capsys.readouterr().err
    assert load_checkpoint(trained / "vnet.pt")[1]["variational"]["kind"] == "variance"


def test_channels_and_widths_shape_a_lenet5(tmp_path):
    out = tmp_path / "wide"
    args = ["--model", "lenet5-bn", "--channels", "4", "8", "--widths", "12", "--kind", "neuron"]
    short = ["--epochs", "1", "--samples", "2", "--quiet", "--out", str(out)]
    assert cli.main(["vnet", "train", *args, *short, *DATA]) == 0
    model, _ = load_vnet(out / "vnet.pt")
    shapes = [layer.weight_shape for _, layer in variational_layers(model)]
    assert [s[0] for s in shapes] == [4, 8, 12, 10]
