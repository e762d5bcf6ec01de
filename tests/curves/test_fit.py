"""Curve fitting: gradients against torch.func, fixed endpoints, a lower barrier, resuming,
refusals, and `fastloss curve fit` end to end."""

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import fastloss
import fastloss.curves.fit as fit_module
from fastloss import data
from fastloss.cli import main as cli
from fastloss.core import batch
from fastloss.curves import Bezier, PolyChain, fit_curve, fit_step, load_curve, make_curve
from fastloss.io import checkpoints
from fastloss.io.fit_store import FitStore
from fastloss.models import build_model
from fastloss.training import lr_factor, train


class Scale(nn.Module):
    """A parametrised module without a compiled twin: it runs through VmapFallback."""

    def __init__(self, n):
        super().__init__()
        self.gain = nn.Parameter(torch.rand(n) + 0.5)

    def forward(self, x):
        return x * self.gain


def tiny_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), Scale(5), nn.Linear(5, 3))


def tiny_conv_bn():
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 3),
    )


def reference_bend_grads(model, curve, coords, x, y, wd):
    """The fitting objective through torch.func.functional_call, one t at a time."""
    names = list(curve.basis)
    ends = {n: curve.basis[n][[0, -1]] for n in names}
    bends = {n: curve.basis[n][1:-1].clone().requires_grad_(True) for n in names}
    net = copy.deepcopy(model).train()  # BN: batch statistics, as in fitting
    total = 0.0
    for c in coords:
        basis = {n: torch.cat([ends[n][:1], bends[n], ends[n][1:]]) for n in names}
        params = {n: torch.tensordot(c, basis[n], dims=1) for n in names}
        logits = functional_call(net, params, (x,))
        sq_norm = sum(p.square().sum() for p in params.values())
        total = total + F.cross_entropy(logits, y) + 0.5 * wd * sq_norm
    (total / len(coords)).backward()
    return {n: b.grad for n, b in bends.items()}


