"""``fastloss export``: a surface as a VTK mesh for ParaView."""

from __future__ import annotations

import argparse

from fastloss.cli.options import command, report
from fastloss.io.vtk import export_vtk


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export",
        help="write a surface as a VTK mesh for ParaView",
        description="Write a surface (fastloss's, loss-landscape's or dnn-mode-connectivity's "
        "plane.npz; or one frame of a video) as a VTK mesh for ParaView: points at (x, y, "
        "value) joined by quads, so it opens as a surface, every metric as point data. "
        "meshio writes .vtu (XML unstructured grid) or .vtk (legacy); an existing output is "
        "replaced, as plot's figures are.",
    )
    p.add_argument("surface", help="surface file, or a video's frames file with --frame")
    p.add_argument("--vtk", required=True, help="output path: .vtu (ParaView's XML) or .vtk")
    p.add_argument("--metric", default="train_loss", help="the height z (default train_loss)")
    p.add_argument("--log", action="store_true", help="z = log10 of the (clipped) values")
    p.add_argument("--zmax", type=float, help="clip values above this before the log")
    p.add_argument("--frame", type=int, help="the frame to export from a video's frames file")
    command(p, _export)


def _export(args: argparse.Namespace) -> int:
    notes: list[str] = []

    def note(text: str) -> None:
        print(f"note: {text}")
        notes.append(text)

    out = export_vtk(
        args.surface,
        args.vtk,
        metric=args.metric,
        log=args.log,
        zmax=args.zmax,
        frame=args.frame,
        on_note=note,
    )
    print(out)
    report(args, out=out, files=[out], metric=args.metric, notes=notes)
    return 0
