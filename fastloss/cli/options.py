"""What the command groups share: argument types, data and evaluation options, every
command's ``--quiet`` and ``--json`` and its summary (`report`), and how a library message's
API arguments read as this command's flags."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastloss.data import Dataset, load_data, subsample
from fastloss.engine import world
from fastloss.errors import DataError, OutputExistsError
from fastloss.io import Surface

DTYPES = ("float32", "bfloat16", "float64")


def axis(text: str) -> tuple[float, float, int]:
    """'lo:hi:n' -> (lo, hi, n)."""
    try:
        lo, hi, n = text.split(":")
        return float(lo), float(hi), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected lo:hi:n such as -0.5:1.5:41, got {text!r}"
        ) from None


def size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 640x480, got {text!r}"
        ) from None


def dtype(name: str | None) -> torch.dtype | None:
    return {
        None: None,
        "float32": None,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float64": torch.float64,
    }[name]


def add_data_options(
    p: argparse.ArgumentParser, default: str | None = "mnist1d", default_help: str | None = None
) -> None:
    p.add_argument(
        "--data",
        default=default,
        help="mnist1d, digits, or a path to IDX / CIFAR / .npz data "
        f"(default {default_help or default})",
    )
    p.add_argument("--train-samples", type=int, help="use a seeded subset of the train set")
    p.add_argument("--test-samples", type=int, help="use a seeded subset of the test set")
    p.add_argument("--data-seed", type=int, default=42)


def load_data_from(args: argparse.Namespace) -> tuple[Dataset, Dataset]:
    """The (train, test) data the options name, subsampled as asked."""
    train, test = load_data(args.data, seed=args.data_seed)
    train = subsample(train, args.train_samples, seed=args.data_seed)
    test = subsample(test, getattr(args, "test_samples", None), seed=args.data_seed)
    return train, test


def add_device_options(p: argparse.ArgumentParser) -> None:
    """BN mode, batch size and device: how any evaluation runs."""
    p.add_argument(
        "--bn",
        choices=("recompute", "fixed"),
        default="recompute",
        help="BatchNorm statistics: recomputed at each point (default) or those of "
        "the first network",
    )
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """`add_device_options`, dtype and overwrite: every evaluating command."""
    add_device_options(p)
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output made with other settings",
    )


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The library arguments `add_run_options` sets: bn, batch_size, device, dtype, overwrite
    and progress."""
    return {
        "bn": args.bn,
        "batch_size": args.batch_size,
        "device": args.device,
        "dtype": dtype(args.dtype),
        "overwrite": args.overwrite,
        "progress": not args.quiet,
    }


def print_ranges(surface: Surface) -> None:
    """Each metric's min and max, one line each (what the surface commands print)."""
    for name, found in ranges(surface).items():
        print(f"  {name:10s} min {found['min']:.4g}  max {found['max']:.4g}")


def ranges(surface: Surface) -> dict[str, dict[str, float]]:
    """Each metric's min and max, as `print_ranges` prints them: `report`'s ``metrics``."""
    return {
        name: {"min": float(values.min()), "max": float(values.max())}
        for name, values in surface.values.items()
    }


def add_eval_options(p: argparse.ArgumentParser) -> None:
    """A grid evaluation to an HDF5 file: data, output, x axis and the run options."""
    add_data_options(p)
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--x", type=axis, help="x axis as lo:hi:n")
    add_run_options(p)


def reports() -> bool:
    """Whether this process writes the command's figures and summary: the only process, or
    rank 0 of a torchrun group (the others have shared the points and are done)."""
    return world()[0] == 0


OUTPUT_FLAGS = {
    "--quiet": "no progress bars and no per-epoch or per-step lines (the summary still prints)",
    "--json": "print the summary as one JSON object on stdout, and nothing else there; no "
    'progress, as --quiet (an error: {"error": ..., "command": ...}, status 2)',
}


def command(
    p: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int], sharded: bool = False
) -> None:
    """Make ``p`` run ``run``, give it ``--quiet`` and ``--json`` (`summary_output`), and
    remember its flags for `as_flags`. ``sharded``: the command shares its points among the
    processes of a ``torchrun`` group (`fastloss.engine.sharding`; rank 0 writes and
    reports); the others refuse to run under torchrun."""
    for flag, text in OUTPUT_FLAGS.items():
        if flag not in p._option_string_actions:  # argparse's table of a parser's options
            p.add_argument(flag, action="store_true", help=text)
    name = p.prog.removeprefix("fastloss").strip()
    flags = {}
    for action in p._actions:  # argparse keeps no public list of a parser's options
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.dest != "help":
            switch = action.nargs == 0 and action.const is True  # a store_true option
            flags[action.dest] = (longs[0], switch)
    p.set_defaults(run=run, flags=flags, sharded=sharded, name=name)