@pytest.mark.parametrize(
    "make, shape, kind, bends",
    [
        (tiny_mlp, (6,), "bezier", 1),
        (tiny_mlp, (6,), "polychain", 2),
        (tiny_conv_bn, (1, 4, 4), "bezier", 2),
        (tiny_conv_bn, (1, 4, 4), "polychain", 1),
    ],
)
def test_bend_gradients_match_functional_call(make, shape, kind, bends):
    torch.manual_seed(0)
    nets = [make().double() for _ in range(2)]
    curve = make_curve(kind, nets[0], nets[1], bends)
    with torch.no_grad():  # bends off the segment, so that every basis point matters
        for b in curve.basis.values():
            b[1:-1] += 0.3 * torch.randn_like(b[1:-1])
    x = torch.randn(8, *shape, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    coords = curve.coords([0.1, 0.45, 0.8])
    wd = 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Scale goes through vmap, with a warning
        batched = batch(nets[0], curve).train()
    ends = {n: b[[0, -1]] for n, b in curve.basis.items()}
    trained = {n: b[1:-1].clone().requires_grad_(True) for n, b in curve.basis.items()}
    keep = torch.optim.SGD(list(trained.values()), lr=0.0)  # the gradients stay in .grad
    fit_step(batched, ends, trained, keep, coords, x, y, wd)
    expected = reference_bend_grads(nets[0], curve, coords, x, y, wd)
    for name, grad in expected.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(trained[name].grad, grad, rtol=1e-9, atol=1e-12)


def test_load_basis_checks_what_it_installs():
    nets = [tiny_mlp() for _ in range(2)]
    curve = make_curve("bezier", nets[0], nets[1], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batched = batch(nets[0], curve)
    basis = {n: b.clone() for n, b in curve.basis.items()}
    batched.load_basis(basis)
    assert batched.net[3].gain is basis["3.gain"]  # VmapFallback's buffer, renamed
    assert batched.net[1].weight is basis["1.weight"]
    with pytest.raises(ValueError, match="no basis given for parameter '1.bias'"):
        batched.load_basis({n: b for n, b in basis.items() if n != "1.bias"})
    with pytest.raises(ValueError, match="'4.weight' must be"):
        batched.load_basis({**basis, "4.weight": basis["4.weight"][:2]})


def test_garipov_schedule():
    assert lr_factor("garipov", 0.0) == lr_factor("garipov", 0.5) == 1.0
    assert lr_factor("garipov", 0.7) == pytest.approx(1 - 0.2 / 0.4 * 0.99)
    assert lr_factor("garipov", 0.9) == pytest.approx(0.01)
    assert lr_factor("garipov", 0.95) == 0.01
    assert lr_factor("cosine", 0.5) == pytest.approx(0.5)
    assert lr_factor("constant", 0.99) == 1.0


@pytest.fixture(scope="module")
def mnist1d_pair(tmp_path_factory):
    """Two small MLPs trained on MNIST-1D from different seeds, and their checkpoints."""
    folder = tmp_path_factory.mktemp("nets")
    train_data, _ = data.load_builtin("mnist1d")
    nets, paths = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = build_model("mlp", (40,), 10, widths=(64, 64))
        train(net, train_data, epochs=15, seed=seed)
        paths.append(str(checkpoints.save_checkpoint(net, folder / f"w{seed}.pt")))
        nets.append(net)
    return nets, paths, train_data


def max_train_loss(model, curve, train_data):
    coords = curve.coords(torch.linspace(0, 1, 11))
    surface = fastloss.evaluate(model, curve, coords, train=train_data, progress=False)
    return float(surface.values["train_loss"].max())


def test_fitting_lowers_the_barrier_and_keeps_the_endpoints(mnist1d_pair):
    nets, _, train_data = mnist1d_pair
    segment = make_curve("bezier", nets[0], nets[1], 1)
    fitted, history = fit_curve(nets[0], segment, train_data, epochs=10, progress=False)
    assert type(fitted) is Bezier and history["finished"] and len(history["epochs"]) == 10
    for name, p in nets[0].named_parameters():
        assert torch.equal(fitted.basis[name][0], p.detach())
        assert torch.equal(fitted.basis[name][-1], dict(nets[1].named_parameters())[name])
    before = max_train_loss(nets[0], segment, train_data)
    after = max_train_loss(nets[0], fitted, train_data)
    assert after < 0.6 * before and after < before - 0.5, (before, after)
    assert history["epochs"][-1]["train_loss"] < history["epochs"][0]["train_loss"]


SMALL = dict(epochs=3, batch_size=32, lr=0.05, save_every=5, progress=False)


@pytest.fixture(scope="module")
def small_fit(mnist1d_pair, tmp_path_factory):
    """An uninterrupted small fit written to a folder, to compare resumed fits with."""
    nets, _, train_data = mnist1d_pair
    subset = data.subsample(train_data, 250, seed=0)  # 7 full batches + 26: 8 steps an epoch
    curve = make_curve("polychain", nets[0], nets[1], 2)
    out = tmp_path_factory.mktemp("fit") / "run"
    fitted, history = fit_curve(nets[0], curve, subset, out=out, samples_per_step=2, **SMALL)
    return nets, subset, curve, out, fitted, history


def snapshot_tensors(out):
    return {p.name: load_curve(p)[0].basis for p in FitStore(out).snapshots()}


def assert_same_basis(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_fit_folder_contents(small_fit):
    nets, _, _, out, fitted, history = small_fit
    assert history["steps"] == history["total_steps"] == 24
    names = [p.name for p in FitStore(out).snapshots()]
    assert names == [f"step-{s:07d}.pt" for s in (0, 5, 10, 15, 20, 24)]
    curve, meta = load_curve(out / "curve.pt")
    assert type(curve) is PolyChain and curve.bends == 2
    assert_same_basis(curve.basis, fitted.basis)
    assert meta["step"] == 24 and meta["finished"] and len(meta["history"]) == 3
    assert meta["fit_settings"]["samples_per_step"] == 2
    rebuilt = build_model(meta["model"], meta["in_shape"], meta["num_classes"], **meta["kwargs"])
    assert rebuilt.state_dict().keys() == nets[0].state_dict().keys()
    first, _ = load_curve(out / "steps" / "step-0000000.pt")
    assert not torch.equal(first.basis["1.weight"][1], curve.basis["1.weight"][1])


def test_stopped_and_resumed_fit_equals_uninterrupted(small_fit, tmp_path):
    nets, subset, curve, out, fitted, history = small_fit
    out2 = tmp_path / "run"
    _, part = fit_curve(
        nets[0], curve, subset, out=out2, samples_per_step=2, stop_at_step=11, **SMALL
    )
    assert part["steps"] == 11 and not part["finished"]  # stopped in the second epoch
    resumed, rest = fit_curve(nets[0], curve, subset, out=out2, samples_per_step=2, **SMALL)
    assert rest["resumed_from"] == 11 and rest["finished"]
    assert_same_basis(resumed.basis, fitted.basis)
    assert [e["train_loss"] for e in rest["epochs"]] == [e["train_loss"] for e in history["epochs"]]
    expected = snapshot_tensors(out)
    got = snapshot_tensors(out2)
    assert got.keys() == expected.keys()
    for name in expected:
        assert_same_basis(got[name], expected[name])


def test_crashed_fit_resumes_from_its_last_save(small_fit, tmp_path, monkeypatch):
    nets, subset, curve, out, fitted, _ = small_fit
    out2 = tmp_path / "run"
    calls = {"n": 0}
    real_step = fit_module.fit_step

    def crashing_step(*args):
        calls["n"] += 1
        if calls["n"] == 14:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(fit_module, "fit_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        fit_curve(nets[0], curve, subset, out=out2, samples_per_step=2, **SMALL)
    monkeypatch.setattr(fit_module, "fit_step", real_step)
    assert torch.load(out2 / "state.pt", weights_only=True)["step"] == 10  # the last save
    resumed, rest = fit_curve(nets[0], curve, subset, out=out2, samples_per_step=2, **SMALL)
    assert rest["resumed_from"] == 10
    assert_same_basis(resumed.basis, fitted.basis)


def test_finished_fit_returns_at_once_and_other_settings_are_refused(small_fit):
    nets, subset, curve, out, fitted, _ = small_fit
    stamp = (out / "curve.pt").stat().st_mtime_ns
    again, history = fit_curve(nets[0], curve, subset, out=out, samples_per_step=2, **SMALL)
    assert history["already_finished"] and history["finished"]
    assert_same_basis(again.basis, fitted.basis)
    with pytest.raises(ValueError, match="made with lr=0.05, not 0.1.*overwrite"):
        fit_curve(nets[0], curve, subset, out=out, samples_per_step=2, **{**SMALL, "lr": 0.1})
    with pytest.raises(ValueError, match="samples_per_step=2, not 1"):
        fit_curve(nets[0], curve, subset, out=out, **SMALL)
    other = make_curve("polychain", nets[1], nets[0], 2)
    with pytest.raises(ValueError, match="made with curve="):
        fit_curve(nets[0], other, subset, out=out, samples_per_step=2, **SMALL)
    assert (out / "curve.pt").stat().st_mtime_ns == stamp  # the finished fit is untouched


def test_overwrite_replaces_and_a_curve_without_state_is_kept(small_fit, tmp_path):
    nets, subset, curve, _, _, _ = small_fit
    out = tmp_path / "run"
    fit_curve(nets[0], curve, subset, out=out, samples_per_step=2, **SMALL)
    _, history = fit_curve(
        nets[0], curve, subset, out=out, overwrite=True, **{**SMALL, "save_every": None}
    )
    assert history["resumed_from"] is None and history["finished"]
    assert [p.name for p in FitStore(out).snapshots()] == ["step-0000000.pt", "step-0000024.pt"]
    (out / "state.pt").unlink()
    with pytest.raises(FileExistsError, match="cannot be resumed"):
        fit_curve(nets[0], curve, subset, out=out, **SMALL)


def test_bad_options_are_refused(mnist1d_pair):
    nets, _, train_data = mnist1d_pair
    curve = make_curve("bezier", nets[0], nets[1], 1)
    with pytest.raises(ValueError, match="schedule"):
        fit_curve(nets[0], curve, train_data, schedule="step", progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        fit_curve(nets[0], curve, train_data, optimizer="lbfgs", progress=False)
    with pytest.raises(ValueError, match="samples_per_step >= 1"):
        fit_curve(nets[0], curve, train_data, samples_per_step=0, progress=False)
    with pytest.raises(ValueError, match="no bends"):
        fit_curve(nets[0], make_curve("bezier", nets[0], nets[1], 0), train_data, progress=False)


def test_cli_fits_a_curve_end_to_end(mnist1d_pair, tmp_path, capsys):
    _, (w1, w2), _ = mnist1d_pair
    out = tmp_path / "curve"
    args = ["curve", "fit", w1, w2, "--train-samples", "300", "--epochs", "2"]
    args += ["--batch-size", "100", "--save-every", "4", "--out", str(out), "--quiet"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert str(out / "curve.pt") in printed and "final train loss" in printed
    loss = float(printed.split("final train loss ")[1].split(",")[0])
    assert math.isfinite(loss) and loss > 0
    curve, meta = load_curve(out / "curve.pt")
    assert type(curve) is Bezier and meta["model"] == "mlp" and meta["data"] == "mnist1d"
    assert [p.name for p in FitStore(out).snapshots()] == [
        "step-0000000.pt",
        "step-0000004.pt",
        "step-0000006.pt",
    ]
    assert cli.main(args) == 0  # finished: returns at once
    assert "already finished" in capsys.readouterr().out


def test_cli_errors(mnist1d_pair, tmp_path, capsys):
    _, (w1, w2), _ = mnist1d_pair
    torch.manual_seed(0)
    wide = str(checkpoints.save_checkpoint(build_model("mlp", (40,), 10), tmp_path / "wide.pt"))
    out = str(tmp_path / "out")
    cases = [
        ([w1, str(tmp_path / "missing.pt")], "no such checkpoint"),
        ([w1, wide], "different architectures: kwargs"),
        ([w1, w2, "--bends", "2", "--init", w1], "--init gives 1 checkpoint"),
        ([w1, w2, "--data", "digits"], "takes inputs of shape [40]"),
        ([w1, w2, "--epochs", "0"], "epochs >= 1"),
    ]
    for extra, message in cases:
        assert cli.main(["curve", "fit", *extra, "--out", out, "--quiet"]) == 2
        assert message in capsys.readouterr().err


def test_cli_interrupted_fit_resumes(mnist1d_pair, tmp_path, capsys, monkeypatch):
    _, (w1, w2), _ = mnist1d_pair
    args = ["curve", "fit", w1, w2, "--train-samples", "300", "--epochs", "2"]
    args += ["--batch-size", "100", "--out", str(tmp_path / "curve"), "--quiet"]
    real_step = fit_module.fit_step
    calls = {"n": 0}

    def interrupted_step(*a):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_step(*a)

    monkeypatch.setattr(fit_module, "fit_step", interrupted_step)
    assert cli.main(args) == 130
    assert "same command resumes" in capsys.readouterr().err
    monkeypatch.setattr(fit_module, "fit_step", real_step)
    assert cli.main(args) == 0
    assert "resumed at step 3" in capsys.readouterr().out  # the end of the first epoch
