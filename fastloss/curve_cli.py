"""`fastloss curve eval` and `fastloss curve plane`: evaluate a fitted curve along t and on
its plane, from the command line (registered by `fastloss.curve_eval.register_cli`)."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
from torch import nn

from fastloss.curves import Curve

_MODEL_KEYS = ("model", "in_shape", "num_classes")


def load_curve_model(path: str) -> tuple[Curve, nn.Module, dict[str, Any]]:
    """(curve, a model of its architecture, metadata) from a curve checkpoint."""
    from fastloss.curves import load_curve
    from fastloss.models import build_model

    curve, meta = load_curve(path)
    missing = [k for k in _MODEL_KEYS if k not in meta]
    if missing:
        raise ValueError(
            f"{path}: the curve's metadata does not say how to build its model (no "
            f"{', '.join(missing)}); save it with save_curve(..., meta={{'model': ..., "
            "'in_shape': ..., 'num_classes': ..., 'kwargs': ...}})"
        )
    kwargs = meta.get("kwargs") or {}
    model = build_model(meta["model"], tuple(meta["in_shape"]), meta["num_classes"], **kwargs)
    return curve, model, meta


def _load_checked_data(args, meta: dict[str, Any], path: str):
    from fastloss.cli import _load_data

    train, test = _load_data(args)
    expected, found = list(meta["in_shape"]), list(train[0].shape[1:])
    if expected != found:
        raise ValueError(
            f"--data {args.data} has samples of shape {found}, but the model of {path} "
            f"({meta['model']}) was built for {expected}"
        )
    return train, test


def _provenance(args, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "curve_file": os.path.abspath(args.curve),
        "data_spec": str(args.data),
        "data_seed": args.data_seed,
        "model_spec": {k: meta.get(k) for k in (*_MODEL_KEYS, "kwargs")},
    }


def _eval(args: argparse.Namespace) -> int:
    from fastloss.cli import _dtype
    from fastloss.curve_eval import evaluate_curve
    from fastloss.plot_curves import save_curve_figures

    curve, model, meta = load_curve_model(args.curve)
    if args.figures:
        os.makedirs(args.figures, exist_ok=True)
    train, test = _load_checked_data(args, meta, args.curve)
    result = evaluate_curve(
        model,
        curve,
        train=train,
        test=test,
        points=args.points,
        wd=args.wd,
        bn=args.bn,
        batch_size=args.batch_size,
        device=args.device,
        dtype=_dtype(args.dtype),
        out=args.out,
        overwrite=args.overwrite,
        progress=not args.quiet,
        attrs=_provenance(args, meta),
    )
    stem = os.path.splitext(os.path.basename(args.out))[0]
    folder = args.figures or os.path.dirname(os.path.abspath(args.out))
    figures = save_curve_figures(
        result,
        os.path.join(folder, f"{stem}_profile.png"),
        os.path.join(folder, f"{stem}_ensemble.png"),
    )
    seconds = float(result.attrs.get("seconds", 0.0))
    print(
        f"{args.out}: {args.curve} ({curve.kind} curve, {curve.J - 2} "
        f"bend{'' if curve.J == 3 else 's'}), {args.points} points on the curve and the "
        f"segment in {seconds:.1f} s"
    )
    print(result.format_summary())
    print("figures: " + ", ".join(figures))
    return 0


def default_plane_axes(
    info: dict[str, Any], x: tuple[float, float, int] | None, y: tuple[float, float, int] | None
) -> tuple[tuple[float, float, int], tuple[float, float, int]]:
    """Axes that frame the whole curve, its bends and w1, w2 with a margin: x at least
    -0.3 to 1.3; y with cells about as tall as wide (the plane's units are equal)."""
    pts = np.concatenate(
        [np.asarray(info["xy"]), np.asarray(info["bends_xy"]).reshape(-1, 2), [[0.0, 0.0]]]
    )
    if x is None:
        span = float(np.ptp(pts[:, 0]))
        x = (min(-0.3, pts[:, 0].min() - 0.2 * span), max(1.3, pts[:, 0].max() + 0.2 * span), 41)
    if y is None:
        lo, hi = float(pts[:, 1].min()), float(pts[:, 1].max())
        margin = max(0.3 * (hi - lo), 0.2 * (x[1] - x[0]) / 1.6)
        lo, hi = lo - margin, hi + margin
        y = (lo, hi, max(11, round(x[2] * (hi - lo) / (x[1] - x[0]))))
    return x, y


def _plane(args: argparse.Namespace) -> int:
    from fastloss.cli import _dtype
    from fastloss.curve_eval import evaluate_curve_plane
    from fastloss.curves import curve_plane
    from fastloss.plot_curves import plot_curve_plane
    from fastloss.subspace import Grid

    curve, model, meta = load_curve_model(args.curve)
    _, info = curve_plane(curve)
    x, y = default_plane_axes(info, args.x, args.y)
    train, test = _load_checked_data(args, meta, args.curve)
    start = time.perf_counter()
    surface = evaluate_curve_plane(
        model,
        curve,
        Grid(x=x, y=y),
        train=train,
        test=test,
        bn=args.bn,
        batch_size=args.batch_size,
        device=args.device,
        dtype=_dtype(args.dtype),
        out=args.out,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    seconds = time.perf_counter() - start
    stored = surface.attrs["curve"]
    kind = (
        f"PCA plane of the curve, {stored['residual']:.2%} of it outside"
        if stored["plane"] == "pca"
        else "plane through w1, w2 and the bend"
    )
    axes = f"x {x[0]:.3g}:{x[1]:.3g}:{x[2]}, y {y[0]:.3g}:{y[1]:.3g}:{y[2]}"
    points = int(np.prod(surface.shape))
    print(f"{args.out}: {points} points in {seconds:.1f} s; {axes}; {kind}")
    for name, values in surface.values.items():
        print(f"  {name:10s} min {float(values.min()):.4g}  max {float(values.max()):.4g}")
    figure = args.figure or f"{os.path.splitext(args.out)[0]}_{args.metric}.png"
    plot_curve_plane(surface, metric=args.metric).savefig(figure, dpi=150)
    print(f"figure: {figure}")
    return 0


def register(commands) -> None:
    """``curve eval`` and ``curve plane`` on the ``curve`` group's subparsers."""
    from fastloss.cli import _add_eval_options, _axis

    ev = commands.add_parser(
        "eval",
        help="loss, error and ensembles along a curve and the straight segment -> HDF5, PNG",
        description="Evaluate a curve checkpoint at --points values of t and the straight "
        "segment w1 -> w2 at the same t: loss (NLL + wd/2 |w|^2), NLL, accuracy and error on "
        "train and test, with BatchNorm statistics recomputed at each point, and the accuracy "
        "of the ensemble of w1 with each point. Writes the HDF5 file and two figures "
        "(<out>_profile.png, <out>_ensemble.png) and prints the summary.",
    )
    ev.add_argument("curve", help="curve checkpoint (written by `fastloss curve fit`)")
    ev.add_argument("--data", default="mnist1d", help="mnist1d, digits, or a data path")
    ev.add_argument("--train-samples", type=int, help="a seeded subset of the train set")
    ev.add_argument("--test-samples", type=int, help="a seeded subset of the test set")
    ev.add_argument("--data-seed", type=int, default=42)
    ev.add_argument("--points", type=int, default=61, help="values of t (default 61)")
    ev.add_argument("--wd", type=float, default=0.0, help="weight decay in the reported loss")
    ev.add_argument("--bn", choices=("recompute", "fixed"), default="recompute")
    ev.add_argument("--out", required=True, help="output HDF5 file")
    ev.add_argument("--figures", help="folder for the two PNGs (default: beside --out)")
    ev.add_argument("--batch-size", type=int)
    ev.add_argument("--dtype", choices=("float32", "bfloat16", "float64"), default="float32")
    ev.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    ev.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(run=_eval)

    plane = commands.add_parser(
        "plane",
        help="loss surface on the plane of a curve, with the curve drawn -> HDF5, PNG",
        description="The plane through w1, w2 and the bend (one bend) or the curve's best "
        "PCA plane (more bends), evaluated on a grid; the curve's projection is stored in "
        "the file and drawn over the contour. Default axes frame the whole curve.",
    )
    plane.add_argument("curve", help="curve checkpoint (written by `fastloss curve fit`)")
    _add_eval_options(plane)
    plane.add_argument("--y", type=_axis, help="y axis as lo:hi:n")
    plane.add_argument("--metric", default="train_loss", help="metric of the figure")
    plane.add_argument("--figure", help="PNG path (default: <out>_<metric>.png)")
    plane.set_defaults(run=_plane)
