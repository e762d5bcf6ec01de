"""``fastloss mpo fit | eval | bn-experiment``: multi-point optimization from the command line."""

from __future__ import annotations

import argparse
import inspect
import sys
from dataclasses import replace
from pathlib import Path

import torch

from fastloss.cli.options import (
    DTYPES,
    add_data_options,
    check_fits,
    command,
    dtype,
    load_data_from,
    report,
    reports,
)
from fastloss.data import num_classes
from fastloss.errors import ArgumentError
from fastloss.io.atomic import check_output_path
from fastloss.models import SPEC_KEYS, build_model
from fastloss.mpo import (
    BUILTIN_PATTERNS,
    evaluate_pattern,
    fit_pattern,
    load_plane_model,
    resolve_pattern,
)
from fastloss.mpo.experiment import PAPER, PAPER_PS, SMALL_PS, Sizes, bn_experiment
from fastloss.mpo.patterns import parse_size
from fastloss.mpo.plane import INITS
from fastloss.training import FIT_SCHEDULES
from fastloss.viz.mpo import plot_pattern_surface, save_bn_figures


def register(commands: argparse._SubParsersAction) -> None:
    mpo = commands.add_parser(
        "mpo",
        help="multi-point optimization: planes whose loss landscape draws a picture",
        description="Multi-point optimization (Skorokhodov & Burtsev 2019): fit a plane of "
        "weights whose loss landscape draws a binary picture, evaluate it, and run the "
        "batch-norm smoothing experiment.",
    )
    group = mpo.add_subparsers(dest="mpo_command", required=True)
    _register_fit(group)
    _register_eval(group)
    _register_bn_experiment(group)


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ArgumentError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# --------------------------------------------------------------------------- mpo fit


def _register_fit(commands: argparse._SubParsersAction) -> None:
    d = {k: p.default for k, p in inspect.signature(fit_pattern).parameters.items()}
    p = commands.add_parser(
        "fit",
        help="fit a plane whose loss landscape draws PATTERN",
        description="Train θ = {w_O, w_up, φ_right, s} so that the cells of PATTERN marked "
        "good have low loss and the bad ones high loss. Writes DIR/plane.pt (the latest "
        "plane with its pattern), DIR/steps/step-NNNNNNN.pt snapshots and DIR/state.pt; "
        "rerunning the same command resumes an interrupted fit.",
    )
    p.add_argument(
        "pattern",
        help=f"a built-in pattern ({', '.join(BUILTIN_PATTERNS)}), random:P (a random mask "
        "with fill probability P), or a picture file (PNG, JPEG: dark or opaque pixels are "
        "good)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--size", type=_size, help="pattern cells as W or WxH (default 50x50; random: 30x30)"
    )
    p.add_argument("--pattern-seed", type=int, default=0, help="seed of random:P masks")
    p.add_argument("--invert", action="store_true", help="swap a picture's good and bad cells")
    p.add_argument(
        "--train-uniform",
        action="store_true",
        help="also train on cells whose 3x3 neighbourhood is all one class (left out by "
        "default: the model interpolates them)",
    )
    p.add_argument(
        "--model", default="mlp", help="mlp (default), mpo-cnn, mpo-cnn-bn, ... or module:callable"
    )
    p.add_argument("--widths", type=int, nargs="+", help="hidden widths of the mlp")
    add_data_options(p, default="digits")
    p.add_argument("--steps", type=int, default=d["steps"], help="default: %(default)s")
    p.add_argument("--lr", type=float, default=d["lr"], help="Adam's, default: %(default)s")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="default: %(default)s")
    p.add_argument(
        "--cells",
        type=int,
        nargs=2,
        metavar=("GOOD", "BAD"),
        default=(d["good_per_step"], d["bad_per_step"]),
        help="good and bad cells per step, default: 50 50",
    )
    p.add_argument(
        "--bad-clamp",
        type=float,
        default=d["bad_clamp"],
        help="bad cells' cross-entropy counts up to this, default: %(default)s",
    )
    p.add_argument(
        "--clip", type=float, default=d["clip"], help="gradient norm clip, default: %(default)s"
    )
    p.add_argument(
        "--schedule",
        choices=FIT_SCHEDULES,
        default=d["schedule"],
        help="learning rate over the fit: constant (default, the paper's), cosine (to 0), "
        "garipov (constant, then linearly down to 1%%)",
    )
    p.add_argument(
        "--cells-per-pass",
        type=int,
        help="run each step's cells in passes of this many (same step, less memory)",
    )
    p.add_argument("--s", type=float, default=d["s"], help="initial scale s, default: %(default)s")
    p.add_argument("--init", choices=INITS, default=d["init"], help="default: %(default)s")
    p.add_argument("--seed", type=int, default=d["seed"], help="default: %(default)s")
    p.add_argument(
        "--save-every",
        type=int,
        help="also snapshot θ every this many steps (default: first and last)",
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a fit made with other settings"
    )
    command(p, _fit)


