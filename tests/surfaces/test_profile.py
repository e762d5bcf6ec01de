"""`profile_surface` / `profile_run`: the values are the evaluation's, the timings add up."""

import numpy as np
import pytest
import torch

from fastloss.core import Grid, Plane
from fastloss.data import load_builtin
from fastloss.errors import ArgumentError
from fastloss.models import build_model
from fastloss.surfaces import evaluate, profile_surface


def lenet_plane():
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(build_model("lenet5", (1, 8, 8), 10))
    return nets[0], Plane.through(*nets)


def test_profiled_points_are_evaluated_as_the_grid_evaluates_them():
    model, plane = lenet_plane()
    (x, y), _ = load_builtin("digits")
    train = (x[:200], y[:200])
    grid = Grid(x=(-0.5, 1.5, 5), y=(-0.5, 1.5, 5))
    profiles = profile_surface(
        model, plane, grid, train=train, points=5, dtypes=(torch.float32, torch.bfloat16), top=4
    )
    assert list(profiles) == [torch.float32, torch.bfloat16]
    full = evaluate(model, plane, grid, train=train, progress=False).values["train_loss"]
    picked = full.reshape(-1)[[0, 6, 12, 18, 24]]  # 5 of 25, evenly spread
    fp32 = profiles[torch.float32]
    np.testing.assert_allclose(fp32.values["train_loss"], picked, rtol=1e-5)
    np.testing.assert_allclose(profiles[torch.bfloat16].values["train_loss"], picked, rtol=5e-2)
    assert fp32.points == 5 and fp32.ms_per_point == pytest.approx(1e3 * fp32.seconds / 5)
    assert 1 <= len(fp32.ops) <= 4
    shares = [op.share for op in fp32.ops]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.05
    assert any("conv" in op.name for op in fp32.ops)  # LeNet-5's time is in its convolutions


def test_bad_points_are_refused():
    model, plane = lenet_plane()
    (x, y), _ = load_builtin("digits")
    with pytest.raises(ArgumentError, match="points must be >= 1"):
        profile_surface(model, plane, Grid(x=(0, 1, 3), y=(0, 1, 3)), train=(x, y), points=0)
