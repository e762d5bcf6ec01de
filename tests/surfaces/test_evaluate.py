"""The evaluation engine against the serial loop, resume after SIGKILL, file safety."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from fastloss.core import Grid, Line, Plane, affine_coords
from fastloss.engine import evaluate_serial
from fastloss.io import Surface
from fastloss.models import build_model
from fastloss.surfaces import evaluate

MODELS = [
    ("mlp", (40,), {"widths": (32, 32)}),
    ("lenet5", (1, 28, 28), {}),
    ("mpo-cnn", (1, 28, 28), {}),
    ("mpo-cnn-bn", (1, 28, 28), {}),
    ("resnet20", (3, 32, 32), {}),
    ("resnet20-noskip", (3, 32, 32), {}),
    ("vgg16-bn", (3, 32, 32), {}),
]


class Gain(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(n) + 0.1 * torch.randn(n))

    def forward(self, x):
        return x * self.gain


def custom_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(40, 16), Gain(16), nn.ReLU(), nn.Linear(16, 10))


def networks(name, shape, kwargs, count=3):
    nets = []
    for seed in range(count):
        torch.manual_seed(seed)
        nets.append(custom_model() if name == "custom" else build_model(name, shape, 10, **kwargs))
    return nets


def dataset(shape, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize(
    "name,shape,kwargs", MODELS + [("custom", (40,), {})], ids=[m[0] for m in MODELS] + ["custom"]
)
def test_engine_matches_serial_loop(name, shape, kwargs):
    nets = networks(name, shape, kwargs)
    plane = Plane.through(*nets)
    train, test = dataset(shape, 48, 0), dataset(shape, 24, 1)
    grid = Grid(x=(-0.5, 1.5, 3), y=(-0.5, 1.5, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the custom module's vmap notice
        surface = evaluate(
            nets[0],
            plane,
            grid,
            train=train,
            test=test,
            batch_size=16,
            progress=False,
            points_per_chunk=4,
        )
    coords = affine_coords(grid.coords())
    for split, data in (("train", train), ("test", test)):
        loss, acc = evaluate_serial(nets[0], plane, coords, data, bn_data=train, batch_size=16)
        got = surface.values[f"{split}_loss"].reshape(-1)
        np.testing.assert_allclose(got, loss, rtol=1e-4)
        np.testing.assert_allclose(surface.values[f"{split}_acc"].reshape(-1), acc, atol=1e-9)
    assert surface.done.all() and surface.values["train_loss"].shape == (2, 3)


def test_line_and_plane_pass_through_the_networks():
    nets = networks("mlp", (40,), {"widths": (16,)})
    data = dataset((40,), 64, 0)
    line = evaluate(
        nets[0], Line(nets[0], nets[1]), Grid(x=(0.0, 1.0, 2)), train=data, progress=False
    )
    for t, net in ((0, nets[0]), (1, nets[1])):
        expected = nn.functional.cross_entropy(net(data[0]), data[1]).item()
        assert line.values["train_loss"][t] == pytest.approx(expected, rel=1e-5)
    plane = Plane.through(*nets)
    a, b = plane.info["markers"]["w3"]
    at_w3 = evaluate(nets[0], plane, torch.tensor([[1.0, a, b]]), train=data, progress=False)
    expected = nn.functional.cross_entropy(nets[2](data[0]), data[1]).item()
    assert at_w3.values["train_loss"][0] == pytest.approx(expected, rel=1e-5)


def test_output_file_is_refused_for_other_settings(tmp_path):
    nets = networks("mlp", (40,), {"widths": (16,)})
    data = dataset((40,), 32, 0)
    out = str(tmp_path / "s.h5")
    grid = Grid(x=(0, 1, 3), y=(0, 1, 2))
    first = evaluate(nets[0], Plane.through(*nets), grid, train=data, out=out, progress=False)
    with pytest.raises(FileExistsError):
        evaluate(
            nets[0],
            Plane.through(*nets),
            Grid(x=(0, 2, 3), y=(0, 1, 2)),
            train=data,
            out=out,
            progress=False,
        )
    again = evaluate(nets[0], Plane.through(*nets), grid, train=data, out=out, progress=False)
    np.testing.assert_array_equal(again.values["train_loss"], first.values["train_loss"])
    loaded = Surface.load(out)
    np.testing.assert_array_equal(loaded.values["train_loss"], first.values["train_loss"])
    assert loaded.markers["w2"] == (1.0, 0.0)


def test_bad_input_errors():
    nets = networks("mlp", (40,), {"widths": (16,)})
    plane = Plane.through(*nets)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate(nets[0], plane, Grid(x=(0, 1, 2), y=(0, 1, 2)), progress=False)
    with pytest.raises(ValueError, match="a 1-D grid needs a subspace with J = 2"):
        evaluate(nets[0], plane, Grid(x=(0, 1, 2)), train=dataset((40,), 8, 0), progress=False)
    with pytest.raises(ValueError, match=r"x has 8 samples and y has shape \[7\]"):
        evaluate(
            nets[0],
            plane,
            Grid(x=(0, 1, 2), y=(0, 1, 2)),
            train=(torch.randn(8, 40), torch.zeros(7, dtype=torch.long)),
            progress=False,
        )
    bad = {k: v.clone() for k, v in nets[1].state_dict().items()}
    bad["1.weight"][0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"parameter '1.weight' has NaN"):
        Plane.through(nets[0], bad, nets[2])


RESUME_SCRIPT = textwrap.dedent("""
    import sys, torch
    from fastloss.core import Grid, Plane
    from fastloss.models import build_model
    from fastloss.surfaces import evaluate
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(build_model("mpo-cnn-bn", (1, 28, 28), 10))
    g = torch.Generator().manual_seed(0)
    data = torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g)
    evaluate(nets[0], Plane.through(*nets), Grid(x=(-0.5, 1.5, 6), y=(-0.5, 1.5, 5)),
             train=data, test=data, batch_size=16, out=sys.argv[1], progress=False,
             points_per_chunk=2)
