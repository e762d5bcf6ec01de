"""``fastloss train``: train a model on built-in or user data and save its checkpoint."""

from __future__ import annotations

import argparse

import torch

from fastloss.cli.options import add_data_options, command, load_data_from, report
from fastloss.data import num_classes
from fastloss.io import save_checkpoint
from fastloss.io.hashing import data_hash
from fastloss.models import build_model
from fastloss.training import train


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train",
        help="train a model and save a checkpoint",
        description="Train a model on built-in or user data (seeded) and save its checkpoint.",
    )
    p.add_argument(
        "--model",
        default="mlp",
        help="mlp, lenet5, mpo-cnn, mpo-cnn-bn, "
        "resnet20, resnet20-noskip, vgg16, or module:callable",
    )
    p.add_argument("--widths", type=int, nargs="+", help="hidden widths of the mlp")
    add_data_options(p)
    p.add_argument("--epochs", type=int, help="default: the training loop's own")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="checkpoint path (.pt or .safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    command(p, _train)


def _train(args: argparse.Namespace) -> int:
    train_data, test_data = load_data_from(args)
    torch.manual_seed(args.seed)
    kwargs = {"widths": tuple(args.widths)} if args.widths else {}
    classes = num_classes(train_data, test_data)
    model = build_model(args.model, tuple(train_data[0].shape[1:]), classes, **kwargs)
    options = {
        k: getattr(args, k) for k in ("epochs", "lr", "batch_size") if getattr(args, k) is not None
    }
    history = train(
        model,
        train_data,
        test_data,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
        **options,
    )
    scores = {k: float(v) for k, v in history.items() if isinstance(v, float | int)}
    meta = {"data": args.data, "seed": args.seed, "data_hash": data_hash(*train_data), **scores}
    save_checkpoint(model.cpu(), args.out, meta=meta, overwrite=args.overwrite)
    print(
        f"{args.out}: {args.model} on {args.data}, "
        + ", ".join(f"{k} {v:.4g}" for k, v in scores.items())
    )
    report(args, out=args.out, files=[args.out], model=args.model, data=args.data, **scores)
    return 0
