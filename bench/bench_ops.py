"""Op benchmarks: fastloss against its peers, side by side in one process.

For each layer of the papers' networks (and their batch norms), at K points and B samples per
point (J = 3, a plane):
- loop:     a Python loop over points, materialising W_k and calling F.linear / F.conv2d /
            F.batch_norm (what loss-landscape and dnn-mode-connectivity do);
- vmap:     torch.func.vmap over the points;
- ceiling:  one single-weight F.linear / F.conv2d / F.batch_norm over the whole K·B batch;
- fastloss: the compiled op.
Every fastloss result is checked against the loop before it is timed.

    python bench/bench_ops.py [--device cuda] [--dtype bfloat16] [--quick]
prints a Markdown table and writes bench/results/ops-<device>.json.
    pytest bench/bench_ops.py --benchmark-only
runs a few of the same cases under pytest-benchmark.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from record import write_results
from torch.utils.benchmark import Timer

from fastloss import ops
from fastloss.ops import build_info

J = 3
# CPU runs skip cases whose single-weight ceiling exceeds this many FLOPs (seconds per call)
# or whose [K, B, ...] output exceeds this many elements (the loop and vmap hold several).
CPU_FLOP_CAP = 50e9
CPU_OUTPUT_CAP = 1.5e8


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str  # "linear", "conv" or "bn" (training-mode batch norm, cin = cout channels)
    cin: int
    cout: int
    size: int = 0  # input height = width for convs and batch norms of maps
    shared: bool = False  # first layer: every point sees the same input

    def outputs(self, rows: int) -> float:
        return float(rows * self.cout * self.size * self.size if self.size else rows * self.cout)

    def flops(self, rows: int) -> float:
        if self.kind == "bn":
            return 10.0 * self.outputs(rows)
        if self.kind == "linear":
            return 2.0 * rows * self.cin * self.cout
        return 2.0 * rows * self.cin * self.cout * 9 * self.size * self.size


LAYERS = [
    Layer("mlp fc1 784-256 (shared x)", "linear", 784, 256, shared=True),
    Layer("mlp fc2 256-256", "linear", 256, 256),
    Layer("mlp fc3 256-10", "linear", 256, 10),
    Layer("mpo conv1 1-8 28x28 (shared x)", "conv", 1, 8, 28, shared=True),
    Layer("mpo conv2 8-32 14x14", "conv", 8, 32, 14),
    Layer("mpo conv3 32-64 7x7", "conv", 32, 64, 7),
    Layer("resnet20 16-16 32x32", "conv", 16, 16, 32),
    Layer("resnet20 32-32 16x16", "conv", 32, 32, 16),
    Layer("resnet20 64-64 8x8", "conv", 64, 64, 8),
    # [K, B, C] rows: one block per point and 32 channels, coalesced along C (S = 1 path).
    Layer("mlp bn 256 (rows)", "bn", 256, 256),
    Layer("resnet20 bn 64 8x8", "bn", 64, 64, 8),
]


def make_case(layer: Layer, K: int, B: int, dtype: torch.dtype, device: torch.device):
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    if layer.kind == "bn":
        maps = (layer.size, layer.size) if layer.size else ()
        x = rand(K, B, layer.cin, *maps)
        weight = 1 + 0.1 * rand(J, layer.cout)
    elif layer.kind == "linear":
        x = rand(B, layer.cin) if layer.shared else rand(K, B, layer.cin)
        weight = rand(J, layer.cout, layer.cin) / layer.cin**0.5
    else:
        shape = (layer.cin, layer.size, layer.size)
        x = rand(B, *shape) if layer.shared else rand(K, B, *shape)
        weight = rand(J, layer.cout, layer.cin, 3, 3) / (9 * layer.cin) ** 0.5
    bias = rand(J, layer.cout)
    coords = torch.randn(K, J, generator=g).to(
        device=device, dtype=torch.float32 if dtype != torch.float64 else dtype
    )
    return x, weight, bias, coords


def methods(layer: Layer, x, weight, bias, coords):
    """The four ways to compute the layer at K points, as zero-argument callables."""
    if layer.kind == "bn":
        return batch_norm_methods(x, weight, bias, coords)
    K = coords.shape[0]
    c = coords.to(weight.dtype)
    conv = layer.kind == "conv"
    op = (lambda x_, w, b: F.conv2d(x_, w, b, padding=1)) if conv else F.linear

    def loop():
        outs = []
        for k in range(K):
            w_k = torch.tensordot(c[k], weight, dims=1)
            outs.append(op(x if layer.shared else x[k], w_k, c[k] @ bias))
        return torch.stack(outs)

    point = torch.func.vmap(
        lambda ck, xk: op(xk, torch.tensordot(ck, weight, dims=1), ck @ bias),
        in_dims=(0, None if layer.shared else 0),
    )
    rows = x.expand(K, *x.shape) if layer.shared else x
    flat = rows.reshape(-1, *rows.shape[2:]).contiguous()

    def ceiling():
        return op(flat, weight[0], bias[0])

    def fast():
        if conv:
            return ops.subspace_conv2d(x, weight, bias, coords, padding=1)
        return ops.subspace_linear(x, weight, bias, coords)

    found = {"loop": loop, "vmap": lambda: point(c, x), "ceiling": ceiling, "fastloss": fast}
    if conv and not layer.shared:  # the per-point path this device does not take by default
        other = "loop" if x.is_cuda else "grouped"
        found[f"fastloss_{other}"] = lambda: with_per_point_path(other, fast)
    return found


def with_per_point_path(path: str, fn):
    """``fn()`` with per-point convolutions forced onto ``path`` ("grouped": one grouped
    convolution over the points; "loop": one convolution per point)."""
    before = os.environ.get("FASTLOSS_CONV_PER_POINT")
    os.environ["FASTLOSS_CONV_PER_POINT"] = path
    try:
        return fn()
    finally:
        if before is None:
            del os.environ["FASTLOSS_CONV_PER_POINT"]
        else:
            os.environ["FASTLOSS_CONV_PER_POINT"] = before


def batch_norm_methods(x, weight, bias, coords):
    """`methods` for a training-mode batch norm with each point's statistics and affine."""
    c = coords.to(weight.dtype)

    def point(xk, ck):
        return F.batch_norm(xk, None, None, ck @ weight, ck @ bias, True)

    flat = x.reshape(-1, *x.shape[2:])
    return {
        "loop": lambda: torch.stack([point(x[k], c[k]) for k in range(x.shape[0])]),
        "vmap": lambda: torch.func.vmap(point)(x, c),
        "ceiling": lambda: F.batch_norm(flat, None, None, weight[0], bias[0], True),
        "fastloss": lambda: ops.pointwise_batch_norm(x, None, None, weight, bias, coords, True),
    }


