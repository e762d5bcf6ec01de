"""The `fastloss` command line: train, plane, line, plot, info, demo, curve and video."""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

import fastloss
from fastloss._extension import build_info


def _info(args: argparse.Namespace) -> int:
    built = build_info()
    print(f"fastloss {fastloss.__version__}")
    print(f"python   {platform.python_version()} ({sys.executable})")
    print(f"torch    {torch.__version__} (CUDA {torch.version.cuda or 'none'})")
    if not built["compiled"]:
        print(
            "kernels  none compiled: ops use the PyTorch references "
            "(build with `pip install --no-build-isolation -e .`)"
        )
    else:
        cuda = (
            f"yes (CUDA {built['cuda_version']}, arch {built['cuda_arch_list']})"
            if built["cuda"]
            else "no"
        )
        print(f"kernels  CPU yes, CUDA {cuda}; compiled against torch {built['torch']}")
    print(
        f"cpu      {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            print(
                f"cuda:{i}   {props.name}, sm_{props.major}{props.minor}, "
                f"{props.total_memory / 2**30:.0f} GiB"
            )
    else:
        print("cuda     no GPU visible")
    return 0


def _axis(text: str) -> tuple[float, float, int]:
    """'lo:hi:n' -> (lo, hi, n)."""
    try:
        lo, hi, n = text.split(":")
        return float(lo), float(hi), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected lo:hi:n such as -0.5:1.5:41, got {text!r}"
        ) from None


def _dtype(name: str | None):
    return {
        None: None,
        "float32": None,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float64": torch.float64,
    }[name]


def _load_data(args):
    from fastloss import data

    train, test = data.load_dataset(args.data, seed=args.data_seed)
    train = data.subsample(train, args.train_samples, seed=args.data_seed)
    test = data.subsample(test, args.test_samples, seed=args.data_seed)
    return train, test


def _train(args: argparse.Namespace) -> int:
    from fastloss import checkpoints, data, models
    from fastloss.train import train

    train_data, test_data = _load_data(args)
    torch.manual_seed(args.seed)
    kwargs = {"widths": tuple(args.widths)} if args.widths else {}
    num_classes = int(max(train_data[1].max(), test_data[1].max())) + 1
    model = models.build_model(args.model, tuple(train_data[0].shape[1:]), num_classes, **kwargs)
    options = {k: getattr(args, k) for k in ("epochs", "lr", "batch_size") if getattr(args, k)}
    history = train(
        model,
        train_data,
        test_data,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
        **options,
    )
    meta = {
        "model": args.model,
        "in_shape": list(train_data[0].shape[1:]),
        "num_classes": num_classes,
        "kwargs": {k: list(v) for k, v in kwargs.items()},
        "data": args.data,
        "seed": args.seed,
        "data_hash": data.data_hash(*train_data),
        **{k: float(v) for k, v in history.items() if isinstance(v, float | int)},
    }
    checkpoints.save_checkpoint(model.cpu(), args.out, meta=meta, overwrite=args.overwrite)
    print(
        f"{args.out}: {args.model} on {args.data}, "
        + ", ".join(f"{k} {v:.4g}" for k, v in history.items() if isinstance(v, float | int))
    )
    return 0


