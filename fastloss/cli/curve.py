"""``fastloss curve fit | eval | plane``: mode connectivity from the command line."""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fastloss.cli.options import (
    add_data_options,
    add_eval_options,
    add_run_options,
    axis,
    check_fits,
    command,
    load_data_from,
    print_ranges,
    ranges,
    report,
    reports,
    run_options,
)
from fastloss.core import Grid
from fastloss.curves import (
    curve_plane,
    curve_points,
    evaluate_curve,
    evaluate_curve_plane,
    fit_curve,
    frame_curves,
    load_curve_model,
    make_curve,
)
from fastloss.curves.fit_step import OPTIMIZERS
from fastloss.errors import ArgumentError
from fastloss.io import load_checkpoint
from fastloss.io.atomic import check_output_path
from fastloss.models import SPEC_KEYS, architecture_difference, build_from_checkpoint
from fastloss.training import FIT_SCHEDULES
from fastloss.viz import plot_curve_plane, save_curve_figures


def register(commands: argparse._SubParsersAction) -> None:
    curve = commands.add_parser(
        "curve",
        help="mode connectivity: fit, evaluate and draw curves between two networks",
        description="Curves of low loss between two checkpoints (Garipov et al.).",
    )
    group = curve.add_subparsers(dest="curve_command", required=True)
    _register_fit(group)
    _register_eval(group)
    _register_plane(group)


# --------------------------------------------------------------------------- curve fit


def _register_fit(commands: argparse._SubParsersAction) -> None:
    d = {k: p.default for k, p in inspect.signature(fit_curve).parameters.items()}
    p = commands.add_parser(
        "fit",
        help="fit a curve of low loss between two checkpoints",
        description="Train the bends of a Bezier curve or polygonal chain between two "
        "checkpoints of the same architecture so that the loss along it is low (Garipov et "
        "al.). Writes DIR/curve.pt (the latest curve), DIR/steps/step-NNNNNNN.pt snapshots "
        "and DIR/state.pt; rerunning the same command resumes an interrupted fit.",
    )
    p.add_argument("w1", help="checkpoint of the first endpoint (gives the architecture)")
    p.add_argument("w2", help="checkpoint of the second endpoint")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--kind", choices=("bezier", "polychain"), default="bezier", help="default: bezier"
    )
    p.add_argument("--bends", type=int, default=1, help="bends (control points) to fit, default: 1")
    p.add_argument(
        "--init",
        nargs="+",
        metavar="BEND.pt",
        help="checkpoints to start the bends from (default: evenly spaced on the segment)",
    )
    p.add_argument(
        "--data", default="mnist1d", help="mnist1d, digits, or a data path, default: mnist1d"
    )
    p.add_argument("--train-samples", type=int, help="fit on a seeded subset of the train set")
    p.add_argument("--data-seed", type=int, default=42, help="default: %(default)s")
    p.add_argument("--epochs", type=int, default=d["epochs"], help="default: %(default)s")
    p.add_argument("--lr", type=float, default=d["lr"], help="default: %(default)s")
    p.add_argument(
        "--wd",
        type=float,
        default=d["wd"],
        help="weight decay on the curve's points, default: %(default)s",
    )
    p.add_argument(
        "--samples-per-step",
        type=int,
        default=d["samples_per_step"],
        help="points t ~ U[0, 1] per step, in one batched pass; default: 1, the paper's estimator",
    )
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="default: %(default)s")
    p.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=d["optimizer"], help="default: %(default)s"
    )
    p.add_argument(
        "--schedule",
        choices=FIT_SCHEDULES,
        default=d["schedule"],
        help="garipov (default): constant, then linearly down to 1%% from 50%% to 90%% of the fit",
    )
    p.add_argument("--seed", type=int, default=d["seed"], help="default: %(default)s")
    p.add_argument(
        "--save-every",
        type=int,
        help="also snapshot the curve every this many steps (default: first and last)",
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a fit made with other settings"
    )
    command(p, _fit)


def _fit(args: argparse.Namespace) -> int:
    model = build_from_checkpoint(args.w1)
    state1, meta1 = load_checkpoint(args.w1)
    state2, meta2 = load_checkpoint(args.w2)
    key = architecture_difference(meta1, meta2)
    if key is not None:
        raise ArgumentError(
            f"{args.w1} and {args.w2} are different architectures: {key} is "
            f"{meta1.get(key)!r} in the first and {meta2[key]!r} in the second"
        )
    init = [load_checkpoint(path)[0] for path in args.init or []] or None
    if init is not None and len(init) != args.bends:
        raise ArgumentError(f"--init gives {len(init)} checkpoint(s) for --bends {args.bends}")
    curve = make_curve(args.kind, state1, state2, args.bends, init)
    train, _ = load_data_from(args)
    check_fits(train, meta1, args.w1, args.data)
    try:
        fitted, history = fit_curve(
            model,
            curve,
            train,
            epochs=args.epochs,
            lr=args.lr,
            wd=args.wd,
            samples_per_step=args.samples_per_step,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            schedule=args.schedule,
            seed=args.seed,
            out=args.out,
            save_every=args.save_every,
            overwrite=args.overwrite,
            device=args.device,
            progress=not args.quiet,
            model_meta={**{k: meta1[k] for k in SPEC_KEYS if k in meta1}, "data": args.data},
        )
    except KeyboardInterrupt:
        print(
            f"fastloss curve fit: interrupted; {args.out} keeps the last saved state, and the "
            "same command resumes from it",
            file=sys.stderr,
        )
        return 130
    out = Path(args.out)
    resumed = history["resumed_from"]
    how = "already finished" if history["already_finished"] else f"{history['seconds']:.1f} s"
    print(
        f"{out / 'curve.pt'}: {fitted.kind} curve with {fitted.bends} bend(s), "
        f"{args.epochs} epochs ({history['steps']} steps), {how}"
        + (f", resumed at step {resumed}" if resumed else "")
    )
    print(f"  snapshots in {out / 'steps'}, resume state in {out / 'state.pt'}")
    print(
        f"  final train loss {history['train_loss']:.4f}, accuracy {history['train_acc']:.2f}% "
        "(last epoch, mean over t ~ U[0, 1])"
    )
    report(
        args,
        out=args.out,
        files=[out / "curve.pt", out / "state.pt"],
        curve=out / "curve.pt",
        snapshots=out / "steps",
        kind=fitted.kind,
        bends=fitted.bends,
        epochs=args.epochs,
        steps=history["steps"],
        seconds=history["seconds"],
        already_finished=history["already_finished"],
        resumed_from=resumed,
        train_loss=history["train_loss"],
        train_acc=history["train_acc"],
    )
    return 0


