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
    export,
    info,
    mpo,
    plot,
    profile,
    surfaces,
    train,
    video,
    view,
    vnet,
)
from fastloss.cli.options import as_flags, error_object, summary_output, usage_errors_as_json
from fastloss.engine import init_from_environment, keep_freed_memory, leave, world
from fastloss.errors import ArgumentError, FastlossError

GROUPS = (
    info,
    train,
    surfaces,
    profile,
    plot,
    view,
    export,
    demo,
    curve,
    mpo,
    ensembles,
    vnet,
    video,
)


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like fastloss's own (status 2); its
    subcommands' parsers are of this class too."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fastloss", description="Loss surfaces, mode connectivity and fast ensembling."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(commands)
    return parser


def sharded_commands() -> list[str]:
    """The commands that share their points under torchrun (`fastloss.cli.options.command`)."""
    found: list[str] = []

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:  # argparse keeps no public list of subcommands
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{prefix} {name}".strip())
        if parser.get_default("sharded"):
            found.append(prefix)

    walk(build_parser(), "")
    return found


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
    argv = _join_axis_values(sys.argv[1:] if argv is None else argv)
    with usage_errors_as_json(argv):
        args = build_parser().parse_args(argv)
    keep_freed_memory()  # the process is ours: reuse large buffers (fastloss.engine.memory)
    try:
        if init_from_environment():
            if not args.sharded:
                raise ArgumentError(
                    f"fastloss {args.command} does not run under torchrun (those that do: "
                    f"{', '.join(sharded_commands())}); run it as one process"
                )
            if world()[0] != 0:  # rank 0 reports; the others' prints would repeat it
                _silence_stdout()
        with summary_output(args):  # --json: one object on stdout, the human lines nowhere
            return args.run(args)
    except FastlossError as error:
        message = " ".join(as_flags(str(error), args.flags).split())
        print(f"fastloss {args.command}: {message}", file=sys.stderr)
        error_object(args, message)
        return 2
    except BrokenPipeError:  # `fastloss ... | head`: the reader left; results are written
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports it
    finally:
        leave()  # under torchrun: before Python's shutdown, which a gloo group can abort


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced, or without a descriptor
        pass


if __name__ == "__main__":
    raise SystemExit(main())