def _evaluate_to_file(args, subspace, model, grid) -> str:
    from fastloss.evaluate import evaluate

    train_data, test_data = _load_data(args)
    start = time.perf_counter()
    surface = evaluate(
        model,
        subspace,
        grid,
        train=train_data,
        test=test_data,
        bn=args.bn,
        batch_size=args.batch_size,
        device=args.device,
        dtype=_dtype(args.dtype),
        out=args.out,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    seconds = time.perf_counter() - start
    points = surface.done.size
    print(f"{args.out}: {points} points in {seconds:.1f} s ({points / seconds:.1f} points/s)")
    for name, values in surface.values.items():
        print(f"  {name:10s} min {float(values.min()):.4g}  max {float(values.max()):.4g}")
    return args.out


def _plane(args: argparse.Namespace) -> int:
    from fastloss import checkpoints
    from fastloss.subspace import Grid, Plane

    model = checkpoints.build_from_checkpoint(args.checkpoints[0])
    if len(args.checkpoints) == 3:
        states = [checkpoints.load_checkpoint(p)[0] for p in args.checkpoints]
        subspace = Plane.through(*states)
    elif len(args.checkpoints) == 1:
        subspace = Plane.random(
            model, seed=args.seed, norm=args.norm, ignore=None if args.keep_biasbn else "biasbn"
        )
    else:
        raise SystemExit(
            "fastloss plane: give three checkpoints (the plane through them) or one "
            "(with two random directions)"
        )
    default = (-0.5, 1.5, 41) if len(args.checkpoints) == 3 else (-1.0, 1.0, 41)
    x = args.x or default
    y = args.y or (x if len(args.checkpoints) == 1 else (-0.5, 1.5, x[2]))
    _evaluate_to_file(args, subspace, model, Grid(x=x, y=y))
    return 0


def _line(args: argparse.Namespace) -> int:
    from fastloss import checkpoints
    from fastloss.subspace import Grid, Line

    model = checkpoints.build_from_checkpoint(args.checkpoints[0])
    states = [checkpoints.load_checkpoint(p)[0] for p in args.checkpoints]
    _evaluate_to_file(args, Line(*states), model, Grid(x=args.x or (-0.25, 1.25, 61)))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from fastloss import plot

    written = plot.plot_file(args.surface, args.out, metric=args.metric, kind=args.kind)
    print(written)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fastloss.demo import run_demo

    run_demo(
        args.out,
        resolution=args.resolution,
        epochs=args.epochs,
        device=args.device,
        progress=not args.quiet,
    )
    return 0


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default="mnist1d",
        help="mnist1d, digits, or a path to IDX / CIFAR / .npz data (default mnist1d)",
    )
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--x", type=_axis, help="x axis as lo:hi:n")
    p.add_argument(
        "--bn",
        choices=("recompute", "fixed"),
        default="recompute",
        help="BatchNorm statistics: recomputed at each point (default) or those of "
        "the first checkpoint",
    )
    p.add_argument("--train-samples", type=int, help="evaluate on a seeded subset of the train set")
    p.add_argument("--test-samples", type=int, help="evaluate on a seeded subset of the test set")
    p.add_argument("--data-seed", type=int, default=42)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float64"), default="float32")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output made with other settings",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastloss", description="Loss surfaces, mode connectivity and fast ensembling."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser(
        "info",
        help="show the version, compiled kernels and devices",
        description="Print the version, torch, which kernels were "
        "compiled (CPU, CUDA, arch list) and the visible devices.",
    )
    info.set_defaults(run=_info)

    train = commands.add_parser(
        "train",
        help="train a model and save a checkpoint",
        description="Train a model on built-in or user data (seeded) and save its checkpoint.",
    )
    train.add_argument(
        "--model",
        default="mlp",
        help="mlp, lenet5, mpo-cnn, mpo-cnn-bn, "
        "resnet20, resnet20-noskip, vgg16, or module:callable",
    )
    train.add_argument("--widths", type=int, nargs="+", help="hidden widths of the mlp")
    train.add_argument("--data", default="mnist1d", help="mnist1d, digits, or a data path")
    train.add_argument("--epochs", type=int, help="default: the training loop's own")
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data-seed", type=int, default=42)
    train.add_argument("--train-samples", type=int)
    train.add_argument("--test-samples", type=int)
    train.add_argument("--device", default="cpu")
    train.add_argument("--out", required=True, help="checkpoint path (.pt or .safetensors)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(run=_train)

    plane = commands.add_parser(
        "plane",
        help="loss surface on a plane -> HDF5",
        description="The plane through three checkpoints, or around "
        "one checkpoint along two random filter-normalised directions.",
    )
    plane.add_argument("checkpoints", nargs="+", help="three checkpoints, or one")
    plane.add_argument("--y", type=_axis, help="y axis as lo:hi:n")
    plane.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    plane.add_argument("--norm", choices=("filter", "layer", "none"), default="filter")
    plane.add_argument(
        "--keep-biasbn",
        action="store_true",
        help="random directions also move biases and norm parameters",
    )
    _add_eval_options(plane)
    plane.set_defaults(run=_plane)

    line = commands.add_parser(
        "line",
        help="loss along the segment between two checkpoints",
        description="1D interpolation w1 + t (w2 - w1) -> HDF5.",
    )
    line.add_argument("checkpoints", nargs=2)
    _add_eval_options(line)
    line.set_defaults(run=_line)

    plot = commands.add_parser(
        "plot", help="draw a surface file", description="Draw a surface HDF5 file as a PNG."
    )
    plot.add_argument("surface", help="surface HDF5 file")
    plot.add_argument("--out", required=True, help="PNG path")
    plot.add_argument("--metric", default="train_loss")
    plot.add_argument("--kind", default="contour", choices=("contour", "heatmap", "surface3d"))
    plot.set_defaults(run=_plot)

    demo = commands.add_parser(
        "demo",
        help="train three networks and draw the plane through them",
        description="Train three small MLPs on MNIST-1D, evaluate the "
        "plane through them on train and test, and write surface.h5 and "
        "figures to the output folder.",
    )
    demo.add_argument(
        "--out", default="fastloss-demo", help="output folder (default fastloss-demo)"
    )
    demo.add_argument("--resolution", type=int, default=41, help="grid points per axis")
    demo.add_argument("--epochs", type=int, default=None, help="training epochs per network")
    demo.add_argument("--device", default=None)
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(run=_demo)

    from fastloss import curve_eval, fit, video

    curve = commands.add_parser(
        "curve",
        help="mode connectivity: fit, evaluate and draw curves between two networks",
        description="Curves of low loss between two checkpoints (Garipov et al.).",
    )
    curve_commands = curve.add_subparsers(dest="curve_command", required=True)
    fit.register_cli(curve_commands)
    curve_eval.register_cli(curve_commands)
    video.register_cli(commands)
    return parser


def _join_axis_values(argv: list[str]) -> list[str]:
    """``--x -0.5:1.5:41`` -> ``--x=-0.5:1.5:41``: argparse would read the value as an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in ("--x", "--y") and arg.startswith("-"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_join_axis_values(sys.argv[1:] if argv is None else argv))
    try:
        return args.run(args)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"fastloss {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