""")


def test_kill_and_resume_gives_the_same_arrays(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT)
    reference, resumed = str(tmp_path / "ref.h5"), str(tmp_path / "resumed.h5")
    subprocess.run([sys.executable, str(script), reference], check=True)
    # Kill the run once it has written a few chunks, then resume it to the end.
    proc = subprocess.Popen([sys.executable, str(script), resumed])
    done = 0
    while proc.poll() is None and done < 6:
        # Poll without a file lock, so the reader never blocks the writer's opening.
        with contextlib.suppress(Exception), h5py.File(resumed, "r", locking=False) as f:
            done = int(f["fastloss/done"][()].sum())
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = Surface.load(resumed)
    assert 0 < partial.done.sum() < 30, "the kill should land mid-run"
    subprocess.run([sys.executable, str(script), resumed], check=True)
    a, b = Surface.load(reference), Surface.load(resumed)
    assert b.done.all()
    for name in a.values:
        np.testing.assert_array_equal(a.values[name], b.values[name])
    assert os.path.getsize(resumed) > 0


def test_cpu_tiles_fit_the_cache_budget():
    from fastloss.core import batch
    from fastloss.engine import CPU_TILE_BYTES, largest_activation_bytes, plan_tiles

    nets = networks("mlp", (40,), {"widths": (64, 32)})
    plane = Plane.through(*nets)
    batched = batch(nets[0], plane)
    coords = affine_coords(Grid(x=(-1, 1, 9), y=(-1, 1, 9)).coords()).float()
    x = torch.randn(5000, 40)
    # The per-point outputs are [K·B, 64] at most; the shared input [B, 40] is left out.
    assert largest_activation_bytes(batched, coords, x) == 64 * 4
    points, samples = plan_tiles(batched, coords, x, batch_size=512)
    assert points * samples * 64 * 4 <= CPU_TILE_BYTES
    assert points >= 2 and samples >= 512