# --------------------------------------------------------------------------- the summary


def report(args: argparse.Namespace, **figures: Any) -> None:
    """Record the figures of the command's summary: what ``--json`` prints as one object
    (`summary_output`), beside ``"command"``. The command prints its human lines as ever
    (under ``--json`` they go nowhere) and calls this once, or more to add figures.

    Names mean the same in every command: ``out`` (the output given), ``files`` (every file
    written: outputs, figures, snapshots), ``points`` (evaluated points of the result),
    ``evaluated`` (those this run evaluated; the rest were done already), ``seconds``,
    ``points_per_second``, ``metrics`` ({metric: {statistic: value}}: ``min``/``max`` for a
    surface), scores as ``acc`` (percent, as printed), ``nll``, ``ece``, ``brier``. Values
    are plain JSON (numpy, tensors and paths converted; NaN and inf as null)."""
    vars(args).setdefault("reported", {}).update(figures)


@contextlib.contextmanager
def summary_output(args: argparse.Namespace) -> Iterator[None]:
    """Run the command in this block. Under ``--json``: progress off (as ``--quiet``), the
    human lines nowhere, and at the end, in the only process or rank 0, the summary the
    command `report`ed as one JSON line on stdout. An error leaves the block with no line:
    the caller prints `error_object`."""
    if not args.json:
        yield
        return
    args.quiet = True
    with open(os.devnull, "w") as nowhere, contextlib.redirect_stdout(nowhere):
        yield
    if reports() and "reported" in vars(args):  # none: interrupted (status 130)
        print_json({"command": args.name, **args.reported})


def error_object(args: argparse.Namespace, message: str) -> None:
    """Under ``--json``, a failed command's object on stdout (its line is on stderr), from the
    only process or rank 0."""
    if args.json and reports():
        print_json({"error": message, "command": args.name})


@contextlib.contextmanager
def usage_errors_as_json(argv: Sequence[str]) -> Iterator[None]:
    """Parse the command line in this block: with ``--json`` on it, argparse's one-line
    error (``fastloss curve eval: the following arguments are required: --out; see ...``)
    also gives the error object on stdout, before argparse's exit (status 2)."""
    if "--json" not in argv:
        yield
        return
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            yield
    except SystemExit as e:
        sys.stderr.write(said.getvalue())
        if e.code:
            prog, _, message = said.getvalue().strip().partition(": ")
            name = prog.removeprefix("fastloss").strip()
            print_json({"error": message, "command": name})
        raise
    sys.stderr.write(said.getvalue())


def print_json(obj: Mapping[str, Any]) -> None:
    print(json.dumps(plain(obj), allow_nan=False), flush=True)


def plain(obj: Any) -> Any:
    """Plain JSON types from numpy and torch values, tuples, sets and paths; NaN and inf as
    None, since strict JSON readers refuse them."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [plain(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return plain(obj.tolist())
    if isinstance(obj, np.generic):
        return plain(obj.item())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    return str(obj)  # a dtype, a device: their names


_ARGUMENT = re.compile(r"\b([a-z][a-z0-9_]*)=('[^']*'|\"[^\"]*\"|[^\s,;:()]+)")


def as_flags(message: str, flags: dict[str, tuple[str, bool]]) -> str:
    """A library message with the command's flags for the API arguments it names:
    ``overwrite=True`` -> ``--overwrite``, ``bn='fixed'`` -> ``--bn fixed``."""

    def replace(m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2).strip("'\"")
        if name not in flags:
            return m.group(0)
        flag, is_switch = flags[name]
        return flag if is_switch and value == "True" else f"{flag} {value}"

    return _ARGUMENT.sub(replace, message)


def check_fits(data: Dataset, meta: Mapping[str, Any], path: str, name: str) -> None:
    """The data ``name`` fits the model the checkpoint ``path`` describes (``meta``): its
    samples have the model's input shape and its labels are below its class count. Metadata
    without a model spec is left to the model's builder, which says what is missing."""
    if "in_shape" not in meta:
        return
    expected, found = list(meta["in_shape"]), list(data[0].shape[1:])
    if expected != found:
        raise DataError(
            f"{path} ({meta['model']}) takes inputs of shape {expected} but {name} has "
            f"samples of shape {found}; use the data the networks were trained on"
        )
    if "num_classes" in meta and int(data[1].max()) >= int(meta["num_classes"]):
        raise DataError(
            f"{name} has labels up to {int(data[1].max())} but {path} has "
            f"{meta['num_classes']} classes; use the data the networks were trained on"
        )


def check_outputs(paths: list[Path], overwrite: bool) -> None:
    """Refuse before any work when a finished result would be overwritten."""
    if overwrite:
        return
    for path in paths:
        if path.exists():
            raise OutputExistsError(f"{path} exists; pass overwrite=True or another out folder")
