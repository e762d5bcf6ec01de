"""Curve-fitting steps side by side in one process: dnn-mode-connectivity's way and fastloss.

Reference (dnn-mode-connectivity): one t per step; every layer builds its weights in Python
from the control points, ``W(t) = Σ_j c_j(t) W_j`` with torch ops, then calls
F.linear / F.conv2d / F.batch_norm (batch statistics); the l2 term ``0.5·wd·Σ‖W(t)‖²``;
autograd to the bends; SGD with momentum. fastloss: `fastloss.curves.fit_step`, the step
`fit_curve` runs, with S = samples_per_step points t in one batched pass of compiled ops.

Workloads (Bezier curve with one bend, batch 128):
  (a) MLP 40-256-256-10 on MNIST-1D
  (b) mpo-cnn-bn (3 conv + BN layers, 2 linear) on 8x8 digits
"cost per t" = (seconds per fastloss step at S / S) / (seconds per reference step): below 1,
each sampled t costs less than a reference step. Before timing, the gradients on the bends
of one S = 1 step are checked against the reference's at the same t.

    python bench/bench_curve.py [--device cuda] [--steps 40] [--only a b]
prints a Markdown table and writes bench/results/curve-<device>.json.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import math
import sys
import time

import torch
import torch.nn.functional as F
from record import write_results
from torch import nn

import fastloss
from fastloss import data as fl_data
from fastloss.core import batch
from fastloss.curves import fit_step, make_curve, make_optimizer
from fastloss.models import build_model

WORKLOADS = {
    "a": ("MLP 40-256-256-10, MNIST-1D", "mlp", "mnist1d", {"widths": (256, 256)}),
    "b": ("mpo-cnn-bn, 8x8 digits", "mpo-cnn-bn", "digits", {}),
}
SAMPLES = (1, 4, 16)
BATCH, WD, LR = 128, 5e-4, 0.05


class ReferenceCurve:
    """dnn-mode-connectivity's curve step, for a model that is a flat nn.Sequential."""

    def __init__(self, model: nn.Sequential, curve, device):
        self.layers = list(model)
        names = [n for n, _ in model.named_parameters()]
        self.fixed = {n: curve.basis[n][[0, -1]].to(device) for n in names}
        self.bends = {
            n: curve.basis[n][1:-1].to(device, copy=True).requires_grad_(True) for n in names
        }
        self.opt = torch.optim.SGD(list(self.bends.values()), lr=LR, momentum=0.9)
        # curves.Bezier: coeffs_t = binom · t^range · (1 − t)^rev_range, per step.
        J = curve.J
        dtype = curve.basis[names[0]].dtype
        self.binom = torch.tensor([math.comb(J - 1, j) for j in range(J)], dtype=dtype)
        self.range = torch.arange(J, dtype=dtype)
        self.rev_range = torch.arange(J - 1, -1, -1, dtype=dtype)
        self.device = device

    def coeffs(self, t: torch.Tensor) -> torch.Tensor:
        c = self.binom * torch.pow(t, self.range) * torch.pow(1.0 - t, self.rev_range)
        return c.to(self.device)

    def weight(self, name: str, coeffs: torch.Tensor) -> torch.Tensor:
        c = coeffs.unbind()
        w = self.fixed[name][0] * c[0]
        for j, bend in enumerate(self.bends[name], start=1):
            w = w + bend * c[j]
        return w + self.fixed[name][1] * c[-1]

    def loss(self, x, y, coeffs: torch.Tensor) -> torch.Tensor:
        l2 = 0.0
        for i, layer in enumerate(self.layers):
            if isinstance(layer, (nn.Linear, nn.Conv2d, nn.BatchNorm2d)):
                w = self.weight(f"{i}.weight", coeffs)
                b = self.weight(f"{i}.bias", coeffs) if layer.bias is not None else None
                l2 = l2 + w.square().sum() + (b.square().sum() if b is not None else 0.0)
                if isinstance(layer, nn.Linear):
                    x = F.linear(x, w, b)
                elif isinstance(layer, nn.Conv2d):
                    x = F.conv2d(x, w, b, layer.stride, layer.padding)
                else:
                    x = F.batch_norm(x, None, None, w, b, True, 0.1, layer.eps)
            else:
                x = layer(x)
        return F.cross_entropy(x, y) + 0.5 * WD * l2

    def step(self, x, y, t: torch.Tensor) -> None:
        loss = self.loss(x, y, self.coeffs(t))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_workload(key, device):
    title, name, data_name, kwargs = WORKLOADS[key]
    (x, y), _ = fl_data.load_builtin(data_name)
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        nets.append(build_model(name, tuple(x.shape[1:]), 10, **kwargs))
    curve = make_curve("bezier", nets[0], nets[1], bends=1)
    return title, nets[0], curve, x.to(device), y.to(device)