def time_ms(fn, min_run_time: float) -> float:
    return (
        Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median * 1e3
    )


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


def run(device: torch.device, dtype: torch.dtype, Ks, Bs, min_run_time: float) -> list[dict]:
    rows = []
    for layer in LAYERS:
        for K in Ks:
            for B in Bs:
                too_big = layer.flops(K * B) > CPU_FLOP_CAP or layer.outputs(K * B) > CPU_OUTPUT_CAP
                if device.type == "cpu" and too_big:
                    continue
                case = make_case(layer, K, B, dtype, device)
                fns = methods(layer, *case)
                error = relative_error(fns["fastloss"](), fns["loop"]())
                if not error < (2e-2 if dtype in (torch.bfloat16, torch.float16) else 1e-4):
                    raise AssertionError(
                        f"{layer.name} K={K} B={B}: fastloss differs from the loop "
                        f"by {error:.2e}; not timing a wrong result"
                    )
                ms = {name: time_ms(fn, min_run_time) for name, fn in fns.items()}
                rows.append(
                    {
                        "layer": layer.name,
                        "K": K,
                        "B": B,
                        "dtype": str(dtype).split(".")[1],
                        **{f"{m}_ms": round(v, 4) for m, v in ms.items()},
                        "ceiling_ratio": round(ms["ceiling"] / ms["fastloss"], 3),
                        "speedup_vs_loop": round(ms["loop"] / ms["fastloss"], 2),
                        "speedup_vs_vmap": round(ms["vmap"] / ms["fastloss"], 2),
                        "rel_error_vs_loop": float(f"{error:.2e}"),
                        "shared_goal_x": round(K / (2 * J), 1) if layer.shared else None,
                    }
                )
                print(
                    f"  {layer.name:32s} K={K:3d} B={B:3d} "
                    + " ".join(f"{m}={v:8.3f}ms" for m, v in ms.items()),
                    file=sys.stderr,
                    flush=True,
                )
    return rows


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {torch.get_num_threads()} threads"


def markdown(rows: list[dict]) -> str:
    head = (
        "| layer | K | B | dtype | loop ms | vmap ms | ceiling ms | fastloss ms | ceiling ratio "
        "| × loop | × vmap |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['K']} | {r['B']} | {r['dtype']} | {r['loop_ms']:.3f} | "
            f"{r['vmap_ms']:.3f} | {r['ceiling_ms']:.3f} | {r['fastloss_ms']:.3f} | "
            f"{r['ceiling_ratio']:.2f} | {r['speedup_vs_loop']:.1f} | {r['speedup_vs_vmap']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype",
        nargs="+",
        default=None,
        help="float32 bfloat16 ... (default: float32 on CPU, float32 and bfloat16 on CUDA)",
    )
    parser.add_argument("--quick", action="store_true", help="K=16, B=64 only, short timing")
    parser.add_argument(
        "--out", default=None, help="JSON path (default bench/results/ops-<device>.json)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    dtypes = args.dtype or (["float32", "bfloat16"] if device.type == "cuda" else ["float32"])
    Ks, Bs = ([16], [64]) if args.quick else ([16, 256], [64, 512])
    rows = []
    for name in dtypes:
        rows += run(device, getattr(torch, name), Ks, Bs, 0.05 if args.quick else 0.3)
    table = markdown(rows)
    print(table)
    if not args.quick or args.out:
        write_results(
            "ops",
            device,
            device_name(device),
            rows,
            args.out,
            cuda=torch.version.cuda,
            build=build_info(),
            J=J,
            cpu_flop_cap=CPU_FLOP_CAP if device.type == "cpu" else None,
        )


# ---- pytest-benchmark ------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # the script runs without pytest
    pytest = None

if pytest is not None:
    _BENCH_LAYERS = [LAYERS[0], LAYERS[1], LAYERS[4], LAYERS[6]]

    @pytest.mark.parametrize("method", ["loop", "vmap", "ceiling", "fastloss"])
    @pytest.mark.parametrize("layer", _BENCH_LAYERS, ids=lambda layer: layer.name.split(" (")[0])
    def test_op(benchmark, layer, method):
        fns = methods(layer, *make_case(layer, 16, 64, torch.float32, torch.device("cpu")))
        if method == "fastloss":
            assert relative_error(fns["fastloss"](), fns["loop"]()) < 1e-4
        benchmark(fns[method])


if __name__ == "__main__":
    main()
