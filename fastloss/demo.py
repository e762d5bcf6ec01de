"""`fastloss demo`: three MLPs trained on MNIST-1D and the loss surface on the plane through
them (paper 000, Figure 2, left), written to surface.h5 with figures, on a 2-core CPU in a
few minutes."""

from __future__ import annotations

import os
import time

import torch

from fastloss import checkpoints, data, models, plot
from fastloss.evaluate import evaluate
from fastloss.io import Surface
from fastloss.subspace import Grid, Plane
from fastloss.train import train

SEEDS = (0, 1, 2)
WIDTHS = (256, 256)


def _network(
    out_dir: str, seed: int, train_data, test_data, epochs: int | None, device, progress: bool
):
    """A trained MLP for ``seed``, reusing its checkpoint from an earlier run if present."""
    path = os.path.join(out_dir, f"mlp_seed{seed}.pt")
    if os.path.exists(path):
        return checkpoints.build_from_checkpoint(path), path, "reused"
    torch.manual_seed(seed)
    in_shape, classes = tuple(train_data[0].shape[1:]), int(train_data[1].max()) + 1
    model = models.build_model("mlp", in_shape, classes, widths=WIDTHS)
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
        "model": "mlp",
        "in_shape": list(in_shape),
        "num_classes": classes,
        "kwargs": {"widths": list(WIDTHS)},
        "data": "mnist1d",
        "seed": seed,
        **{k: float(v) for k, v in history.items() if isinstance(v, float | int)},
    }
    checkpoints.save_checkpoint(model.cpu(), path, meta=meta)
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
    train_data, test_data = data.load_builtin("mnist1d")
    print(f"MNIST-1D: {len(train_data[1])} train / {len(test_data[1])} test samples")
    nets = []
    for seed in SEEDS:
        model, path, how = _network(out_dir, seed, train_data, test_data, epochs, device, progress)
        nets.append(model)
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
    figures = plot.save_figures(surface, out_dir)
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
    return {"surface": surface_path, "figures": figures, "seconds": seconds}
