"""Curve evaluation (fastloss.curves.evaluate) against the serial loop: along the curve, the
straight segment, ensembles, summaries, the HDF5 file, the curve's plane, figures, CLI."""

import copy
import os

import h5py
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from fastloss.cli.main import main
from fastloss.core import Grid, Line, affine_coords
from fastloss.curves import (
    Bezier,
    PolyChain,
    curve_plane,
    evaluate_curve,
    evaluate_curve_plane,
    save_curve,
)
from fastloss.engine import batches, has_batch_norm
from fastloss.io import CurveResult, Surface, save_checkpoint
from fastloss.io.curve_result import arc_length_mean
from fastloss.models import build_model
from fastloss.surfaces import evaluate
from fastloss.viz import plot_curve_plane, save_curve_figures

MODELS = {
    "mlp": ("mlp", {"widths": [16, 16]}),
    "conv-bn": ("mpo-cnn-bn", {"channels": [4, 8], "hidden": 16}),
}
SHAPE, CLASSES, BATCH = (40,), 5, 32


def dataset(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


def meta(name):
    model, kwargs = MODELS[name]
    return {"model": model, "in_shape": list(SHAPE), "num_classes": CLASSES, "kwargs": kwargs}


def networks(name, count=3):
    model, kwargs = MODELS[name]
    nets = []
    for seed in range(count):
        torch.manual_seed(seed)
        nets.append(build_model(model, SHAPE, CLASSES, **kwargs))
    return nets


@torch.no_grad()
def serial(model, states, train, test):
    """Per point: load the weights, `update_bn` over the train data, forward. Returns
    {split: (nll [P], acc [P], softmax [P, N, C])}."""
    net = copy.deepcopy(model)
    out = {s: ([], [], []) for s in ("train", "test")}
    for state in states:
        net.load_state_dict(state, strict=False)
        if has_batch_norm(net):
            torch.optim.swa_utils.update_bn(batches(*train, BATCH), net)
        net.eval()
        for split, (x, y) in (("train", train), ("test", test)):
            logits = net(x).double()
            out[split][0].append(float(nn.functional.cross_entropy(logits, y)))
            out[split][1].append(100.0 * float((logits.argmax(1) == y).double().mean()))
            out[split][2].append(logits.softmax(1))
    return {s: (np.array(a), np.array(b), torch.stack(c)) for s, (a, b, c) in out.items()}


@pytest.fixture(scope="module", params=list(MODELS))
def setup(request):
    w1, w2, w3 = networks(request.param)
    curve = Bezier(w1, w2, bends=1, init=[w3])
    return request.param, w1, curve, dataset(96, 1), dataset(64, 2)


@pytest.fixture(scope="module")
def result(setup):
    _, model, curve, train, test = setup
    return evaluate_curve(
        model, curve, train, test, points=5, wd=1e-2, batch_size=BATCH, device="cpu",
        progress=False,
    )  # fmt: skip


def test_curve_matches_serial_reference(setup, result):
    _, model, curve, train, test = setup
    states = [curve.point(c) for c in curve.coords(result.t)]
    ref = serial(model, states, train, test)
    sq_norm = np.array([sum(float(p.double().square().sum()) for p in s.values()) for s in states])
    for split in ("train", "test"):
        nll, acc, _ = ref[split]
        np.testing.assert_allclose(result[f"curve/{split}_nll"], nll, rtol=1e-4)
        np.testing.assert_allclose(result[f"curve/{split}_loss"], nll + 5e-3 * sq_norm, rtol=1e-4)
        np.testing.assert_allclose(result[f"curve/{split}_acc"], acc, atol=1e-9)
        np.testing.assert_allclose(result[f"curve/{split}_err"], 100 - acc, atol=1e-9)


def test_segment_matches_evaluate_on_line(setup, result):
    _, model, curve, train, test = setup
    w1 = {n: b[0] for n, b in curve.basis.items()}
    w2 = {n: b[-1] for n, b in curve.basis.items()}
    line = Line({**w1, **curve.reference_buffers}, w2)
    surface = evaluate(
        model, line, affine_coords(torch.tensor(result.t)[:, None]), train=train, test=test,
        batch_size=BATCH, device="cpu", progress=False,
    )  # fmt: skip
    for split in ("train", "test"):
        nll = result[f"segment/{split}_nll"]
        np.testing.assert_allclose(nll, surface.values[f"{split}_loss"], rtol=1e-4)
        acc = result[f"segment/{split}_acc"]
        np.testing.assert_allclose(acc, surface.values[f"{split}_acc"], atol=1e-9)
        assert np.all(result[f"segment/{split}_loss"] > nll)  # the weight decay term


def test_ensemble_matches_hand_computation(setup, result):
    _, model, curve, train, test = setup
    t = torch.tensor(result.t)
    for path, coords in (("curve", curve.coords(t)), ("segment", torch.stack([1 - t, t], 1))):
        if path == "segment":
            coords = torch.cat([coords[:, :1], torch.zeros(len(t), curve.J - 2), coords[:, 1:]], 1)
        states = [curve.point(c) for c in coords]
        _, acc, probs = serial(model, states, train, test)["test"]
        ensemble = 0.5 * (probs[:1] + probs)  # w1 is the point at t = 0
        y = test[1]
        hand = 100.0 * (ensemble.argmax(-1) == y).double().mean(1).numpy()
        np.testing.assert_allclose(result[f"ensemble/{path}/test_acc"], hand, atol=1e-9)
        nll = -ensemble.gather(2, y.expand(len(t), -1)[..., None]).log().mean((1, 2)).numpy()
        np.testing.assert_allclose(result[f"ensemble/{path}/test_nll"], nll, rtol=1e-4)
        np.testing.assert_allclose(result[f"ensemble/{path}/test_acc"][0], acc[0], atol=1e-9)
    assert "ensemble/curve/train_acc" not in result.values  # train only without test data


def test_arc_length_integral():
    w1, w2, w3, w4 = networks("mlp", 4)
    curve = PolyChain(w1, w2, bends=2, init=[w3, w4])
    t = torch.linspace(0, 1, 301, dtype=torch.float64)
    speed = curve.speed(t).numpy()
    assert arc_length_mean(np.full(301, 3.7), speed, t.numpy()) == pytest.approx(3.7, rel=1e-12)
    # dnn-mode-connectivity's version: chord lengths between consecutive points
    f = np.sin(3 * t.numpy()) + 2
    c = curve.coords(t)
    dl = torch.einsum("kj,jl,kl->k", c[1:] - c[:-1], curve.gram(), c[1:] - c[:-1]).sqrt().numpy()
    chord = np.sum(0.5 * (f[:-1] + f[1:]) * dl) / np.sum(dl)
    assert arc_length_mean(f, speed, t.numpy()) == pytest.approx(chord, rel=2e-3)


def test_summaries_and_hdf5_round_trip(setup, result, tmp_path):
    _, model, curve, train, test = setup
    s = result.summary("curve/test_err")
    v = result["curve/test_err"]
    assert (s["max"], s["mean"], s["start"], s["end"]) == (v.max(), v.mean(), v[0], v[-1])
    assert min(v) - 1e-9 <= s["integral"] <= max(v) + 1e-9
    seg = result.summary("segment/train_loss")
    trapezoid = np.sum(np.diff(result.t) * 0.5 * (seg_v := result["segment/train_loss"])[1:])
    trapezoid += np.sum(np.diff(result.t) * 0.5 * seg_v[:-1])
    assert seg["integral"] == pytest.approx(trapezoid, rel=1e-12)  # constant speed
    assert "endpoints' test error" in result.format_summary()

    path = tmp_path / "curve_eval.h5"
    result.save(path)
    back = CurveResult.load(path)
    assert back.values.keys() == result.values.keys()
    for name, value in result.values.items():
        np.testing.assert_array_equal(back[name], value)
    np.testing.assert_array_equal(back.t, result.t)
    np.testing.assert_array_equal(back.speed, result.speed)
    assert back.attrs["settings"] == result.attrs["settings"]
    assert back.summaries == result.summaries
    with h5py.File(path, "r") as f:
        assert f["curve/test_err"].attrs["max"] == s["max"]
        assert f["ensemble/segment/test_acc"].shape == (5,)
    with pytest.raises(FileExistsError):
        result.save(path)
    with pytest.raises(FileExistsError):  # refused before any work
        evaluate_curve(model, curve, train, test, points=3, out=path, progress=False)
    again = evaluate_curve(
        model, curve, train, None, points=3, out=path, overwrite=True, progress=False
    )
    assert CurveResult.load(path).t.shape == (3,) and again.ensemble_split == "train"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.parametrize("bends", [1, 2])
def test_plane_projection_matches_curve_weights(bends, tmp_path):
    w1, w2, w3, w4 = networks("conv-bn", 4)
    curve = (Bezier if bends == 1 else PolyChain)(w1, w2, bends, init=[w3, w4][:bends])
    plane, info = curve_plane(curve, samples=11)
    xy = info["xy"]
    for i, t in enumerate(info["t"]):
        on_plane = plane.point(affine_coords(xy[i : i + 1])[0])
        on_curve = curve.point(curve.coords(t)[0])
        diff = sum(float((on_plane[n] - on_curve[n]).double().square().sum()) for n in on_curve)
        scale = sum(float(on_curve[n].double().square().sum()) for n in on_curve)
        if bends == 1:
            assert diff <= 1e-10 * scale
    grid = Grid(x=(0.0, 1.0, 3), y=(-0.5, 0.5, 3))
    train, test = dataset(64, 1), dataset(32, 2)
    out = tmp_path / "plane.h5"
    model = networks("conv-bn", 1)[0]
    surface = evaluate_curve_plane(
        model, curve, grid, train, test, batch_size=BATCH, device="cpu", out=out, progress=False,
        samples=11,
    )  # fmt: skip
    stored = Surface.load(out)
    assert stored.attrs["curve"]["xy"] == xy.tolist()
    assert stored.attrs["curve"]["plane"] == ("pca" if bends > 1 else "through w1, w2 and the bend")
    assert stored.attrs["curve"]["residual"] == pytest.approx(info["residual"])
    assert ("bend" if bends == 1 else "bend2") in stored.markers
    np.testing.assert_array_equal(stored.values["test_loss"], surface.values["test_loss"])
    # w1 is the grid point (0, 0): the same loss as the curve at t = 0
    at_w1 = evaluate_curve(model, curve, train, test, 2, batch_size=BATCH, progress=False)
    assert stored.values["train_loss"][1, 0] == pytest.approx(at_w1["curve/train_nll"][0], 1e-4)
    fig = plot_curve_plane(stored, metric="train_loss")  # the curve from the file
    assert ("PCA" in fig.axes[0].get_title()) == (bends > 1)
    fig.savefig(tmp_path / "plane.png")
    plot_curve_plane(surface, info, metric="test_err").savefig(tmp_path / "plane_err.png")
    assert os.path.getsize(tmp_path / "plane.png") > 10_000
    # `fastloss plot` on a curve-plane file draws the curve too (same title as above).
    from fastloss.viz import plot_file

    written = plot_file(out, tmp_path / "cli_plane.png", metric="train_loss", dpi=100)
    plot_curve_plane(stored, metric="train_loss").savefig(tmp_path / "direct.png", dpi=100)
    np.testing.assert_array_equal(plt.imread(written), plt.imread(tmp_path / "direct.png"))


def test_figures_are_written(result, tmp_path):
    paths = save_curve_figures(result, tmp_path / "profile.png", tmp_path / "ensemble.png")
    assert all(os.path.getsize(p) > 10_000 for p in paths)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    x, y = dataset(160, 3)
    np.savez(folder / "data.npz", x=x.numpy(), y=y.numpy())
    np.savez(folder / "other.npz", x=np.zeros((20, 7), np.float32), y=np.arange(20) % 2)
    w1, w2, w3 = networks("conv-bn")
    save_curve(Bezier(w1, w2, 1, init=[w3]), folder / "curve.pt", meta=meta("conv-bn"))
    save_checkpoint(w1, folder / "net.pt", meta=meta("conv-bn"))
    return folder


def test_cli_curve_eval_and_plane(files, capsys):
    d = files
    common = ["--data", str(d / "data.npz"), "--test-samples", "24", "--quiet", "--device", "cpu"]
    out = str(d / "eval.h5")
    args = ["curve", "eval", str(d / "curve.pt"), "--points", "5", "--out", out, *common]
    assert main([*args, "--figures", str(d / "figs")]) == 0
    printed = capsys.readouterr().out
    assert "endpoints' test error" in printed and "segment  train_loss" in printed
    assert sorted(os.listdir(d / "figs")) == ["eval_ensemble.png", "eval_profile.png"]
    assert CurveResult.load(out).attrs["model_spec"]["model"] == "mpo-cnn-bn"
    assert main(args) == 2 and "exists" in capsys.readouterr().err
    plane = ["curve", "plane", str(d / "curve.pt"), "--out", str(d / "plane.h5")]
    assert main([*plane, "--x", "-0.2:1.2:4", *common]) == 0
    printed = capsys.readouterr().out
    assert "plane through w1, w2 and the bend" in printed
    assert os.path.getsize(d / "plane_train_loss.png") > 10_000
    assert Surface.load(d / "plane.h5").y[0] < 0  # default y frames the curve with a margin


@pytest.mark.parametrize(
    "target, data, message",
    [
        ("missing.pt", "data.npz", "no such checkpoint"),
        ("net.pt", "data.npz", "not a fastloss curve checkpoint"),
        ("curve.pt", "other.npz", "shape [7]"),
    ],
)
def test_cli_errors(files, capsys, target, data, message):
    for command in ("eval", "plane"):
        args = ["curve", command, str(files / target), "--data", str(files / data)]
        assert main([*args, "--out", str(files / "x.h5"), "--quiet"]) == 2
        assert message in capsys.readouterr().err
