"""One multi-point-optimization step with 100 cells, side by side in one process: the
reference code's loop over cells, torch.func.vmap over cells, and fastloss.

Reference (universome/loss-patterns): for every chosen cell, build its weights from θ in
Python (Gram–Schmidt included, as ``compute_point`` does), run the model, backward that
cell's share of the objective (accumulating θ's gradient); then clip and take an Adam step
(`fastloss.mpo.serial.serial_step_grads`). vmap: every cell's weights materialised
``[K, ...]``, one ``torch.func.vmap(functional_call)`` forward and one backward. fastloss:
`fastloss.mpo.mpo_step`, the step `fit_pattern` runs: all cells in one batched pass of
compiled ops. Every method clips the gradient to 100 and steps Adam at lr 3e-4. The script
keeps freed memory for reuse, as the command line does (`fastloss.engine.keep_freed_memory`).

Workloads (50 good + 50 bad cells, one data batch shared by all):
  (a) MLP 40-256-256-10 on MNIST-1D, batch 512
  (b) mpo-cnn, the paper's conv net (3×3 convs 8/32/64, 4×4 pool, 128 units), on 28×28
      inputs (seeded random images, 10 classes), batch 512
Before timing, the three methods' gradients on θ are checked equal in float64 (on a few
cells and samples). On a CPU, (b) runs fastloss (and vmap, when asked for) one cell a pass:
there the conv net at batch 512 is compute-bound per cell, and larger passes only add
memory traffic (20 cells on the 2-core development CPU, first step: 1 a pass 15.1 s, 2 16.9 s,
5 18.1 s, 10 25.0 s, 20 28.5 s, peak memory 1.5 to 11.5 GB); vmap is left out there (its
grouped convolutions were killed for memory at 20 cells a pass on 24 GB). bf16
(fastloss only) is timed where the device has native bf16, and its error against float32
(objective and gradient, relative) is always reported.

    python bench/bench_mpo.py [--device cuda] [--only a b] [--batch 512] [--repeats 2]
prints a Markdown table and writes bench/results/mpo-<device>.json;
``pytest bench/bench_mpo.py --benchmark-only`` times the MLP's steps under pytest-benchmark.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import sys
import time

import torch
import torch.nn.functional as F
from record import write_results
from torch.func import functional_call, vmap

import fastloss
from fastloss import data as fl_data
from fastloss.core import batch
from fastloss.engine import keep_freed_memory
from fastloss.engine.loop import native_bf16 as cpu_bf16
from fastloss.models import build_model
from fastloss.mpo import builtin_pattern, init_plane, mpo_objective, mpo_step
from fastloss.mpo.serial import serial_step_grads
from fastloss.mpo.step import cell_losses

WORKLOADS = {
    "a": ("MLP 40-256-256-10, MNIST-1D", "mlp", "mnist1d", {"widths": (256, 256)}),
    "b": ("mpo-cnn (paper's conv net), 28x28", "mpo-cnn", "random28", {}),
}
CELLS, LR, CLIP, BAD_CLAMP = 50, 3e-4, 100.0, 2.5


def native_bf16(device) -> bool:
    return device.type == "cuda" or cpu_bf16()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_workload(key, batch_size, device, cells=CELLS):
    title, name, data_name, kwargs = WORKLOADS[key]
    if data_name == "random28":
        g = torch.Generator().manual_seed(0)
        x, y = (
            torch.rand(batch_size, 1, 28, 28, generator=g),
            torch.randint(0, 10, (batch_size,), generator=g),
        )
    else:
        (x, y), _ = fl_data.load_builtin(data_name)
        x, y = x[:batch_size], y[:batch_size]
    torch.manual_seed(0)
    model = build_model(name, tuple(x.shape[1:]), 10, **kwargs)
    pattern = builtin_pattern("smiley", 50)
    classes = torch.from_numpy(pattern.cells().reshape(-1))
    g = torch.Generator().manual_seed(1)
    good = torch.nonzero(classes == 1).flatten()
    bad = torch.nonzero(classes == -1).flatten()
    chosen = torch.cat(
        [
            good[torch.randperm(len(good), generator=g)[:cells]],
            bad[torch.randperm(len(bad), generator=g)[:cells]],
        ]
    )
    positions = torch.from_numpy(pattern.positions().reshape(-1, 2))[chosen]
    is_good = torch.arange(len(chosen)) < cells
    return title, model, x.to(device), y.to(device), positions.to(device), is_good.to(device)


def fresh_plane(model, device, dtype=torch.float32):
    return init_plane(model, seed=0).detached(device, dtype).requires_grad_()


class Fastloss:
    def __init__(self, model, device, dtype=torch.float32, cells_per_pass=None):
        self.plane = fresh_plane(model, device)
        self.dtype = dtype
        self.cells_per_pass = cells_per_pass
        subspace = self.plane.plane().to(device, dtype)
        self.batched = batch(model, subspace).to(device).train()
        self.opt = torch.optim.Adam(self.plane.parameters(), lr=LR)

    def step(self, x, y, positions, good):
        if self.dtype == torch.float32:
            mpo_step(
                self.batched,
                self.plane,
                self.opt,
                positions,
                good,
                x,
                y,
                BAD_CLAMP,
                CLIP,
                self.cells_per_pass,
            )
            return
        self.opt.zero_grad(set_to_none=True)
        K, n_good = len(positions), int(good.sum())
        chunk = self.cells_per_pass or K
        for i in range(0, K, chunk):
            part = slice(i, i + chunk)
            self.objective(x, y, positions[part], good[part], n_good, K - n_good).backward()
        torch.nn.utils.clip_grad_norm_(self.plane.parameters(), CLIP)
        self.opt.step()

    def objective(self, x, y, positions, good, n_good=None, n_bad=None):
        """The objective with the batched model in ``dtype`` (θ and the loss in float32)."""
        basis = {n: b.to(self.dtype) for n, b in self.plane.basis().items()}
        self.batched.load_basis(basis)
        coords = self.plane.coords(positions).to(self.dtype)
        out = self.batched(x.to(self.dtype), coords).float()
        loss = F.cross_entropy(out.flatten(0, 1), y.repeat(len(positions)), reduction="none")
        loss = loss.view(len(positions), -1).mean(1)
        return mpo_objective(loss, good, BAD_CLAMP, n_good, n_bad)


class Reference:
    def __init__(self, model, device):
        self.model = copy.deepcopy(model).to(device).train()
        self.plane = fresh_plane(model, device)
        self.opt = torch.optim.Adam(self.plane.parameters(), lr=LR)

    def step(self, x, y, positions, good):
        serial_step_grads(self.model, self.plane, positions, good, x, y, BAD_CLAMP)
        torch.nn.utils.clip_grad_norm_(self.plane.parameters(), CLIP)
        self.opt.step()


class Vmap:
    def __init__(self, model, device, cells_per_pass=None):
        self.cells_per_pass = cells_per_pass
        self.model = copy.deepcopy(model).to(device).train()
        self.plane = fresh_plane(model, device)
        self.opt = torch.optim.Adam(self.plane.parameters(), lr=LR)
        self.buffers = dict(self.model.named_buffers())

    def objective(self, x, y, positions, good, n_good=None, n_bad=None):
        basis = self.plane.basis()
        c = self.plane.coords(positions)  # [K, 3]
        weights = {n: torch.tensordot(c, b, dims=1) for n, b in basis.items()}  # [K, ...]

        def one(w):
            return functional_call(self.model, (w, self.buffers), (x,))

        out = vmap(one, randomness="same")(weights)  # [K, B, C]
        loss = F.cross_entropy(out.flatten(0, 1), y.repeat(len(positions)), reduction="none")
        loss = loss.view(len(positions), -1).mean(1)
        return mpo_objective(loss, good, BAD_CLAMP, n_good, n_bad)

    def step(self, x, y, positions, good):
        self.opt.zero_grad(set_to_none=True)
        K, n_good = len(positions), int(good.sum())
        chunk = self.cells_per_pass or K
        for i in range(0, K, chunk):
            part = slice(i, i + chunk)
            self.objective(x, y, positions[part], good[part], n_good, K - n_good).backward()
        torch.nn.utils.clip_grad_norm_(self.plane.parameters(), CLIP)
        self.opt.step()


def grads_of(plane):
    return torch.cat([t.grad.flatten() for t in plane.parameters()])


def check_gradients(model, x, y, positions, good, device) -> dict[str, float]:
    """Max relative difference of θ's gradient, fastloss and vmap against the reference
    loop, in float64 on 6 cells and 32 samples."""
    model = copy.deepcopy(model).double()
    x, positions = x[:32].double(), positions[[0, 1, 2, -3, -2, -1]].double()
    y, good = y[:32], good[[0, 1, 2, -3, -2, -1]]
    plane = init_plane(model, seed=0).detached(device, torch.float64).requires_grad_()
    ref, _ = serial_step_grads(
        copy.deepcopy(model).to(device), plane, positions, good, x, y, BAD_CLAMP
    )
    ref = torch.cat([g.flatten() for g in ref])
    for t in plane.parameters():
        t.grad = None
    batched = batch(model, plane.plane()).to(device).train()
    loss, _ = cell_losses(batched, plane, positions, x, y)
    mpo_objective(loss, good, BAD_CLAMP).backward()
    fast = grads_of(plane)
    v = Vmap(model, device)
    v.plane = plane
    for t in plane.parameters():
        t.grad = None
    v.objective(x, y, positions, good).backward()
    scale = ref.abs().max()
    return {
        "fastloss": float((fast - ref).abs().max() / scale),
        "vmap": float((grads_of(plane) - ref).abs().max() / scale),
    }


def bf16_error(model, x, y, positions, good, device) -> dict[str, float]:
    """Relative error of the objective and of θ's gradient with the batched model in bf16,
    against float32 (the same θ); on 100 cells and the workload's batch, or 16 cells and 64
    samples where bf16 is not native (there a full step would take minutes)."""
    if not native_bf16(device):
        x, y = x[:64], y[:64]
        positions, good = positions[[*range(8), *range(-8, 0)]], good[[*range(8), *range(-8, 0)]]
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        f = Fastloss(model, device, dtype)
        objective = f.objective(x, y, positions, good)
        objective.backward()
        results[dtype] = (float(objective.detach()), grads_of(f.plane))
    (o32, g32), (o16, g16) = results[torch.float32], results[torch.bfloat16]
    return {
        "bf16_objective_rel_err": abs(o16 - o32) / max(abs(o32), 1e-12),
        "bf16_grad_rel_err": float((g16 - g32).norm() / g32.norm()),
    }


def time_step(stepper, args, device, steps) -> float:
    stepper.step(*args)  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        stepper.step(*args)
    sync(device)
    return (time.perf_counter() - start) / steps


def run(
    key, device, batch_size, repeats, steps, cells_per_pass, cells=CELLS, with_vmap=True
) -> dict:
    title, model, x, y, positions, good = make_workload(key, batch_size, device, cells)
    row = {"workload": key, "title": title, "batch": batch_size, "cells": len(positions)}
    row["cells_per_pass"] = cells_per_pass or len(positions)
    diffs = check_gradients(model, x, y, positions, good, device)
    row.update({f"grad_rel_diff_{k}": v for k, v in diffs.items()})
    if max(diffs.values()) > 1e-6:
        raise SystemExit(f"({key}) gradients differ from the reference loop: {row}")
    row.update(bf16_error(model, x, y, positions, good, device))
    steppers = {"reference": Reference(model, device)}
    if with_vmap:
        steppers["vmap"] = Vmap(model, device, cells_per_pass)
    steppers["fastloss"] = Fastloss(model, device, cells_per_pass=cells_per_pass)
    if native_bf16(device):
        steppers["fastloss_bf16"] = Fastloss(model, device, torch.bfloat16, cells_per_pass)
    times: dict[str, list[float]] = {k: [] for k in steppers}
    args = (x, y, positions, good)
    for _ in range(repeats):  # methods take turns, so a busy moment of the machine hits all
        for name, stepper in steppers.items():
            times[name].append(time_step(stepper, args, device, steps))
            print(f"  ({key}) {name}: {times[name][-1]:.3f} s/step", file=sys.stderr, flush=True)
    for name, t in times.items():
        row[f"{name}_s_per_step"] = min(t)
    ref = row["reference_s_per_step"]
    for name in steppers:
        if name != "reference":
            row[f"{name}_speedup"] = ref / row[f"{name}_s_per_step"]
    if "vmap" not in steppers:
        row["vmap_s_per_step"] = row["vmap_speedup"] = None
    return row


def fmt(value, spec) -> str:
    return "not run (OOM)" if value is None else format(value, spec)


def markdown(rows) -> str:
    head = (
        "| workload | reference loop s/step | vmap s/step | fastloss s/step | fastloss × loop "
        "| vmap × loop | bf16 s/step | bf16 rel. error (objective / grad) | grad rel diff |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        bf16 = (
            f"{r['fastloss_bf16_s_per_step']:.3f}"
            if "fastloss_bf16_s_per_step" in r
            else "n/a (no native bf16)"
        )
        passes = "" if r["cells_per_pass"] == r["cells"] else f" ({r['cells_per_pass']} per pass)"
        lines.append(
            f"| ({r['workload']}) {r['title']}, batch {r['batch']}, {r['cells']} cells{passes} "
            f"| {r['reference_s_per_step']:.3f} | {fmt(r['vmap_s_per_step'], '.3f')} "
            f"| {r['fastloss_s_per_step']:.3f} | {r['fastloss_speedup']:.2f} "
            f"| {fmt(r['vmap_speedup'], '.2f')} "
            f"| {bf16} | {r['bf16_objective_rel_err']:.1e} / {r['bf16_grad_rel_err']:.1e} "
            f"| {max(r['grad_rel_diff_fastloss'], r['grad_rel_diff_vmap']):.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--cells", type=int, default=CELLS, help="good (and as many bad) cells, default 50"
    )
    parser.add_argument("--steps", type=int, default=1, help="timed steps per measurement")
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument(
        "--cells-per-pass",
        type=int,
        help="vmap and fastloss run a step's cells in passes of this many (default: all at "
        "once; (b) on a CPU: 1, which ran fastest there)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    kept = keep_freed_memory()  # as the command line does; every method profits
    rows = []
    for key in args.only:
        passes, with_vmap = args.cells_per_pass, True
        if key == "b" and device.type == "cpu":
            passes, with_vmap = passes or 1, False
        rows.append(
            run(key, device, args.batch, args.repeats, args.steps, passes, args.cells, with_vmap)
        )
    print(
        f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"fastloss {fastloss.__version__}, {datetime.date.today().isoformat()}\n"
    )
    print(markdown(rows))
    label = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    write_results("mpo", device, label, rows, args.out, freed_memory_kept=kept)


# ---- pytest-benchmark ------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # the script runs without pytest
    pytest = None

if pytest is not None:

    @pytest.mark.parametrize("method", ["reference", "vmap", "fastloss"])
    def test_mpo_step(benchmark, method):
        device = torch.device("cpu")
        keep_freed_memory()
        _, model, x, y, positions, good = make_workload("a", 512, device)
        stepper = {"reference": Reference, "vmap": Vmap, "fastloss": Fastloss}[method](
            model, device
        )
        benchmark.pedantic(stepper.step, args=(x, y, positions, good), rounds=3, warmup_rounds=1)


if __name__ == "__main__":
    main()
