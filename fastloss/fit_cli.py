"""``fastloss curve fit w1.pt w2.pt --out DIR``: fit a curve of low loss between two checkpoints."""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path


def _defaults() -> dict:
    from fastloss.fit import fit_curve

    return {k: p.default for k, p in inspect.signature(fit_curve).parameters.items()}


def register(commands) -> None:
    """Adds ``fit`` to the ``fastloss curve`` subcommands."""
    from fastloss.fit import OPTIMIZERS, SCHEDULES

    d = _defaults()
    p = commands.add_parser(
        "fit",
        help="fit a curve of low loss between two checkpoints",
        description="Train the bends of a Bezier curve or polygonal chain between two "
        "checkpoints of the same architecture so that the loss along it is low (Garipov et "
        "al.). Writes DIR/curve.pt (the latest curve), DIR/steps/step-NNNNNNN.pt snapshots "
        "and DIR/state.pt; rerunning the same command resumes an interrupted fit.",
    )
    p.add_argument("w1", help="checkpoint of the first endpoint (gives the architecture)")
    p.add_argument("w2", help="checkpoint of the second endpoint")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--kind", choices=("bezier", "polychain"), default="bezier", help="default: bezier"
    )
    p.add_argument("--bends", type=int, default=1, help="bends (control points) to fit, default: 1")
    p.add_argument(
        "--init",
        nargs="+",
        metavar="BEND.pt",
        help="checkpoints to start the bends from (default: evenly spaced on the segment)",
    )
    p.add_argument(
        "--data", default="mnist1d", help="mnist1d, digits, or a data path, default: mnist1d"
    )
    p.add_argument("--train-samples", type=int, help="fit on a seeded subset of the train set")
    p.add_argument("--data-seed", type=int, default=42, help="default: %(default)s")
    p.add_argument("--epochs", type=int, default=d["epochs"], help="default: %(default)s")
    p.add_argument("--lr", type=float, default=d["lr"], help="default: %(default)s")
    p.add_argument(
        "--wd",
        type=float,
        default=d["wd"],
        help="weight decay on the curve's points, default: %(default)s",
    )
    p.add_argument(
        "--samples-per-step",
        type=int,
        default=d["samples_per_step"],
        help="points t ~ U[0, 1] per step, in one batched pass; default: 1, the paper's estimator",
    )
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="default: %(default)s")
    p.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=d["optimizer"], help="default: %(default)s"
    )
    p.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=d["schedule"],
        help="garipov (default): constant, then linearly down to 1%% from 50%% to 90%% of the fit",
    )
    p.add_argument("--seed", type=int, default=d["seed"], help="default: %(default)s")
    p.add_argument(
        "--save-every",
        type=int,
        help="also snapshot the curve every this many steps (default: first and last)",
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a fit made with other settings"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_fit)


_ARCHITECTURE = ("model", "in_shape", "num_classes", "kwargs")


def _fit(args: argparse.Namespace) -> int:
    from fastloss import checkpoints, data
    from fastloss.curves import make_curve
    from fastloss.fit import fit_curve

    model = checkpoints.build_from_checkpoint(args.w1)
    state1, meta1 = checkpoints.load_checkpoint(args.w1)
    state2, meta2 = checkpoints.load_checkpoint(args.w2)
    for key in _ARCHITECTURE:
        if key in meta2 and meta2[key] != meta1.get(key):
            raise ValueError(
                f"{args.w1} and {args.w2} are different architectures: {key} is "
                f"{meta1.get(key)!r} in the first and {meta2[key]!r} in the second"
            )
    init = [checkpoints.load_checkpoint(path)[0] for path in args.init or []] or None
    if init is not None and len(init) != args.bends:
        raise ValueError(f"--init gives {len(init)} checkpoint(s) for --bends {args.bends}")
    curve = make_curve(args.kind, state1, state2, args.bends, init)
    train, _ = data.load_dataset(args.data, seed=args.data_seed)
    train = data.subsample(train, args.train_samples, seed=args.data_seed)
    in_shape = list(train[0].shape[1:])
    if in_shape != list(meta1["in_shape"]):
        raise ValueError(
            f"{args.w1} takes inputs of shape {meta1['in_shape']} but {args.data} has "
            f"{in_shape}; fit on the data the networks were trained on"
        )
    if int(train[1].max()) >= int(meta1["num_classes"]):
        raise ValueError(
            f"{args.data} has labels up to {int(train[1].max())} but {args.w1} has "
            f"{meta1['num_classes']} classes"
        )
    try:
        fitted, history = fit_curve(
            model,
            curve,
            train,
            epochs=args.epochs,
            lr=args.lr,
            wd=args.wd,
            samples_per_step=args.samples_per_step,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            schedule=args.schedule,
            seed=args.seed,
            out=args.out,
            save_every=args.save_every,
            overwrite=args.overwrite,
            device=args.device,
            progress=not args.quiet,
            model_meta={**{k: meta1[k] for k in _ARCHITECTURE if k in meta1}, "data": args.data},
        )
    except FloatingPointError as error:
        raise ValueError(str(error)) from error
    except KeyboardInterrupt:
        print(
            f"fastloss curve fit: interrupted; {args.out} keeps the last saved state, and the "
            "same command resumes from it",
            file=sys.stderr,
        )
        return 130
    out = Path(args.out)
    resumed = history["resumed_from"]
    how = "already finished" if history["already_finished"] else f"{history['seconds']:.1f} s"
    print(
        f"{out / 'curve.pt'}: {fitted.kind} curve with {fitted.bends} bend(s), "
        f"{args.epochs} epochs ({history['steps']} steps), {how}"
        + (f", resumed at step {resumed}" if resumed else "")
    )
    print(f"  snapshots in {out / 'steps'}, resume state in {out / 'state.pt'}")
    print(
        f"  final train loss {history['train_loss']:.4f}, accuracy {history['train_acc']:.2f}% "
        "(last epoch, mean over t ~ U[0, 1])"
    )
    return 0
