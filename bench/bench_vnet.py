"""Ensemble prediction of a variational network over K = 100 weight samples, side by side in
one process: the per-sample loops, torch.func.vmap, and fastloss.

- LRT loop (what da-molchanov/variance-networks runs): K forward passes in train mode, each
  drawing fresh local-reparametrisation noise, probabilities averaged.
- sample loop: per sample, load its weights into the plain network and predict
  (`fastloss.ensembles.serial_ensemble` over `fastloss.variational.sample_states`).
- vmap: the K samples' weights stacked, one ``torch.func.vmap(functional_call)``.
- fastloss: `fastloss.variational.predict_modes`, the mean and the K samples as points of
  the one-hot subspace in one batched pass per chunk (what `fastloss vnet` runs).

The three weight-sample methods are checked equal before timing (the LRT loop draws other
noise, so only its accuracy is shown beside theirs). Every time includes drawing the K
samples, also shown alone, beside the compute floor: the K networks' FLOPs at this device's
batched-GEMM rate, which no method doing this arithmetic beats. Workloads (untrained
networks: the timing does not depend on the weights):
  (a) MLP 40-256-256-10, variational dropout per weight, MNIST-1D test (1000)
  (b) LeNet-5, Gaussian dropout, digits test (360)

    python bench/bench_vnet.py [--device cuda] [--only a b] [--samples 100] [--repeats 3]
prints a Markdown table and writes bench/results/vnet-<device>.json.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time

import numpy as np
import torch
from record import compute_floor, write_results
from torch.func import functional_call, vmap

import fastloss
from fastloss import data as fl_data
from fastloss.engine import keep_freed_memory
from fastloss.ensembles import serial_ensemble
from fastloss.ensembles.evaluate import score_members
from fastloss.models import build_model
from fastloss.variational import (
    plain_model,
    predict_modes,
    sample_states,
    sample_weights,
    variational,
)

WORKLOADS = {
    "a": ("MLP 40-256-256-10, VD per weight, MNIST-1D", "mlp", "mnist1d", "weight"),
    "b": ("LeNet-5, Gaussian dropout, digits", "lenet5", "digits", "dropout"),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_workload(key):
    title, name, data_name, kind = WORKLOADS[key]
    train, test = fl_data.load_builtin(data_name)
    test = (test[0][:1000], test[1][:1000])
    torch.manual_seed(0)
    model = variational(build_model(name, tuple(train[0].shape[1:]), 10), kind, log_alpha=-2.0)
    return title, model, test


@torch.no_grad()
def lrt_loop(model, x, samples):
    model.train()
    probs = sum(torch.softmax(model(x).double(), -1) for _ in range(samples)) / samples
    model.eval()
    return probs


def vmap_probs(model, members, x):
    net = plain_model(model).to(x.device).eval()
    params = {n: torch.stack([m[n] for m in members]).to(x.device) for n in members[0]}

    def one(w):
        return functional_call(net, w, (x,))

    with torch.no_grad():
        return torch.softmax(vmap(one)(params).double(), -1)


def run(key, device, samples, repeats) -> dict:
    title, model, test = make_workload(key)
    model = model.to(device)
    x, y = test[0].to(device), test[1].to(device)
    labels = test[1].numpy()
    row = {"workload": key, "title": title, "samples": samples, "test_n": len(labels)}

    def draws():
        return [{n: t.to(device) for n, t in s.items()} for s in sample_states(model, samples)]

    methods = {
        "sample_loop": lambda: serial_ensemble(plain_model(model), draws(), (x, y)).member_probs,
        "vmap": lambda: (
            score_members(vmap_probs(model, draws(), x).cpu().numpy(), labels).member_probs
        ),
        "fastloss": lambda: (
            predict_modes(model, (x, y), samples, device=device).samples.member_probs
        ),
        "lrt_loop": lambda: lrt_loop(model, x, samples).cpu().numpy(),
    }
    net = plain_model(model).to(device).eval()
    row["compute_floor_s"] = compute_floor(lambda: net(x), samples, device)
    start = time.perf_counter()
    sample_weights(model, samples)
    row["draw_s"] = time.perf_counter() - start  # in every weight-sample method's time
    probs = {name: np.asarray(f()) for name, f in methods.items()}
    for name in ("vmap", "fastloss"):
        row[f"max_prob_diff_{name}"] = float(np.abs(probs[name] - probs["sample_loop"]).max())
    if max(row["max_prob_diff_vmap"], row["max_prob_diff_fastloss"]) > 1e-3:
        raise SystemExit(f"({key}) predictions differ from the per-sample loop: {row}")
    row["ensemble_acc"] = float((probs["sample_loop"].mean(0).argmax(1) == labels).mean())
    row["lrt_ensemble_acc"] = float((probs["lrt_loop"].argmax(1) == labels).mean())
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
    for name in ("vmap", "fastloss", "lrt_loop"):
        row[f"{name}_speedup"] = row["sample_loop_s"] / row[f"{name}_s"]
    return row


def markdown(rows) -> str:
    head = (
        "| workload | sample loop s | LRT loop s | vmap s | fastloss s | fastloss × sample loop "
        "| fastloss × LRT loop | compute floor s | drawing the samples s | max prob. diff |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        diff = max(r["max_prob_diff_vmap"], r["max_prob_diff_fastloss"])
        lines.append(
            f"| ({r['workload']}) {r['title']}, K = {r['samples']} | {r['sample_loop_s']:.3f} "
            f"| {r['lrt_loop_s']:.3f} | {r['vmap_s']:.3f} | {r['fastloss_s']:.3f} "
            f"| {r['fastloss_speedup']:.2f} | {r['lrt_loop_s'] / r['fastloss_s']:.2f} "
            f"| {r['compute_floor_s']:.3f} | {r['draw_s']:.3f} | {diff:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=100)
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
    write_results("vnet", device, label, rows, args.out, freed_memory_kept=kept)


if __name__ == "__main__":
    main()
