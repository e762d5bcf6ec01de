"""``fastloss vnet train | eval``: variational dropout and variance networks from the
command line (Neklyudov et al. 2018)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastloss.cli.options import (
    add_data_options,
    check_fits,
    check_outputs,
    command,
    load_data_from,
    report,
)
from fastloss.data import Dataset, num_classes
from fastloss.errors import ArgumentError
from fastloss.io.atomic import atomic_output, write_errors
from fastloss.io.hashing import data_hash
from fastloss.io.settings import jsonable
from fastloss.models import build_model
from fastloss.variational import KINDS, PredictionModes, predict_modes, snr, train_vnet, variational
from fastloss.variational.checkpoint import load_vnet, save_vnet
from fastloss.variational.model import hidden_layers
from fastloss.viz.ensembles import save_figure
from fastloss.viz.variational import plot_accuracy_by_samples, plot_snr

NAMES = {
    "dropout": "Gaussian dropout",
    "layer": "variational dropout (α per layer)",
    "neuron": "variational dropout (α per neuron)",
    "weight": "variational dropout (α per weight)",
    "additive": "variational dropout, additive parametrisation",
    "variance": "variance network",
}


def register(commands: argparse._SubParsersAction) -> None:
    vnet = commands.add_parser(
        "vnet", help="variational dropout and variance networks: train, three predictions"
    )
    group = vnet.add_subparsers(dest="vnet_command", required=True)
    _register_train(group)
    _register_eval(group)


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=int, default=100, help="ensemble size K, default 100")
    p.add_argument(
        "--bn",
        choices=("fixed", "recompute"),
        default="fixed",
        help="BatchNorm statistics: those of training (fixed, default) or each network's own "
        "over the train data (recompute)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs")


def _register_train(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train",
        help="train a variational network by the SGVLB, then its three predictions",
        description="Make the Linear and Conv layers of --model variational (--kind: "
        "dropout, Gaussian dropout at a fixed --alpha; layer, neuron, weight: variational "
        "dropout with α learned per layer, output unit or weight; additive: N(μ, σ²); "
        "variance: N(0, σ²) in the hidden layers, the first and the output layer kept "
        "deterministic unless --layers says otherwise), train by the SGVLB (N · mean "
        "cross-entropy + KL, divided by N) with Adam, "
        "and report the deterministic (mean weights), stochastic (one sample) and ensemble "
        "(--samples K, one batched pass) test accuracies. Writes OUT/vnet.pt, OUT/modes.json, "
        "OUT/accuracy_by_k.png and OUT/snr.png.",
    )
    p.add_argument("--model", default="mlp", help="a built-in model (default mlp)")
    p.add_argument("--widths", type=int, nargs="+", help="hidden widths of an mlp or lenet5")
    p.add_argument("--channels", type=int, nargs=2, help="the two conv widths of a lenet5")
    add_data_options(p)
    p.add_argument("--kind", choices=KINDS, default="weight", help="default weight")
    p.add_argument("--layers", nargs="+", help="glob patterns of the layers to make variational")
    p.add_argument("--alpha", type=float, default=1.0, help="dropout's fixed α (default 1)")
    p.add_argument("--log-alpha", type=float, default=-4.0, help="starting log α (default -4)")
    p.add_argument("--epochs", type=int, default=100, help="default 100")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's rate, default 1e-3")
    p.add_argument("--batch-size", type=int, default=128, help="default 128")
    p.add_argument("--kl-weight", type=float, default=1.0, help="default 1 (the ELBO)")
    p.add_argument("--warmup-epochs", type=int, default=0, help="KL weight from 0 (default 0)")
    _add_eval_options(p)
    command(p, _train)


def _register_eval(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "eval",
        help="the three predictions of a trained variational network",
        description="The deterministic, stochastic and ensemble (--samples K, one batched "
        "pass) test scores of a network written by fastloss vnet train. Writes "
        "OUT/modes.json, OUT/accuracy_by_k.png and OUT/snr.png.",
    )
    p.add_argument("checkpoint", help="a vnet.pt written by fastloss vnet train")
    add_data_options(p)
    _add_eval_options(p)
    command(p, _eval)


def _outputs(out: Path, train: bool) -> list[Path]:
    names = (["vnet.pt"] if train else []) + ["modes.json", "accuracy_by_k.png", "snr.png"]
    return [out / n for n in names]


def _check_request(args: argparse.Namespace, trained: bool) -> Path:
    """Refuse before any work: finished outputs in the way, or an ensemble of one."""
    out = Path(args.out)
    check_outputs(_outputs(out, trained), args.overwrite)
    if args.samples < 2:
        raise ArgumentError(f"--samples must be >= 2 (the ensemble's K), got {args.samples}")
    return out


def _train(args: argparse.Namespace) -> int:
    out = _check_request(args, trained=True)
    train, test = load_data_from(args)
    torch.manual_seed(args.seed)
    kwargs = {"widths": tuple(args.widths)} if args.widths else {}
    if args.channels:
        kwargs["channels"] = tuple(args.channels)
    base = build_model(args.model, tuple(train[0].shape[1:]), num_classes(train, test), **kwargs)
    layers = args.layers
    if layers is None and args.kind == "variance":
        layers = hidden_layers(base)
    model = variational(base, args.kind, layers=layers, alpha=args.alpha, log_alpha=args.log_alpha)
    history = train_vnet(
        model,
        train,
        test,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        kl_weight=args.kl_weight,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    model.cpu()
    meta = {"data": args.data, "data_hash": data_hash(*train), "elbo": history["elbo"]}
    save_vnet(model, out / "vnet.pt", meta, overwrite=True)
    print(
        f"{out}: {NAMES[args.kind]}, {args.model} on {args.data}, {args.epochs} epochs "
        f"(Adam {args.lr:g}, batch {args.batch_size})"
    )
    e = history["elbo"]
    print(
        f"  ELBO {e['elbo']:.1f} (expected log-likelihood {e['expected_log_likelihood']:.1f}, "
        f"KL {e['kl']:.1f})"
    )
    report(args, kind=args.kind, model=args.model, data=args.data, epochs=args.epochs, elbo=e)
    return _report(model, train, test, args, out, {"elbo": e}, trained=True)


def _eval(args: argparse.Namespace) -> int:
    out = _check_request(args, trained=False)
    model, meta = load_vnet(args.checkpoint)
    train, test = load_data_from(args)
    check_fits(train, meta, args.checkpoint, args.data)
    print(f"{args.checkpoint}: {NAMES[meta['variational']['kind']]}, {meta.get('model')}")
    report(args, kind=meta["variational"]["kind"], model=meta.get("model"), data=args.data)
    return _report(model, train, test, args, out, {}, trained=False)


def _report(
    model: nn.Module,
    train: Dataset,
    test: Dataset,
    args: argparse.Namespace,
    out: Path,
    extra: dict[str, Any],
    trained: bool,
) -> int:
    modes: PredictionModes = predict_modes(
        model, test, args.samples, train=train, bn=args.bn, seed=args.seed, device=args.device
    )
    a = modes.accuracies()
    spread = 100 * modes.stochastic_std["acc"]
    print(
        f"  test accuracy  deterministic {a['deterministic']:.2f}%  stochastic "
        f"{a['stochastic']:.2f}% (± {spread:.2f} over samples)  ensemble of "
        f"{args.samples} {a['ensemble']:.2f}%"
    )
    print(
        f"  test NLL       deterministic {modes.deterministic['nll']:.4f}  stochastic "
        f"{modes.stochastic['nll']:.4f}  ensemble {modes.ensemble['nll']:.4f}"
    )
    with write_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    summary = {**modes.summary(), **extra, "samples": args.samples, "seed": args.seed}
    with atomic_output(out / "modes.json", True) as tmp:
        Path(tmp).write_text(json.dumps(jsonable(summary), indent=2))
    by_k = [100 * c["acc"] for c in modes.samples.cumulative]
    save_figure(
        plot_accuracy_by_samples({"network": by_k}, {"network": a["deterministic"]}),
        out / "accuracy_by_k.png",
    )
    save_figure(plot_snr({n: v.numpy() for n, v in snr(model).items()}), out / "snr.png")
    print(f"  wrote {', '.join(str(p) for p in _outputs(out, trained))}")
    report(
        args,
        out=args.out,
        files=_outputs(out, trained),
        samples=args.samples,
        acc={**a, "stochastic_std": spread},
        nll={
            "deterministic": modes.deterministic["nll"],
            "stochastic": modes.stochastic["nll"],
            "ensemble": modes.ensemble["nll"],
        },
    )
    return 0
