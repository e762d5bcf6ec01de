"""``fastloss demo``: three MLPs trained on MNIST-1D and the loss surface on the plane through
them (Garipov et al. 2018, Fig. 2, left), written to surface.h5 with figures, on a 2-core
CPU in a few minutes."""

from __future__ import annotations

import argparse
import os
import time

import torch

from fastloss.cli.options import command, ranges, report
from fastloss.core import Grid, Plane
from fastloss.data import load_builtin
from fastloss.io import Surface, save_checkpoint
from fastloss.models import build_from_checkpoint, build_model
from fastloss.surfaces import evaluate
from fastloss.training import train
from fastloss.viz import save_figures

SEEDS = (0, 1, 2)
WIDTHS = (256, 256)


def _network(
    out_dir: str, seed: int, train_data, test_data, epochs: int | None, device, progress: bool
):
    """A trained MLP for ``seed``, reusing its checkpoint from an earlier run if present."""
    path = os.path.join(out_dir, f"mlp_seed{seed}.pt")
    if os.path.exists(path):
        return build_from_checkpoint(path), path, "reused"
    torch.manual_seed(seed)
    in_shape, classes = tuple(train_data[0].shape[1:]), int(train_data[1].max()) + 1
    model = build_model("mlp", in_shape, classes, widths=WIDTHS)
    history = train(
        model,
        train_data,
        test_data,
        seed=seed,
        device=device or "cpu",
        progress=progress,
        **({} if epochs is None else {"epochs": epochs}),  # type: ignore[arg-type]
    )
    meta = {
        "data": "mnist1d",
        "seed": seed,
        **{k: float(v) for k, v in history.items() if isinstance(v, float | int)},
    }
    save_checkpoint(model.cpu(), path, meta=meta)
    return model.cpu(), path, "trained"


def run_demo(
    out_dir: str = "fastloss-demo",
    resolution: int = 41,
    epochs: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, object]:
    start = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    train_data, test_data = load_builtin("mnist1d")
    print(f"MNIST-1D: {len(train_data[1])} train / {len(test_data[1])} test samples")
    nets, paths = [], []
    for seed in SEEDS:
        model, path, how = _network(out_dir, seed, train_data, test_data, epochs, device, progress)
        nets.append(model)
        paths.append(path)
        print(f"  network {seed + 1}: {path} ({how})")
    plane = Plane.through(*nets)
    a, b = plane.info["markers"]["w3"]  # type: ignore[index]
    grid = Grid(x=(min(0.0, a) - 0.5, max(1.0, a) + 0.5, resolution), y=(-0.5, b + 0.5, resolution))
    surface_path = os.path.join(out_dir, "surface.h5")
    finished_before = os.path.exists(surface_path) and Surface.load(surface_path).is_complete
    t0 = time.perf_counter()
    surface = evaluate(
        nets[0],
        plane,
        grid,
        train=train_data,
        test=test_data,
        device=device,
        out=surface_path,
        progress=progress,
    )
    seconds = time.perf_counter() - t0
    figures = save_figures(surface, out_dir)
    points = resolution * resolution
    samples = len(train_data[1]) + len(test_data[1])
    how = "reused" if finished_before else f"in {seconds:.1f} s, {points / seconds:.0f} points/s"
    print(f"surface: {surface_path} ({points} points × {samples} samples, {how})")
    for name in ("train_loss", "test_acc"):
        values = surface.values[name]
        print(f"  {name}: min {values.min():.4g}, max {values.max():.4g}")
    print("figures:")
    for f in figures:
        print(f"  {f}")
    print(
        f"done in {time.perf_counter() - start:.0f} s; open the figures, or "
        f"`fastloss plot {surface_path} --out fig.png --metric test_loss`"
    )
    return {
        "out": out_dir,
        "files": [*paths, surface_path, *figures],
        "networks": paths,
        "surface": surface_path,
        "figures": figures,
        "points": points,
        "samples": samples,
        "evaluated": 0 if finished_before else points,
        "seconds": seconds,
        "points_per_second": None if finished_before else points / seconds,
        "metrics": ranges(surface),
        "total_seconds": time.perf_counter() - start,
    }


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "demo",
        help="train three networks and draw the plane through them",
        description="Train three small MLPs on MNIST-1D, evaluate the "
        "plane through them on train and test, and write surface.h5 and "
        "figures to the output folder.",
    )
    p.add_argument("--out", default="fastloss-demo", help="output folder (default fastloss-demo)")
    p.add_argument("--resolution", type=int, default=41, help="grid points per axis")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per network")
    p.add_argument("--device", default=None)
    command(p, _demo)


def _demo(args: argparse.Namespace) -> int:
    done = run_demo(
        args.out,
        resolution=args.resolution,
        epochs=args.epochs,
        device=args.device,
        progress=not args.quiet,
    )
    report(args, **done)
    return 0
