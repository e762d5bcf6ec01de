"""Garipov et al. 2018, Figure 7, on a synthetic 1D regression set: the loss surface in the
plane of a low-loss curve between two regression networks, and the functions at points along
the curve. Only public API and the extension points the engine offers (a regression loss,
per-point predictions).

    python examples/regression_curve.py --out fig7

prints the fit and the spread of the functions along the curve near and away from the data,
and writes fig7/functions.png and fig7/plane.h5.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

import fastloss
from fastloss.data import regression_clusters
from fastloss.data.synthetic import distance_to_clusters
from fastloss.viz import plot_curve_functions

WIDTHS = (64, 64)


def network(seed: int, train_data, epochs: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = fastloss.build_model("mlp", (1,), 1, widths=WIDTHS)
    fastloss.train(
        model, train_data, epochs=epochs, lr=0.01, batch_size=40, optimizer="adam",
        weight_decay=0.0, seed=seed, loss="mse",
    )  # fmt: skip
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="fig7", help="output folder")
    parser.add_argument("--epochs", type=int, default=600, help="training epochs per network")
    parser.add_argument("--fit-epochs", type=int, default=300, help="curve-fitting epochs")
    parser.add_argument("--points", type=int, default=7, help="functions drawn along the curve")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    train_data, test_data = regression_clusters(seed=0)
    w1, w2 = (network(seed, train_data, args.epochs) for seed in (1, 2))
    curve, history = fastloss.fit_curve(
        w1, fastloss.Bezier(w1, w2), train_data, epochs=args.fit_epochs, lr=0.01,
        optimizer="adam", schedule="cosine", wd=0.0, batch_size=40, samples_per_step=4,
        loss="mse", progress=False,
    )  # fmt: skip
    _, info = fastloss.curve_plane(curve)
    ys = info["xy"][:, 1].numpy()
    margin = 0.3 * max(float(np.ptp(ys)), 0.5)
    y_axis = (float(ys.min()) - margin, float(ys.max()) + margin, 31)
    grid = fastloss.Grid(x=(-0.3, 1.3, 41), y=y_axis)
    surface = fastloss.evaluate_curve_plane(
        w1, curve, grid, train=train_data, test=test_data, loss="mse",
        out=os.path.join(args.out, "plane.h5"), overwrite=True, progress=False,
    )  # fmt: skip
    t = np.linspace(0, 1, args.points)
    x_probe = torch.linspace(-2.0, 2.0, 401)[:, None]
    predictions = fastloss.predict(w1, curve, curve.coords(torch.as_tensor(t)), x_probe)[..., 0]
    spread = predictions.std(axis=0)  # across the points of the curve, per probe input
    distance = distance_to_clusters(x_probe[:, 0]).numpy()
    near, far = spread[distance == 0].mean(), spread[distance > 0.25].mean()
    figure = plot_curve_functions(surface, t, x_probe[:, 0], predictions, train_data)
    figure.savefig(os.path.join(args.out, "functions.png"), dpi=150)

    at_points = fastloss.evaluate(
        w1, curve, curve.coords(torch.as_tensor(t)), train=train_data, loss="mse", progress=False
    )
    curve_mse = at_points.values["train_loss"]
    print(f"endpoints' train MSE: w1 {curve_mse[0]:.4f}, w2 {curve_mse[-1]:.4f}")
    print(f"curve fit: final train MSE {history['train_loss']:.4f} (mean over t)")
    print("train MSE at the drawn points: " + ", ".join(f"{v:.4f}" for v in curve_mse))
    lo, hi = np.nanmin(surface.values["train_loss"]), np.nanmax(surface.values["train_loss"])
    print(f"plane: {surface.values['train_loss'].size} points, train MSE {lo:.4f} to {hi:.4g}")
    print(
        f"spread of the {args.points} functions (std across the curve): {near:.4f} on the "
        f"data, {far:.4f} away from it (ratio {far / near:.1f})"
    )
    seconds = time.perf_counter() - start
    print(f"figure: {os.path.join(args.out, 'functions.png')} ({seconds:.0f} s in all)")


if __name__ == "__main__":
    main()