def _fit(args: argparse.Namespace) -> int:
    pattern = resolve_pattern(args.pattern, args.size, args.pattern_seed, args.invert)
    train, test = load_data_from(args)
    classes = num_classes(train, test)
    torch.manual_seed(args.seed)
    kwargs = {"widths": tuple(args.widths)} if args.widths else {}
    if args.widths and args.model != "mlp":
        raise ArgumentError("--widths is an option of --model mlp")
    model = build_model(args.model, tuple(train[0].shape[1:]), classes, **kwargs)
    spec = {**getattr(model, "fastloss_spec", {}), "data": args.data}
    try:
        theta, history = fit_pattern(
            model,
            pattern,
            train,
            steps=args.steps,
            lr=args.lr,
            batch_size=args.batch_size,
            good_per_step=args.cells[0],
            bad_per_step=args.cells[1],
            bad_clamp=args.bad_clamp,
            clip=args.clip,
            schedule=args.schedule,
            s=args.s,
            init=args.init,
            ignore_uniform=not args.train_uniform,
            seed=args.seed,
            out=args.out,
            save_every=args.save_every,
            overwrite=args.overwrite,
            device=args.device,
            progress=not args.quiet,
            model_meta={k: spec[k] for k in (*SPEC_KEYS, "data") if k in spec},
            cells_per_pass=args.cells_per_pass,
        )
    except KeyboardInterrupt:
        print(
            f"fastloss mpo fit: interrupted; {args.out} keeps the last saved state, and the "
            "same command resumes from it",
            file=sys.stderr,
        )
        return 130
    out = Path(args.out)
    resumed = history["resumed_from"]
    how = "already finished" if history["already_finished"] else f"{history['seconds']:.1f} s"
    H, W = pattern.shape
    print(
        f"{out / 'plane.pt'}: {pattern.name} ({W}x{H} cells), {args.model} on {args.data}, "
        f"{history['steps']} steps, {how}" + (f", resumed at step {resumed}" if resumed else "")
    )
    last = history["log"][-1] if history["log"] else None
    if last is not None:
        print(
            f"  steps {last['from_step']}-{last['step']} (their cells, "
            f"train mode): good acc {last['good_acc']:.3f}, bad acc {last['bad_acc']:.3f}, "
            f"gap {last['gap']:.3f}; s = {float(theta.s):.4f}"
        )
    print(f"  next: fastloss mpo eval {out / 'plane.pt'} --out {out / 'surface.h5'}")
    report(
        args,
        out=args.out,
        files=[out / "plane.pt", out / "state.pt"],
        plane=out / "plane.pt",
        snapshots=out / "steps",
        pattern=pattern.name,
        cells=[W, H],
        model=args.model,
        data=args.data,
        steps=history["steps"],
        seconds=history["seconds"],
        already_finished=history["already_finished"],
        resumed_from=resumed,
        s=float(theta.s),
        last=None
        if last is None
        else {k: last[k] for k in ("from_step", "step", "good_acc", "bad_acc", "gap")},
    )
    return 0


# --------------------------------------------------------------------------- mpo eval


def _register_eval(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "eval",
        help="every cell of a fitted plane on train and test -> HDF5 and a figure",
        description="Loss and accuracy of every cell of the plane's pattern on train and "
        "test data (BatchNorm statistics recomputed per cell), written as a surface in "
        "the loss-landscape layout with the pattern beside it; prints the accuracy gap "
        "and the IoU of the thresholded accuracy map, and draws pattern, loss and accuracy "
        "side by side.",
    )
    p.add_argument("plane", help="DIR/plane.pt from fastloss mpo fit")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--figure", help="PNG path (default: the output with .png)")
    add_data_options(p, default=None, default_help="the data the plane was fitted on")
    p.add_argument(
        "--threshold",
        type=float,
        help="accuracy (fraction) from which a cell counts as found, for the IoU "
        "(default: half way from chance to 1, 0.55 for 10 classes)",
    )
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    command(p, _eval, sharded=True)


def _eval(args: argparse.Namespace) -> int:
    theta, pattern, model, meta = load_plane_model(args.plane)
    if args.data is None:
        if "data" not in meta:
            raise ArgumentError(
                f"{args.plane} does not say which data it was fitted on; give --data"
            )
        args.data = meta["data"]
    train, test = load_data_from(args)
    check_fits(train, meta, args.plane, args.data)
    figure = args.figure or str(Path(args.out).with_suffix(".png"))
    check_output_path(figure, args.overwrite)
    surface, scores = evaluate_pattern(
        model,
        theta,
        pattern,
        train,
        test,
        threshold=args.threshold,
        ignore_uniform=bool(meta.get("fit_settings", {}).get("ignore_uniform") is not False),
        batch_size=args.batch_size,
        device=args.device,
        dtype=dtype(args.dtype),
        out=args.out,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    if not reports():
        return 0
    H, W = pattern.shape
    print(f"{args.out}: {pattern.name}, {W}x{H} cells, s = {float(theta.s):.4f}")
    for split, s in scores.items():
        print(
            f"  {split:5s} accuracy on good cells {s['good_acc']:.3f}, on bad {s['bad_acc']:.3f}, "
            f"gap {s['gap']:.3f}, IoU {s['iou']:.3f} (threshold {s['threshold']:.2f})"
        )
    plot_pattern_surface(surface, title=f"{pattern.name}: {meta['model']} on {args.data}").savefig(
        figure, dpi=130
    )
    print(f"  figure: {figure}")
    report(
        args,
        out=args.out,
        files=[args.out, figure],
        pattern=pattern.name,
        cells=[W, H],
        s=float(theta.s),
        **{
            split: {k: s[k] for k in ("good_acc", "bad_acc", "gap", "iou", "threshold")}
            for split, s in scores.items()
        },
    )
    return 0


# --------------------------------------------------------------------------- bn-experiment


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers such as 0.1,0.5,0.9, got {text!r}"
        ) from None


