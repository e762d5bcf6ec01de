"""``fastloss plot``: draw a result file as a PNG."""

from __future__ import annotations

import argparse

from fastloss.cli.options import command, report
from fastloss.viz import plot_file


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "plot",
        help="draw a surface or curve file",
        description="Draw a surface or a curve evaluation as a PNG: fastloss's HDF5 files, "
        "loss-landscape's surface files, dnn-mode-connectivity's plane.npz and curve.npz.",
    )
    p.add_argument("surface", help="surface or curve evaluation file")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--metric", default="train_loss")
    p.add_argument("--kind", default="contour", choices=("contour", "heatmap", "surface3d"))
    command(p, _plot)


def _plot(args: argparse.Namespace) -> int:
    notes: list[str] = []

    def note(text: str) -> None:  # another tool's file, converted: say what changed
        print(f"note: {text}")
        notes.append(text)

    figure = plot_file(args.surface, args.out, metric=args.metric, kind=args.kind, on_note=note)
    print(figure)
    report(args, out=args.out, files=[figure], metric=args.metric, kind=args.kind, notes=notes)
    return 0
