"""fit_pattern: what a short fit learns, its folder, resuming to the same θ, refusals; and
evaluate_pattern against the plain per-cell loop."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import fastloss.mpo.fit as fit_module
from fastloss import data
from fastloss.engine import evaluate_serial
from fastloss.errors import ArgumentError, OutputExistsError
from fastloss.io.fit_store import FitStore
from fastloss.models import build_model
from fastloss.mpo import (
    builtin_pattern,
    evaluate_pattern,
    fit_pattern,
    load_plane,
    pattern_scores,
)
from fastloss.mpo.evaluate import default_threshold, image_rows

SMALL = dict(steps=12, batch_size=64, good_per_step=6, bad_per_step=5, lr=1e-2, progress=False)
SMALL.update(save_every=5, log_every=4)


@pytest.fixture(scope="module")
def digits_small():
    train, test = data.load_builtin("digits")
    return data.subsample(train, 300, seed=0), data.subsample(test, 100, seed=0)


def small_model(seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", (1, 8, 8), 10, widths=(16,))


@pytest.fixture(scope="module")
def small_fit(digits_small, tmp_path_factory):
    train, _ = digits_small
    pattern = builtin_pattern("cross", 8)
    out = tmp_path_factory.mktemp("mpo") / "run"
    theta, history = fit_pattern(small_model(), pattern, train, out=out, **SMALL)
    return train, pattern, out, theta, history


def same_theta(a, b):
    for va, vb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(va, vb)


def test_fit_folder_and_history(small_fit):
    train, pattern, out, theta, history = small_fit
    assert history["steps"] == history["total_steps"] == 12 and history["finished"]
    assert [r["step"] for r in history["log"]] == [4, 8, 12]
    assert [r["from_step"] for r in history["log"]] == [1, 5, 9]
    assert all(-1 <= r["gap"] <= 1 and r["s"] > 0 for r in history["log"])
    names = [p.name for p in FitStore(out, "plane.pt").snapshots()]
    assert names == [f"step-{s:07d}.pt" for s in (0, 5, 10, 12)]
    stored, stored_pattern, meta = load_plane(out / "plane.pt")
    same_theta(stored, theta)
    assert (stored_pattern.good == pattern.good).all() and stored_pattern.name == "cross"
    assert meta["model"] == "mlp" and meta["finished"] and meta["fit_settings"]["steps"] == 12
    first, _, _ = load_plane(out / "steps" / "step-0000000.pt")
    assert float(first.s) == pytest.approx(0.1) and float(theta.s) != pytest.approx(0.1)


def test_stopped_and_resumed_fit_equals_uninterrupted(small_fit, tmp_path):
    train, pattern, out, theta, history = small_fit
    out2 = tmp_path / "run"
    _, part = fit_pattern(small_model(), pattern, train, out=out2, stop_at_step=7, **SMALL)
    assert part["steps"] == 7 and not part["finished"]
    resumed, rest = fit_pattern(small_model(), pattern, train, out=out2, **SMALL)
    assert rest["resumed_from"] == 7 and rest["finished"]
    same_theta(resumed, theta)
    assert [r["gap"] for r in rest["log"]] == [r["gap"] for r in history["log"]]


def test_crashed_fit_resumes_from_its_last_save(small_fit, tmp_path, monkeypatch):
    train, pattern, _, theta, _ = small_fit
    out2 = tmp_path / "run"
    calls = {"n": 0}
    real_step = fit_module.mpo_step

    def crashing_step(*args):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(fit_module, "mpo_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        fit_pattern(small_model(), pattern, train, out=out2, **SMALL)
    monkeypatch.setattr(fit_module, "mpo_step", real_step)
    assert torch.load(out2 / "state.pt", weights_only=True)["step"] == 5  # the last save
    resumed, rest = fit_pattern(small_model(), pattern, train, out=out2, **SMALL)
    assert rest["resumed_from"] == 5
    same_theta(resumed, theta)


def test_finished_fit_returns_and_other_settings_are_refused(small_fit):
    train, pattern, out, theta, _ = small_fit
    stamp = (out / "plane.pt").stat().st_mtime_ns
    again, history = fit_pattern(small_model(), pattern, train, out=out, **SMALL)
    assert history["already_finished"]
    same_theta(again, theta)
    with pytest.raises(ArgumentError, match="made with lr=0.01, not 0.1.*overwrite"):
        fit_pattern(small_model(), pattern, train, out=out, **{**SMALL, "lr": 0.1})
    with pytest.raises(ArgumentError, match="pattern"):
        fit_pattern(small_model(), builtin_pattern("ring", 8), train, out=out, **SMALL)
    assert (out / "plane.pt").stat().st_mtime_ns == stamp


def test_bad_options_are_refused(digits_small, tmp_path):
    train, _ = digits_small
    pattern = builtin_pattern("cross", 8)
    for bad in ({"steps": 0}, {"lr": 0}, {"good_per_step": 0}, {"bad_clamp": -1}):
        with pytest.raises(ArgumentError):
            fit_pattern(small_model(), pattern, train, **{**SMALL, **bad})
    (tmp_path / "plane.pt").parent.mkdir(exist_ok=True)
    (tmp_path / "plane.pt").write_bytes(b"x")
    with pytest.raises(OutputExistsError, match="cannot be resumed"):
        fit_pattern(small_model(), pattern, train, out=tmp_path, **SMALL)
    with pytest.raises(ArgumentError, match="cannot run at several points"):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.RNN(64, 10))
        fit_pattern(model, pattern, train, **SMALL)


def test_a_longer_fit_draws_the_pattern(digits_small):
    """200 steps on a 10×10 cross already separate the arms from the corners."""
    train, test = digits_small
    pattern = builtin_pattern("cross", 10)
    model = small_model()
    theta, history = fit_pattern(model, pattern, train, **{**SMALL, "steps": 200, "log_every": 50})
    _, scores = evaluate_pattern(model, theta, pattern, train, test, progress=False)
    assert history["log"][-1]["gap"] > history["log"][0]["gap"]
    assert scores["train"]["gap"] > 0.2 and scores["train"]["iou"] > 0.5


def test_evaluate_pattern_matches_the_per_cell_loop(small_fit, digits_small, tmp_path):
    train, pattern, _, theta, _ = small_fit
    _, test = digits_small
    model = small_model()
    surface, scores = evaluate_pattern(
        model, theta, pattern, train, test, out=tmp_path / "s.h5", progress=False
    )
    plane = theta.plane()
    positions = pattern.positions()
    acc = np.zeros(pattern.shape)
    for i in range(pattern.shape[0]):
        for j in range(pattern.shape[1]):
            alpha, beta = positions[i, j]
            w = {n: b[0] + alpha * b[1] + beta * b[2] for n, b in plane.basis.items()}
            with torch.no_grad():
                out = functional_call(model, w, (test[0],))
            acc[i, j] = float((out.argmax(1) == test[1]).float().mean())
            loss = float(F.cross_entropy(out, test[1]))
            assert image_rows(surface.values["test_loss"])[i, j] == pytest.approx(loss, rel=1e-4)
    np.testing.assert_allclose(image_rows(surface.values["test_acc"]) / 100, acc, atol=1e-6)
    expected = pattern_scores(acc, pattern, default_threshold(10))
    assert scores["test"] == pytest.approx(expected)
    assert (image_rows(surface.values["pattern"]) == pattern.good).all()
    assert surface.attrs["mpo_scores"]["test"]["iou"] == pytest.approx(expected["iou"])
    with pytest.raises(OutputExistsError):
        evaluate_pattern(model, theta, pattern, train, out=tmp_path / "s.h5", progress=False)


def test_pattern_scores():
    pattern = builtin_pattern("cross", 6)
    perfect = np.where(pattern.good, 0.9, 0.1)
    s = pattern_scores(perfect, pattern, 0.55)
    assert s["iou"] == 1.0 and s["gap"] == pytest.approx(0.8)
    half = perfect.copy()
    half[pattern.good] = 0.2  # nothing found
    assert pattern_scores(half, pattern, 0.55)["iou"] == 0.0
    assert default_threshold(10) == pytest.approx(0.55)


def test_out_of_memory_says_what_to_lower(digits_small, monkeypatch):
    train, _ = digits_small

    def no_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    monkeypatch.setattr(fit_module, "mpo_step", no_memory)
    with pytest.raises(MemoryError, match="11 cells × 64 samples.*cells_per_pass"):
        fit_pattern(small_model(), builtin_pattern("cross", 8), train, **SMALL)


def test_evaluation_of_a_bn_plane_recomputes_statistics_per_cell(digits_small):
    """Training normalises each cell with its own batch statistics; evaluation recomputes
    each cell's running statistics over the train data (what `update_bn` gives the plain
    loop), never the model's or an interpolation of them."""
    train, test = digits_small
    torch.manual_seed(0)
    model = build_model("mpo-cnn-bn", (1, 8, 8), 10, channels=(2, 4), hidden=8)
    pattern = builtin_pattern("cross", 5)
    theta, _ = fit_pattern(model, pattern, train, **{**SMALL, "save_every": None})
    surface, _ = evaluate_pattern(
        model, theta, pattern, train, test, batch_size=100, progress=False
    )
    positions = torch.from_numpy(pattern.positions().reshape(-1, 2))
    coords = torch.cat([torch.ones(len(positions), 1, dtype=torch.float64), positions], 1)
    loss, acc = evaluate_serial(
        model, theta.plane(), coords, test, bn="recompute", bn_data=train, batch_size=100
    )
    np.testing.assert_allclose(image_rows(surface.values["test_loss"]).reshape(-1), loss, rtol=1e-4)
    np.testing.assert_allclose(image_rows(surface.values["test_acc"]).reshape(-1), acc, atol=1e-4)
    fixed, _ = evaluate_serial(model, theta.plane(), coords, test, bn="fixed", batch_size=100)
    assert np.abs(fixed - loss).max() > 1e-3  # the model's own statistics would differ