# --------------------------------------------------------------------------- curve eval


def _register_eval(commands: argparse._SubParsersAction) -> None:
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
    add_data_options(ev)
    ev.add_argument("--points", type=int, default=61, help="values of t (default 61)")
    ev.add_argument("--wd", type=float, default=0.0, help="weight decay in the reported loss")
    ev.add_argument("--out", required=True, help="output HDF5 file")
    ev.add_argument("--figures", help="folder for the two PNGs (default: beside --out)")
    add_run_options(ev)
    command(ev, _eval, sharded=True)


def _provenance(args: argparse.Namespace, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "curve_file": os.path.abspath(args.curve),
        "data_spec": str(args.data),
        "data_seed": args.data_seed,
        "model_spec": {k: meta.get(k) for k in SPEC_KEYS},
    }


def _eval(args: argparse.Namespace) -> int:
    curve, model, meta = load_curve_model(args.curve)
    if args.figures:
        os.makedirs(args.figures, exist_ok=True)
    train, test = load_data_from(args)
    check_fits(train, meta, args.curve, args.data)
    result = evaluate_curve(
        model,
        curve,
        train=train,
        test=test,
        points=args.points,
        wd=args.wd,
        out=args.out,
        **run_options(args),
        attrs=_provenance(args, meta),
    )
    if not reports():
        return 0
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
    report(
        args,
        out=args.out,
        files=[args.out, *figures],
        curve=args.curve,
        kind=curve.kind,
        bends=curve.J - 2,
        points=args.points,
        seconds=seconds,
        metrics={name: result.summary(name) for name in result.values},
    )
    return 0


# --------------------------------------------------------------------------- curve plane


def _register_plane(commands: argparse._SubParsersAction) -> None:
    plane = commands.add_parser(
        "plane",
        help="loss surface on the plane of a curve, with the curve drawn -> HDF5, PNG",
        description="The plane through w1, w2 and the bend (one bend) or the curve's best "
        "PCA plane (more bends), evaluated on a grid; the curve's projection is stored in "
        "the file and drawn over the contour. Default axes frame the whole curve.",
    )
    plane.add_argument("curve", help="curve checkpoint (written by `fastloss curve fit`)")
    add_eval_options(plane)
    plane.add_argument("--y", type=axis, help="y axis as lo:hi:n")
    plane.add_argument("--metric", default="train_loss", help="metric of the figure")
    plane.add_argument("--figure", help="PNG path (default: <out>_<metric>.png)")
    command(plane, _plane, sharded=True)


def _plane(args: argparse.Namespace) -> int:
    curve, model, meta = load_curve_model(args.curve)
    _, info = curve_plane(curve)
    grid = frame_curves(curve_points(info), args.x, args.y)
    train, test = load_data_from(args)
    check_fits(train, meta, args.curve, args.data)
    figure = args.figure or f"{os.path.splitext(args.out)[0]}_{args.metric}.png"
    check_output_path(figure, overwrite=True)  # its folder, before the work
    start = time.perf_counter()
    surface = evaluate_curve_plane(
        model,
        curve,
        grid,
        train=train,
        test=test,
        out=args.out,
        **run_options(args),
    )
    seconds = time.perf_counter() - start
    if not reports():
        return 0
    stored = surface.attrs["curve"]
    kind = (
        f"PCA plane of the curve, {stored['residual']:.2%} of it outside"
        if stored["plane"] == "pca"
        else "plane through w1, w2 and the bend"
    )
    x, y = grid.x, _y_axis(grid)
    axes = f"x {x[0]:.3g}:{x[1]:.3g}:{x[2]}, y {y[0]:.3g}:{y[1]:.3g}:{y[2]}"
    points = int(np.prod(surface.shape))
    print(f"{args.out}: {points} points in {seconds:.1f} s; {axes}; {kind}")
    print_ranges(surface)
    plot_curve_plane(surface, metric=args.metric).savefig(figure, dpi=150)
    print(f"figure: {figure}")
    report(
        args,
        out=args.out,
        files=[args.out, figure],
        points=points,
        evaluated=int(surface.attrs["evaluated"]),
        seconds=seconds,
        points_per_second=int(surface.attrs["evaluated"]) / seconds,
        x=x,
        y=y,
        plane=stored["plane"],
        residual=stored.get("residual"),
        metrics=ranges(surface),
    )
    return 0


def _y_axis(grid: Grid) -> tuple[float, float, int]:
    assert grid.y is not None  # frame_curves always gives a plane
    return grid.y
