"""``fastloss plane`` and ``fastloss line``: loss surfaces of checkpoints to HDF5."""

from __future__ import annotations

import argparse
import time

import numpy as np
from torch import nn

from fastloss.cli.options import (
    add_eval_options,
    axis,
    command,
    load_data_from,
    print_ranges,
    ranges,
    report,
    reports,
    run_options,
)
from fastloss.core import Grid, Line, Plane, Subspace
from fastloss.errors import ArgumentError
from fastloss.io import load_checkpoint
from fastloss.models import build_from_checkpoint
from fastloss.surfaces import evaluate


def register(commands: argparse._SubParsersAction) -> None:
    plane = commands.add_parser(
        "plane",
        help="loss surface on a plane -> HDF5",
        description="The plane through three checkpoints, or around "
        "one checkpoint along two random filter-normalised directions.",
    )
    add_plane_options(plane)
    add_eval_options(plane)
    command(plane, _plane, sharded=True)

    line = commands.add_parser(
        "line",
        help="loss along the segment between two checkpoints",
        description="1D interpolation w1 + t (w2 - w1) -> HDF5.",
    )
    line.add_argument("checkpoints", nargs=2)
    add_eval_options(line)
    command(line, _line, sharded=True)


def add_plane_options(p: argparse.ArgumentParser) -> None:
    """The plane's checkpoints and its random directions (``plane`` and ``profile``)."""
    p.add_argument("checkpoints", nargs="+", help="three checkpoints, or one")
    p.add_argument("--y", type=axis, help="y axis as lo:hi:n")
    p.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    p.add_argument("--norm", choices=("filter", "layer", "none"), default="filter")
    p.add_argument(
        "--keep-biasbn",
        action="store_true",
        help="random directions also move biases and norm parameters",
    )


def plane_from(args: argparse.Namespace) -> tuple[nn.Module, Plane, Grid]:
    """The model, the plane and the grid that `add_plane_options` and ``--x``/``--y`` name."""
    if len(args.checkpoints) not in (1, 3):
        raise ArgumentError(
            "give three checkpoints (the plane through them) or one (with two random directions)"
        )
    model = build_from_checkpoint(args.checkpoints[0])
    subspace: Plane
    if len(args.checkpoints) == 3:
        subspace = Plane.through(*(load_checkpoint(p)[0] for p in args.checkpoints))
    else:
        ignore = None if args.keep_biasbn else "biasbn"
        subspace = Plane.random(model, seed=args.seed, norm=args.norm, ignore=ignore)
    default = (-0.5, 1.5, 41) if len(args.checkpoints) == 3 else (-1.0, 1.0, 41)
    x = args.x or default
    y = args.y or (x if len(args.checkpoints) == 1 else (-0.5, 1.5, x[2]))
    return model, subspace, Grid(x=x, y=y)


def _plane(args: argparse.Namespace) -> int:
    model, subspace, grid = plane_from(args)
    _evaluate_to_file(args, subspace, model, grid)
    return 0


def _line(args: argparse.Namespace) -> int:
    model = build_from_checkpoint(args.checkpoints[0])
    states = [load_checkpoint(p)[0] for p in args.checkpoints]
    _evaluate_to_file(args, Line(*states), model, Grid(x=args.x or (-0.25, 1.25, 61)))
    return 0


def _evaluate_to_file(
    args: argparse.Namespace, subspace: Subspace, model: nn.Module, grid: Grid
) -> None:
    train_data, test_data = load_data_from(args)
    start = time.perf_counter()
    surface = evaluate(
        model,
        subspace,
        grid,
        train=train_data,
        test=test_data,
        out=args.out,
        **run_options(args),
    )
    seconds = time.perf_counter() - start
    if not reports():
        return
    points = int(np.prod(surface.shape))
    now = int(surface.attrs["evaluated"])
    resumed = f"; {points - now} were done already" if now < points else ""
    print(f"{args.out}: {points} points in {seconds:.1f} s ({now / seconds:.1f} points/s{resumed})")
    print_ranges(surface)
    report(
        args,
        out=args.out,
        files=[args.out],
        points=points,
        evaluated=now,
        seconds=seconds,
        points_per_second=now / seconds,
        metrics=ranges(surface),
    )
