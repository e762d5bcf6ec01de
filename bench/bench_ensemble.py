"""Bayesian model averaging over 30 SWAG samples, side by side in one process: the loop that
swa_gaussian runs, torch.func.vmap, and fastloss.

Reference (wjmaddox/swa_gaussian's ``uncertainty`` script): for every sample, load its
weights into the model, ``torch.optim.swa_utils.update_bn`` over the training data, predict
the test data (`fastloss.ensembles.serial_ensemble`). vmap: the samples' weights stacked
``[M, ...]``, one ``torch.func.vmap(functional_call)`` over the test data (models without
BatchNorm only: vmap cannot run ``update_bn``'s in-place running averages). fastloss:
`fastloss.ensembles.evaluate_ensemble`, every sample a point of the one-hot subspace, their BN
statistics recomputed in one batched pass over the training data, then one over the test
data. Before timing, the methods' predicted probabilities are checked equal.

Workloads (SWAG collected over a short SWA run, 30 samples at scale 0.5):
  (a) MLP 40-256-256-10 on MNIST-1D (test 1000 samples)
  (b) mpo-cnn-bn (3×3 convs 8/32/64 with BatchNorm, 4×4 pool, 128 units) on the 8×8 digits
      (BN update over 1437 train samples, test 360)

    python bench/bench_ensemble.py [--device cuda] [--only a b] [--samples 30] [--repeats 3]
prints a Markdown table and writes bench/results/ensemble-<device>.json;
``pytest bench/bench_ensemble.py --benchmark-only`` times the MLP's BMA under pytest-benchmark.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import sys
import time

import numpy as np
import torch
from record import compute_floor, write_results
from torch.func import functional_call, vmap

import fastloss
from fastloss import data as fl_data
from fastloss.engine import has_batch_norm, keep_freed_memory
from fastloss.ensembles import SWAG, evaluate_ensemble, serial_ensemble, train_swa
from fastloss.ensembles.evaluate import score_members
from fastloss.models import build_model

WORKLOADS = {
    "a": ("MLP 40-256-256-10, MNIST-1D", "mlp", "mnist1d", {"widths": (256, 256)}),
    "b": ("mpo-cnn-bn, digits", "mpo-cnn-bn", "digits", {}),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_workload(key, samples):
    """The model, its SWAG samples (state dicts on the CPU), train and test data."""
    title, name, data_name, kwargs = WORKLOADS[key]
    train, test = fl_data.load_builtin(data_name)
    test = (test[0][:1000], test[1][:1000])
    torch.manual_seed(0)
    model = build_model(name, tuple(train[0].shape[1:]), 10, **kwargs)
    swag = SWAG(model, max_rank=20)
    train_swa(model, train, epochs=8, swa_start=4, lr=0.05, swa_lr=0.02, swag=swag)
    members = swag.samples(samples, scale=0.5, seed=0)
    return title, model, members, train, test


def vmap_probs(model, members, x, device):
    params = {n: torch.stack([m[n] for m in members]).to(device) for n in members[0]}
    buffers = {n: b.to(device) for n, b in model.named_buffers()}
    net = model.to(device).eval()

    def one(w):
        return functional_call(net, (w, buffers), (x,))

    with torch.no_grad():
        return torch.softmax(vmap(one)(params).double(), -1)


def members_floor(model, members, train, test, bn, device) -> float:
    """The members' compute floor (`record.compute_floor`): the BN update's forward over the
    train data where there is BN, and the forward over the test data, per member."""
    net = copy.deepcopy(model).to(device)

    def passes():
        if bn:
            net.train()(train[0])
        net.eval()(test[0])

    return compute_floor(passes, len(members), device)


def run(key, device, samples, repeats) -> dict:
    title, model, members, train, test = make_workload(key, samples)
    bn = has_batch_norm(model)
    row = {"workload": key, "title": title, "samples": samples, "bn_update": bn}
    row.update({"train_n": len(train[1]), "test_n": len(test[1])})
    net = model.to(device)
    on_device = [{n: t.to(device) for n, t in m.items()} for m in members]
    train_d = (train[0].to(device), train[1].to(device))
    test_d = (test[0].to(device), test[1].to(device))

    methods = {
        "reference": lambda: serial_ensemble(net, on_device, test_d, train_d).member_probs,
        "fastloss": lambda: (
            evaluate_ensemble(net, on_device, test_d, train_d, device=device).member_probs
        ),
    }
    if not bn:  # scored like the others

        def vmap_scored():
            probs = vmap_probs(net, on_device, test_d[0], device).cpu().numpy()
            return score_members(probs, test[1].numpy()).member_probs

        methods["vmap"] = vmap_scored
    probs = {name: np.asarray(f()) for name, f in methods.items()}
    for name in methods:
        if name != "reference":
            row[f"max_prob_diff_{name}"] = float(np.abs(probs[name] - probs["reference"]).max())
    if max(v for k, v in row.items() if k.startswith("max_prob_diff")) > 1e-3:
        raise SystemExit(f"({key}) predictions differ from the reference loop: {row}")
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):  # methods take turns, so a busy moment of the machine hits all
        for name, f in methods.items():
            sync(device)
            start = time.perf_counter()
            f()
            sync(device)
            times[name].append(time.perf_counter() - start)
            print(f"  ({key}) {name}: {times[name][-1]:.3f} s", file=sys.stderr, flush=True)
    for name, t in times.items():
        row[f"{name}_s"] = min(t)
    for name in methods:
        if name != "reference":
            row[f"{name}_speedup"] = row["reference_s"] / row[f"{name}_s"]
    row["compute_floor_s"] = members_floor(net, members, train_d, test_d, bn, device)
    row.setdefault("vmap_s", None)
    row.setdefault("vmap_speedup", None)
    return row


def fmt(value, spec) -> str:
    return "n/a (BN update)" if value is None else format(value, spec)


def markdown(rows) -> str:
    head = (
        "| workload | reference loop s | vmap s | fastloss s | fastloss × loop | vmap × loop "
        "| compute floor s | max prob. diff |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        diff = max(v for k, v in r.items() if k.startswith("max_prob_diff"))
        lines.append(
            f"| ({r['workload']}) {r['title']}, BMA of {r['samples']} SWAG samples "
            f"| {r['reference_s']:.3f} | {fmt(r['vmap_s'], '.3f')} | {r['fastloss_s']:.3f} "
            f"| {r['fastloss_speedup']:.2f} | {fmt(r['vmap_speedup'], '.2f')} "
            f"| {r['compute_floor_s']:.3f} | {diff:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    kept = keep_freed_memory()
    rows = [run(key, device, args.samples, args.repeats) for key in args.only]
    print(
        f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"fastloss {fastloss.__version__}, {datetime.date.today().isoformat()}\n"
    )
    print(markdown(rows))
    label = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    write_results("ensemble", device, label, rows, args.out, freed_memory_kept=kept)


# ---- pytest-benchmark ------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # the script runs without pytest
    pytest = None

if pytest is not None:

    @pytest.mark.parametrize("method", ["reference", "fastloss"])
    def test_bma(benchmark, method):
        keep_freed_memory()
        _, model, members, train, test = make_workload("a", 30)
        run_one = {
            "reference": lambda: serial_ensemble(model, members, test, train),
            "fastloss": lambda: evaluate_ensemble(model, members, test, train, device="cpu"),
        }[method]
        benchmark.pedantic(run_one, rounds=3, warmup_rounds=1)


if __name__ == "__main__":
    main()