def fastloss_stepper(model, curve, device):
    batched = batch(model, curve.to(device)).to(device).train()
    ends = {n: b[[0, -1]].to(device) for n, b in curve.basis.items()}
    bends = {n: b[1:-1].to(device, copy=True).requires_grad_(True) for n, b in curve.basis.items()}
    return batched, ends, bends, make_optimizer("sgd", list(bends.values()), LR)


def check_gradients(model, curve, x, y, device) -> float:
    """Max relative difference of the bends' gradients, fastloss vs reference, at t = 0.3,
    in float64 (in float32, BatchNorm on near-constant pixels leaves differences of 1e-3)."""
    model, curve, x = copy.deepcopy(model).double(), curve.to(dtype=torch.float64), x.double()
    t = torch.tensor([0.3], dtype=torch.float64)
    ref = ReferenceCurve(model, curve, device)
    ref.loss(x, y, ref.coeffs(t)).backward()
    batched, ends, bends, _ = fastloss_stepper(model, curve, device)
    keep = torch.optim.SGD(list(bends.values()), lr=0.0)  # the gradients stay in .grad
    fit_step(batched, ends, bends, keep, curve.coords(t).to(device), x, y, WD)
    worst = 0.0
    for n, b in bends.items():
        g, r = b.grad, ref.bends[n].grad
        worst = max(worst, float((g - r).abs().max() / r.abs().max().clamp_min(1e-12)))
    return worst


def time_steps(step, steps: int, device) -> float:
    for _ in range(3):  # warm-up
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def run(key, device, steps, repeats):
    title, model, curve, x, y = make_workload(key, device)
    row = {"workload": key, "title": title, "batch": BATCH}
    row["grad_max_rel_diff"] = check_gradients(model, curve, x[:BATCH], y[:BATCH], device)
    if row["grad_max_rel_diff"] > 1e-3:
        raise SystemExit(f"({key}) gradients differ from the reference: {row}")
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, x.shape[0], (BATCH,), generator=g) for _ in range(8)]
    ref = ReferenceCurve(model, curve, device)
    steppers = {S: fastloss_stepper(model, curve, device) for S in SAMPLES}
    count = {"ref": 0, **{S: 0 for S in SAMPLES}}
    block: dict[int, torch.Tensor] = {}

    def reference_step():
        i = count["ref"] = count["ref"] + 1
        ref.step(x[batches[i % 8]], y[batches[i % 8]], torch.rand(1, generator=g))

    def fastloss_step(S):
        # As fit_curve does: the coordinates of a block of steps in one call.
        i = count[S] = count[S] + 1
        if i % steps == 0 or S not in block:
            t = torch.rand(steps * S, generator=g, dtype=torch.float64)
            block[S] = curve.coords(t).to(device, torch.float32).view(steps, S, -1)
        xb, yb = x[batches[i % 8]], y[batches[i % 8]]
        fit_step(*steppers[S], block[S][i % steps], xb, yb, WD)

    times = {"reference": [], **{S: [] for S in SAMPLES}}
    for _ in range(repeats):  # interleaved, so that a busy moment of the machine hits all
        times["reference"].append(time_steps(reference_step, steps, device))
        for S in SAMPLES:
            times[S].append(time_steps(lambda S=S: fastloss_step(S), steps, device))
    ref_s = min(times["reference"])
    row["reference_ms_per_step"] = 1e3 * ref_s
    for S in SAMPLES:
        s = min(times[S])
        row[f"S{S}_ms_per_step"] = 1e3 * s
        row[f"S{S}_cost_per_t"] = (s / S) / ref_s
    print(
        f"  ({key}) {title}: "
        + ", ".join(f"{k}={v:.3g}" for k, v in row.items() if isinstance(v, float)),
        file=sys.stderr,
        flush=True,
    )
    return row


def markdown(rows) -> str:
    head = (
        "| workload | reference ms/step (1 t) | "
        + " | ".join(f"S={S} ms/step" for S in SAMPLES)
        + " | "
        + " | ".join(f"S={S} cost per t" for S in SAMPLES)
        + " | grad rel diff |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| ({r['workload']}) {r['title']} | {r['reference_ms_per_step']:.2f} | "
            + " | ".join(f"{r[f'S{S}_ms_per_step']:.2f}" for S in SAMPLES)
            + " | "
            + " | ".join(f"{r[f'S{S}_cost_per_t']:.2f}" for S in SAMPLES)
            + f" | {r['grad_max_rel_diff']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = [run(key, device, args.steps, args.repeats) for key in args.only]
    print(
        f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"fastloss {fastloss.__version__}, {datetime.date.today().isoformat()}\n"
    )
    print(markdown(rows))
    label = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    write_results("curve", device, label, rows, args.out)


if __name__ == "__main__":
    main()
