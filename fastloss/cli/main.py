"""The `fastloss` command line: one module per command group, each a parser and a call into the
library. A `FastlossError` (a bad file, bad data, bad settings) is printed on one line, with
the API's argument names shown as this command's flags, and the exit status is 2."""

from __future__ import annotations

import argparse
import os
import sys

from fastloss.cli import (
    curve,
    demo,
    ensembles,
    info,
    mpo,
    plot,
    profile,
    surfaces,
    train,
    video,
    vnet,
)
from fastloss.cli.options import as_flags
from fastloss.engine import init_from_environment, keep_freed_memory
from fastloss.errors import ArgumentError, FastlossError

GROUPS = (info, train, surfaces, profile, plot, demo, curve, mpo, ensembles, vnet, video)
SHARDED_COMMANDS = ("plane", "line")  # those that share their points under torchrun


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastloss", description="Loss surfaces, mode connectivity and fast ensembling."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(commands)
    return parser


def _join_axis_values(argv: list[str]) -> list[str]:
    """``--x -0.5:1.5:41`` -> ``--x=-0.5:1.5:41``: argparse would read the value as an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in ("--x", "--y") and arg.startswith("-"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_join_axis_values(sys.argv[1:] if argv is None else argv))
    keep_freed_memory()  # the process is ours: reuse large buffers (fastloss.engine.memory)
    try:
        if init_from_environment() and args.command not in SHARDED_COMMANDS:
            raise ArgumentError(
                f"fastloss {args.command} does not run under torchrun yet (those that do: "
                f"{', '.join(SHARDED_COMMANDS)}); run it as one process"
            )
        return args.run(args)
    except FastlossError as error:
        message = " ".join(as_flags(str(error), args.flags).split())
        print(f"fastloss {args.command}: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `fastloss ... | head`: the reader left; results are written
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports it


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced, or without a descriptor
        pass


if __name__ == "__main__":
    raise SystemExit(main())