def _register_bn_experiment(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "bn-experiment",
        help="the paper's batch-norm experiment (Fig. 4) on random masks",
        description="Random masks with fill probability p, fitted with the six-conv net "
        "without and with BatchNorm over several seeds; writes DIR/runs.csv, "
        "DIR/summary.json, DIR/fig4a.png and DIR/fig4b.png. The defaults are sized for a "
        "2-core CPU (about ten minutes on digits); --paper gives the paper's sizes. "
        "Finished runs are kept in DIR/runs/, so a rerun resumes.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--ps",
        type=_floats,
        help="fill probabilities, default 0.1,0.3,0.5,0.7,0.9 (--paper: 0.1,0.2,...,0.9)",
    )
    p.add_argument("--seeds", type=int, help="seeds per p, default: 2 (--paper: 5)")
    p.add_argument("--size", type=_size, help="mask size W or WxH, default 12x12 (paper: 30)")
    p.add_argument("--steps", type=int, help=f"steps per fit, default {Sizes().steps}")
    p.add_argument(
        "--channels", type=int, nargs=6, help="the six convs' widths, default 4 4 8 8 16 16"
    )
    p.add_argument("--hidden", type=int, help=f"dense width, default {Sizes().hidden}")
    p.add_argument("--lr", type=float, help=f"default {Sizes().lr}")
    p.add_argument("--batch-size", type=int, help=f"default {Sizes().batch_size}")
    p.add_argument(
        "--cells",
        type=int,
        help=f"good (and bad) cells per step, default {Sizes().cells_per_step}",
    )
    p.add_argument(
        "--paper",
        action="store_true",
        help="the paper's sizes: p from 0.1 to 0.9, 30x30 masks, channels 8 8 32 32 64 64, "
        "hidden 128, batch 512, 50 + 50 cells, lr 3e-4, 5 seeds, 10000 steps (hours on a "
        "GPU); other flags still override",
    )
    add_data_options(p, default="digits")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="redo runs made with other settings")
    command(p, _bn_experiment)


def _bn_experiment(args: argparse.Namespace) -> int:
    given = {
        "size": args.size,
        "channels": tuple(args.channels) if args.channels else None,
        "hidden": args.hidden,
        "steps": args.steps,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "cells_per_step": args.cells,
    }
    sizes = replace(
        PAPER if args.paper else Sizes(), **{k: v for k, v in given.items() if v is not None}
    )
    seeds = args.seeds if args.seeds is not None else (5 if args.paper else 2)
    ps = args.ps or list(PAPER_PS if args.paper else SMALL_PS)
    train, test = load_data_from(args)
    result = bn_experiment(
        train,
        test,
        ps=ps,
        seeds=list(range(seeds)),
        sizes=sizes,
        out=args.out,
        overwrite=args.overwrite,
        device=args.device,
        progress=not args.quiet,
    )
    out = Path(args.out)
    save_bn_figures(result["runs"], out / "fig4a.png", out / "fig4b.png")
    print(f"{out}: {len(result['runs'])} runs ({len(ps)} p x {seeds} seeds x 2 models)")
    print("     p   gap no BN        gap BN      no BN - BN   acc good/bad no BN   acc good/bad BN")
    for r in result["summary"]:
        print(
            f"  {r['p']:4.2f}  {r['nobn_gap']:.3f} ± {r['nobn_gap_std']:.3f}  "
            f"{r['bn_gap']:.3f} ± {r['bn_gap_std']:.3f}  {r['gap_diff']:+.3f} ± "
            f"{r['gap_diff_std']:.3f}   {r['nobn_good_acc']:.3f} / {r['nobn_bad_acc']:.3f}"
            f"        {r['bn_good_acc']:.3f} / {r['bn_bad_acc']:.3f}"
        )
    verdict = "holds" if result["claim_holds"] else "does not hold"
    print(
        f"  the paper's claim (BN makes random masks harder to fit: smaller gap, for every "
        f"seed) {verdict} here"
    )
    print(
        f"  table: {out / 'runs.csv'}, {out / 'summary.json'}; figures: {out / 'fig4a.png'}, "
        f"{out / 'fig4b.png'}"
    )
    report(
        args,
        out=args.out,
        files=[out / name for name in ("runs.csv", "summary.json", "fig4a.png", "fig4b.png")],
        runs=len(result["runs"]),
        ps=ps,
        seeds=seeds,
        summary=result["summary"],
        claim_holds=result["claim_holds"],
    )
    return 0
