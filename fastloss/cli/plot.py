"""``fastloss plot``: draw a result file as a PNG."""

from __future__ import annotations

import argparse

from fastloss.cli.options import command
from fastloss.viz import plot_file


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "plot", help="draw a surface file", description="Draw a surface HDF5 file as a PNG."
    )
    p.add_argument("surface", help="surface HDF5 file")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--metric", default="train_loss")
    p.add_argument("--kind", default="contour", choices=("contour", "heatmap", "surface3d"))
    command(p, _plot)


def _plot(args: argparse.Namespace) -> int:
    print(plot_file(args.surface, args.out, metric=args.metric, kind=args.kind))
    return 0
