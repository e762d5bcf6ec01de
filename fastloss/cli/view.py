"""``fastloss view``: a result file as one self-contained HTML page."""

from __future__ import annotations

import argparse

from fastloss.cli.options import command, report
from fastloss.viz.page import build_page, page_output


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "view",
        help="explore a result in a browser",
        description="Write one self-contained HTML page (no network needed) to explore a "
        "surface, a curve evaluation, an ensemble evaluation or a video's frames: a 3D "
        "surface and its contour, switches between metrics and log or linear scales, the "
        "networks and the curve, a slider over the frames.",
    )
    p.add_argument("file", help="result HDF5 file")
    p.add_argument("--out", help="HTML path (default: the file's name with .html)")
    command(p, _view)


def _view(args: argparse.Namespace) -> int:
    out = page_output(args.file, args.out)  # before reading: a bad path fails at once
    page = build_page(args.file)
    written = page.save(out)
    print(f"{written}: {page.summary}")
    report(args, out=written, files=[written], kind=page.kind, summary=page.summary)
    if page.note:
        print(f"note: {page.note}")
        report(args, note=page.note)
    return 0
