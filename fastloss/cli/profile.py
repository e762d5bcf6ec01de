"""``fastloss profile``: where a plane's evaluation spends its time, per dtype."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from fastloss.cli.options import (
    DTYPES,
    add_data_options,
    add_device_options,
    axis,
    command,
    dtype,
    load_data_from,
    report,
)
from fastloss.cli.surfaces import add_plane_options, plane_from
from fastloss.engine import default_device, has_batch_norm
from fastloss.engine.loop import native_bf16
from fastloss.surfaces import profile_surface


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "profile",
        help="where a plane's evaluation spends its time, in float32 and bfloat16",
        description="Evaluate a few points of the plane that `fastloss plane` would, once per "
        "dtype, under torch.profiler: points per second, the ops that take the most time "
        "(share of the run, ms per point), and bfloat16's loss error against float32.",
    )
    add_plane_options(p)
    add_data_options(p)
    p.add_argument("--x", type=axis, help="x axis as lo:hi:n")
    p.add_argument("--points", type=int, default=16, help="points to time (default 16)")
    p.add_argument(
        "--dtypes", nargs="+", choices=DTYPES, default=["float32", "bfloat16"], metavar="DTYPE"
    )
    add_device_options(p)
    p.add_argument("--top", type=int, default=5, help="ops listed per dtype (default 5)")
    command(p, _profile)


@contextlib.contextmanager
def profiler_logs_hidden() -> Iterator[None]:
    """torch.profiler's C++ side writes its own lines to stderr (start and stop, and an error
    line on a machine with a CUDA build but no GPU): hidden while it runs."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _profile(args: argparse.Namespace) -> int:
    model, subspace, grid = plane_from(args)
    train, test = load_data_from(args)
    device = default_device(args.device)
    with warnings.catch_warnings(), profiler_logs_hidden():
        # bf16 on a CPU without native bf16 is said below, with its measured cost.
        warnings.filterwarnings("ignore", message=".*no native bfloat16")
        profiles = profile_surface(
            model,
            subspace,
            grid,
            train=train,
            test=test,
            points=args.points,
            dtypes=tuple(dtype(d) or torch.float32 for d in dict.fromkeys(args.dtypes)),
            bn=args.bn,
            batch_size=args.batch_size,
            device=device,
            top=args.top,
        )
    threads = f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else ""
    first = next(iter(profiles.values()))
    bn = f", BatchNorm {args.bn}" if has_batch_norm(model) else ""
    print(
        f"{type(model).__name__}, {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{len(train[0])} train + {len(test[0])} test samples, {first.points} points{bn}, "
        f"{device}{threads}"
    )
    reference = profiles.get(torch.float32)
    errors: dict[torch.dtype, float] = {}
    print(f"{'dtype':9s} {'points/s':>9s} {'ms/point':>9s}  max rel loss error vs float32")
    for kind, prof in profiles.items():
        error = "-"
        if reference is not None and kind != torch.float32:
            want, got = reference.values["train_loss"], prof.values["train_loss"]
            errors[kind] = float(np.max(np.abs(got - want) / np.abs(want)))
            error = f"{errors[kind]:.1e}"
        name = str(kind).removeprefix("torch.")
        print(f"{name:9s} {prof.points_per_second:9.2f} {prof.ms_per_point:9.1f}  {error}")
    bf16 = profiles.get(torch.bfloat16)
    if reference is not None and bf16 is not None and bf16.seconds > reference.seconds:
        why = "" if device.type != "cpu" or native_bf16() else " (this CPU has no native bfloat16)"
        print(f"bfloat16 is {bf16.seconds / reference.seconds:.1f}x slower than float32 here{why}")
    for kind, prof in profiles.items():
        print(f"top ops, {str(kind).removeprefix('torch.')}: share of the run, ms per point")
        for op in prof.ops:
            print(f"  {op.name:40s} {100 * op.share:5.1f}%  {op.ms_per_point:8.2f}")
    report(
        args,
        model=type(model).__name__,
        parameters=sum(p.numel() for p in model.parameters()),
        train_samples=len(train[0]),
        test_samples=len(test[0]),
        points=first.points,
        device=str(device),
        threads=torch.get_num_threads(),
        dtypes={
            str(kind).removeprefix("torch."): {
                "seconds": prof.seconds,
                "points_per_second": prof.points_per_second,
                "ms_per_point": prof.ms_per_point,
                "max_rel_loss_error": errors.get(kind),
                "ops": [vars(op) for op in prof.ops],
            }
            for kind, prof in profiles.items()
        },
    )
    return 0
