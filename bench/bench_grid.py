"""Grid evaluation side by side in one process: the serial loop, torch.func.vmap, fastloss.

Workloads (Garipov et al. 2018's plane through three networks, K points of a grid, J = 3):
  (a) MLP 40-256-256-10 on MNIST-1D, 4000 samples
  (b) MLP 784-256-256-10 on 784-dim inputs, 2000 samples
  (c) the MPO conv net on 28x28 inputs, 500 samples
  (d) ResNet-20 on 32x32 inputs, with BN recompute
  (e) the MPO conv net in 1D with BatchNorm1d on MNIST-1D, 4000 samples, BN recompute
  (f) LeNet-5 on the digits (8x8), 1437 samples
  (g) ResNet-8 with GroupNorm (residual adds, no BN) on the digits
Methods: serial = set the weights, then a forward pass over the data (loss-landscape's
loop; with BN, update_bn first); vmap = torch.func.vmap over stacked weights; fastloss in
float32 and bfloat16. "limit" = the forward FLOPs over the GEMM rate measured in this run.
Every method is warmed up, then the methods take turns for --repeats rounds, each timed as
its best round. Each fastloss run is
profiled (fastloss.engine.profile_run): its top three ops by self time
with their share of the run, and the largest share of a parameter-free op or copy.

    python bench/bench_grid.py [--device cuda] [--points 64] [--only a b]
prints a Markdown table and writes bench/results/grid-<device>.json.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from record import write_results
from torch.utils.flop_counter import FlopCounterMode

from fastloss import data as fl_data
from fastloss.core import Plane, affine_coords
from fastloss.engine import LossMetrics, evaluate_serial, has_batch_norm, prepare, profile_run
from fastloss.models import build_model

RESNET8_GN = {"depth": 8, "norm": "group"}
WORKLOADS = {
    "a": ("MLP 40-256-256-10, MNIST-1D", "mlp", (40,), 4000, {"widths": (256, 256)}),
    "b": ("MLP 784-256-256-10", "mlp", (784,), 2000, {"widths": (256, 256)}),
    "c": ("MPO conv net, 28x28", "mpo-cnn", (1, 28, 28), 500, {}),
    "d": ("ResNet-20, 32x32, BN recompute", "resnet20", (3, 32, 32), 500, {}),
    "e": ("1D conv net + BN1d, MNIST-1D, BN recompute", "mpo-cnn-bn", (40,), 4000, {}),
    "f": ("LeNet-5, digits 8x8", "lenet5", (1, 8, 8), 1437, {}),
    "g": ("ResNet-8 + GroupNorm, digits 8x8", "resnet20", (1, 8, 8), 1437, RESNET8_GN),
}
BUILTIN_DATA = {"a": "mnist1d", "e": "mnist1d", "f": "digits", "g": "digits"}
# Ops that do a layer's arithmetic; every other op is parameter-free (activations, pooling,
# residual adds) or moves data (copies, layout changes).
LAYER_OPS = re.compile(r"conv|mm|linear|batch_norm|group_norm|layer_norm|^fastloss::")
PROFILED_OPS = 20  # enough to find the largest parameter-free op below the top three


def make_data(key: str, shape, n: int, device):
    if key in BUILTIN_DATA:
        (x, y), _ = fl_data.load_builtin(BUILTIN_DATA[key])
        return x[:n].reshape(-1, *shape).to(device), y[:n].to(device)
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, *shape, generator=g).to(device), torch.randint(
        0, 10, (n,), generator=g
    ).to(device)


def make_plane(name, shape, kwargs):
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(build_model(name, shape, 10, **kwargs))
    return nets[0], Plane.through(*nets)


def grid_coords(points: int) -> torch.Tensor:
    side = int(round(points**0.5))
    axis = torch.linspace(-0.5, 1.5, side, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return affine_coords(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def vmap_loss(model, plane, coords, data, chunk: int):
    """torch.func.vmap over stacked per-point weights, in chunks of points."""
    x, y = data
    names = list(plane.basis)
    losses = []
    for start in range(0, len(coords), chunk):
        c = coords[start : start + chunk].to(x.device, torch.float32)
        params = {n: torch.tensordot(c, plane.basis[n].to(x.device), dims=1) for n in names}

        def one(p):
            logits = torch.func.functional_call(model, p, (x,))
            return F.cross_entropy(logits, y)

        with torch.no_grad():
            losses.append(torch.func.vmap(one)(params))
    return torch.cat(losses).double().cpu().numpy()


@functools.cache
def gemm_rate(device, dtype) -> float:
    # A CPU without native bf16 multiplies bf16 2048x2048 matrices in about a minute.
    n = 512 if device.type == "cpu" and dtype == torch.bfloat16 else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    seconds, _ = timed(lambda: torch.mm(a, b), device, repeats=5)
    return 2 * n**3 / seconds


def forward_flops(model, x) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


def run(key, device, points, repeats, dtypes=("fp32", "bf16"), bf16_points=None):
    title, name, shape, n, kwargs = WORKLOADS[key]
    model, plane = make_plane(name, shape, kwargs)
    data = make_data(key, shape, n, device)
    coords = grid_coords(points)
    K = len(coords)
    model = model.to(device)
    has_bn = has_batch_norm(model)
    row = {"workload": key, "title": title, "points": K, "samples": n}
    serial_points = coords[: max(4, K // 8)]  # the serial loop is linear in K: time a slice

    def serial(points):
        return evaluate_serial(
            model, plane.to(device), points.to(device), data, bn="recompute", batch_size=n
        )

    chunk = 16 if device.type == "cpu" else 256
    evaluations = {
        label: prepare(model, plane, {"train": data}, device=device, dtype=dtype)
        for label, dtype in (("fp32", None), ("bf16", torch.bfloat16))
        if label in dtypes
    }
    # Every method is warmed up (oneDNN builds its kernels on first use), then the methods
    # take turns, `repeats` rounds, each timed as its best round: so a slow moment of the
    # machine, or a process whose allocator is still cold, hits all of them alike.
    serial(serial_points[:1])
    if not has_bn:
        vmap_loss(model, plane, coords[:chunk], data, chunk)
    best: dict[str, float] = {}
    profiles: dict[str, Any] = {}
    for _ in range(repeats):
        t, (serial_loss, _) = timed(lambda: serial(serial_points), device)
        best["serial"] = min(best.get("serial", t), t)
        if not has_bn:
            t, vloss = timed(lambda: vmap_loss(model, plane, coords, data, chunk), device)
            best["vmap"] = min(best.get("vmap", t), t)
        for label, ev in evaluations.items():
            here = coords[:bf16_points] if label == "bf16" and bf16_points else coords
            prof = profile_run(ev, here, LossMetrics(ev.loss), top=PROFILED_OPS)
            if label not in profiles or prof.seconds < profiles[label].seconds:
                profiles[label] = prof
    row["serial_ms_per_point"] = 1e3 * best["serial"] / len(serial_points)
    if not has_bn:
        row["vmap_ms_per_point"] = 1e3 * best["vmap"] / K
    results = {}
    for label, prof in profiles.items():
        results[label] = prof.values["train_loss"].reshape(-1)
        row[f"fastloss_{label}_ms_per_point"] = prof.ms_per_point
        row[f"{label}_top_ops"] = [[op.name, op.share] for op in prof.ops[:3]]
        other = [op for op in prof.ops if not LAYER_OPS.search(op.name)]
        row[f"{label}_largest_parameter_free_op"] = (
            [other[0].name, other[0].share] if other else ["-", 0.0]
        )
    fp32 = results["fp32"]
    row["fp32_max_rel_error_vs_serial"] = float(
        np.max(np.abs(fp32[: len(serial_loss)] - serial_loss) / np.abs(serial_loss))
    )
    if "bf16" in results:
        bf16 = results["bf16"]
        row["bf16_points"] = len(bf16)
        row["bf16_max_rel_error_vs_fp32"] = float(
            np.max(np.abs(bf16 - fp32[: len(bf16)]) / np.abs(fp32[: len(bf16)]))
        )
    if not has_bn:
        row["vmap_max_rel_error_vs_fp32"] = float(np.max(np.abs(vloss - fp32) / np.abs(fp32)))
    flops = forward_flops(model, data[0]) * (2 if has_bn else 1)  # BN recompute: a second pass
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if label in results:
            row[f"limit_{label}_ms_per_point"] = 1e3 * flops / gemm_rate(device, dtype)
            row[f"speedup_{label}"] = (
                row["serial_ms_per_point"] / row[f"fastloss_{label}_ms_per_point"]
            )
    if "vmap_ms_per_point" in row:
        row["vs_vmap_fp32"] = row["vmap_ms_per_point"] / row["fastloss_fp32_ms_per_point"]
    print(
        f"  ({key}) {title}: "
        + ", ".join(f"{k}={v:.3g}" for k, v in row.items() if isinstance(v, float)),
        file=sys.stderr,
        flush=True,
    )
    return row


def short(name: str) -> str:
    return name.removeprefix("aten::")


def ops_cell(ops) -> str:
    return ", ".join(f"{short(name)} {100 * share:.0f}%" for name, share in ops)


def markdown(rows) -> str:
    head = (
        "| workload | K | N | serial ms/pt | vmap ms/pt | fastloss fp32 ms/pt "
        "| fastloss bf16 ms/pt | fp32 × serial | bf16 × serial | fp32 × vmap "
        "| fp32 limit ms/pt | bf16 limit ms/pt | bf16 max rel err |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        vmap = f"{r['vmap_ms_per_point']:.2f}" if "vmap_ms_per_point" in r else "n/a"
        vs = f"{r['vs_vmap_fp32']:.1f}" if "vs_vmap_fp32" in r else "n/a"

        def cell(key, fmt=".2f", r=r):
            return "n/a" if key not in r else format(r[key], fmt)

        lines.append(
            f"| ({r['workload']}) {r['title']} | {r['points']} | {r['samples']} | "
            f"{r['serial_ms_per_point']:.2f} | {vmap} | {r['fastloss_fp32_ms_per_point']:.2f} | "
            f"{cell('fastloss_bf16_ms_per_point')} | {r['speedup_fp32']:.2f} | "
            f"{cell('speedup_bf16')} | {vs} | {r['limit_fp32_ms_per_point']:.2f} | "
            f"{cell('limit_bf16_ms_per_point')} | {cell('bf16_max_rel_error_vs_fp32', '.1e')} |"
        )
    head = (
        "| workload | fp32: top 3 ops (share of the run) | fp32: largest parameter-free op "
        "or copy | bf16: top 3 ops | bf16: largest parameter-free op or copy |"
    )
    lines += ["", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [f"({r['workload']})"]
        for label in ("fp32", "bf16"):
            if f"{label}_top_ops" not in r:
                cells += ["n/a", "n/a"]
                continue
            name, share = r[f"{label}_largest_parameter_free_op"]
            cells += [ops_cell(r[f"{label}_top_ops"]), f"{short(name)} {100 * share:.0f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--points", type=int, default=None, help="grid points (default 64 on CPU, 2601 on GPU)"
    )
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtypes", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument(
        "--skip-bf16",
        nargs="+",
        choices=list(WORKLOADS),
        default=[],
        help="workloads timed in fp32 only (on a CPU without native bf16 a conv net's bf16 "
        "point takes minutes)",
    )
    parser.add_argument(
        "--bf16-points",
        type=int,
        help="time bf16 on the first N points only (a CPU without native bf16 is slow)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    points = args.points or (64 if device.type == "cpu" else 2601)
    rows = [
        run(
            key,
            device,
            points,
            args.repeats,
            [d for d in args.dtypes if not (d == "bf16" and key in args.skip_bf16)],
            args.bf16_points,
        )
        for key in args.only
    ]
    print(markdown(rows))
    label = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    write_results("grid", device, label, rows, args.out)


if __name__ == "__main__":
    main()
