"""Garipov et al. 2018, Figure 7, on the synthetic 1D regression set: curves between regression
networks fit with MSE, the curve's plane evaluated with MSE (checked against the serial loop
at every grid point), and the functions along the curve, which agree on the data and differ
away from it (examples/regression_curve.py draws the figure)."""

import numpy as np
import pytest
import torch

import fastloss
from fastloss.core import Grid, affine_coords
from fastloss.data import regression_clusters
from fastloss.data.synthetic import distance_to_clusters
from fastloss.engine import evaluate_serial
from fastloss.viz import plot_curve_functions


def regression_net(seed, train, epochs):
    torch.manual_seed(seed)
    model = fastloss.build_model("mlp", (1,), 1, widths=(32, 32))
    fastloss.train(
        model, train, epochs=epochs, lr=0.01, batch_size=40, optimizer="adam",
        weight_decay=0.0, seed=seed, loss="mse",
    )  # fmt: skip
    return model


def fitted_curve(epochs, fit_epochs):
    train, test = regression_clusters(seed=0)
    w1, w2 = (regression_net(seed, train, epochs) for seed in (1, 2))
    curve, history = fastloss.fit_curve(
        w1, fastloss.Bezier(w1, w2), train, epochs=fit_epochs, lr=0.01, optimizer="adam",
        schedule="cosine", wd=0.0, batch_size=40, samples_per_step=4, loss="mse", progress=False,
    )  # fmt: skip
    return w1, curve, history, train, test


def test_the_curve_plane_mse_matches_the_serial_loop_at_every_grid_point():
    w1, curve, history, train, test = fitted_curve(epochs=40, fit_epochs=10)
    assert "train_acc" not in history["epochs"][-1] and history["train_loss"] > 0
    grid = Grid(x=(-0.2, 1.2, 6), y=(-0.5, 0.8, 5))
    surface = fastloss.evaluate_curve_plane(
        w1, curve, grid, train=train, test=test, loss="mse", progress=False
    )
    assert sorted(surface.values) == ["test_loss", "train_loss"]
    plane, _ = fastloss.curve_plane(curve)
    coords = affine_coords(grid.coords())
    for split, data in (("train", train), ("test", test)):
        serial, _ = evaluate_serial(w1, plane, coords, data, loss="mse")
        np.testing.assert_allclose(surface.values[f"{split}_loss"].reshape(-1), serial, rtol=1e-5)


def test_evaluate_curve_with_a_regression_loss(tmp_path):
    w1, curve, _, train, test = fitted_curve(epochs=20, fit_epochs=5)
    result = fastloss.evaluate_curve(
        w1, curve, train, test, points=5, loss="mse", progress=False, out=tmp_path / "c.h5"
    )
    assert sorted(result.values) == [f"{p}/{s}_loss" for p in ("curve", "segment") for s in
                                     ("test", "train")]  # fmt: skip
    serial, _ = evaluate_serial(w1, curve, curve.coords(result.t), test, loss="mse")
    np.testing.assert_allclose(result["curve/test_loss"], serial, rtol=1e-5)
    assert "segment  test_loss" in fastloss.CurveResult.load(tmp_path / "c.h5").format_summary()


@pytest.mark.slow
def test_the_functions_along_a_low_loss_curve_differ_away_from_the_data(tmp_path):
    w1, curve, history, train, _ = fitted_curve(epochs=600, fit_epochs=300)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    along = fastloss.evaluate(w1, curve, curve.coords(t), train=train, loss="mse", progress=False)
    mse = along.values["train_loss"]
    probe = torch.linspace(-2, 2, 401)[:, None]
    functions = fastloss.predict(w1, curve, curve.coords(t), probe)[..., 0]
    spread = functions.std(axis=0)
    distance = distance_to_clusters(probe[:, 0]).numpy()
    near, far = float(spread[distance == 0].mean()), float(spread[distance > 0.25].mean())
    print(
        f"\ntrain MSE along the curve {np.round(mse, 4).tolist()}; spread of the 7 functions "
        f"{near:.4f} on the data, {far:.4f} away from it"
    )
    ends = 0.5 * (mse[0] + mse[-1])
    assert mse.max() <= 1.5 * ends  # a low-loss path: every point fits the data
    assert near < 0.02 and far > 5 * near  # same on the data, different beyond it
    grid = Grid(x=(-0.3, 1.3, 9), y=(-0.3, 0.8, 7))
    surface = fastloss.evaluate_curve_plane(
        w1, curve, grid, train=train, loss="mse", progress=False
    )
    figure = plot_curve_functions(surface, t.numpy(), probe[:, 0], functions, train)
    figure.savefig(tmp_path / "functions.png")
    assert (tmp_path / "functions.png").stat().st_size > 20_000
