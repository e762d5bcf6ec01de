"""``fastloss swa | swag collect | swag predict | fge | ensemble eval``: fast ensembling and
Bayesian model averaging from the command line."""

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
    reports,
)
from fastloss.data import Dataset, num_classes
from fastloss.ensembles import SWAG, evaluate_ensemble, fge, train_swa
from fastloss.ensembles.evaluate import EnsembleResult, score_members
from fastloss.ensembles.schedules import SWA_RATES
from fastloss.ensembles.swag import SWAG_MODES, load_swag, save_swag
from fastloss.ensembles.width import optima_width
from fastloss.errors import ArgumentError
from fastloss.io import load_checkpoint, save_checkpoint
from fastloss.io.atomic import atomic_output, write_errors
from fastloss.io.ensemble_file import save_ensemble_file
from fastloss.io.hashing import data_hash
from fastloss.io.settings import jsonable
from fastloss.models import (
    architecture_difference,
    build_from_checkpoint,
    build_from_spec,
    build_model,
    model_spec,
)
from fastloss.viz.ensembles import (
    plot_ensemble_growth,
    plot_reliability,
    plot_width_line,
    plot_width_rays,
    save_figure,
)


def register(commands: argparse._SubParsersAction) -> None:
    _register_swa(commands)
    swag = commands.add_parser(
        "swag", help="SWA-Gaussian: collect the posterior, predict with its samples"
    )
    group = swag.add_subparsers(dest="swag_command", required=True)
    _register_swa(group, swag=True)
    _register_swag_predict(group)
    _register_fge(commands)
    _register_width(commands)
    ensemble = commands.add_parser("ensemble", help="evaluate an ensemble of checkpoints")
    _register_ensemble_eval(ensemble.add_subparsers(dest="ensemble_command", required=True))


# --------------------------------------------------------------------------- shared


def _add_training_options(p: argparse.ArgumentParser, lr: float) -> None:
    p.add_argument("--batch-size", type=int, default=64, help="default 64")
    p.add_argument("--lr", type=float, default=lr, help=f"default {lr}")
    p.add_argument("--wd", type=float, default=5e-4, help="weight decay, default 5e-4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs")


def _model_meta(model: nn.Module, data: str, train: Dataset) -> dict[str, Any]:
    return {
        **model_spec(getattr(model, "fastloss_spec", {})),
        "data": data,
        "data_hash": data_hash(*train),
    }


def _start_model(args: argparse.Namespace, train: Dataset, test: Dataset) -> nn.Module:
    """The network ``--from`` names, or a new ``--model`` (seeded with ``--seed``)."""
    if args.start:
        _, meta = load_checkpoint(args.start)
        check_fits(train, meta, args.start, args.data)
        return build_from_checkpoint(args.start)
    torch.manual_seed(args.seed)
    kwargs = {"widths": tuple(args.widths)} if args.widths else {}
    return build_model(args.model, tuple(train[0].shape[1:]), num_classes(train, test), **kwargs)


def _check_same_architecture(first: str, first_meta: dict, other: str, meta: dict) -> None:
    key = architecture_difference(first_meta, meta)
    if key is not None:
        raise ArgumentError(
            f"{other} is another architecture than {first}: {key} is {meta.get(key)!r} "
            f"against {first_meta.get(key)!r}"
        )


def _save_result(
    path: Path, result: EnsembleResult, labels, settings: dict, model: dict, overwrite: bool
) -> None:
    save_ensemble_file(
        path,
        result.members,
        result.cumulative,
        result.reliability,
        result.probs,
        labels,
        settings=settings,
        model=model,
        overwrite=overwrite,
    )


# --------------------------------------------------------------------------- swa, swag collect


def _register_swa(commands: argparse._SubParsersAction, swag: bool = False) -> None:
    name = "collect" if swag else "swa"
    what = "SWAG's moments and deviations" if swag else "the weight average"
    p = commands.add_parser(
        name,
        help="train with " + ("SWAG collection" if swag else "stochastic weight averaging"),
        description=f"Train with the SWA schedule (Izmailov et al. 2018): SGD for --swa-start "
        f"epochs (lr, then linearly down to --swa-lr from 50%% to 90%% of them), then a "
        f"constant or cyclic SWA rate, collecting {what} at the end of epoch --swa-start and "
        "every --every epochs after it; BatchNorm statistics of the average are recomputed "
        "at the end. Starts from a new --model or a trained network (--from). Writes "
        "OUT/swa.pt and OUT/sgd.pt" + (" and OUT/swag.pt" if swag else "") + ".",
    )
    p.add_argument("--from", dest="start", help="start from this checkpoint (default swa-start 0)")
    p.add_argument("--model", default="mlp", help="a new model (default mlp), as fastloss train")
    p.add_argument("--widths", type=int, nargs="+", help="hidden widths of the mlp")
    add_data_options(p)
    p.add_argument("--epochs", type=int, default=40, help="all epochs, default 40")
    p.add_argument("--swa-start", type=int, help="SGD budget in epochs (default 30; 0 with --from)")
    p.add_argument(
        "--swa-lr", type=float, default=0.05, help="default 0.05 (the SGD rate: constant)"
    )
    p.add_argument("--every", type=int, default=1, help="collect every this many epochs (1)")
    p.add_argument("--rate", choices=SWA_RATES, default="constant", help="SWA rate (constant)")
    if swag:
        p.add_argument("--rank", type=int, default=20, help="deviations kept, K (default 20)")
        p.add_argument(
            "--subset",
            nargs="+",
            help="SWAG over these parameters only (glob patterns of names, e.g. 'fc*')",
        )
    _add_training_options(p, lr=0.05)
    _add_output_options(p)
    command(p, _swa)


def _swa(args: argparse.Namespace) -> int:
    out = Path(args.out)
    is_swag = getattr(args, "rank", None) is not None
    outputs = [out / "swa.pt", out / "sgd.pt"] + ([out / "swag.pt"] if is_swag else [])
    check_outputs(outputs, args.overwrite)
    train, test = load_data_from(args)
    model = _start_model(args, train, test)
    swa_start = args.swa_start if args.swa_start is not None else (0 if args.start else 30)
    swag = SWAG(model, max_rank=args.rank, subset=args.subset) if is_swag else None
    result = train_swa(
        model,
        train,
        test,
        epochs=args.epochs,
        swa_start=swa_start,
        lr=args.lr,
        swa_lr=args.swa_lr,
        every=args.every,
        rate=args.rate,
        batch_size=args.batch_size,
        weight_decay=args.wd,
        seed=args.seed,
        device=args.device,
        swag=swag,
        progress=not args.quiet,
    )
    meta = _model_meta(model, args.data, train)
    save_checkpoint(
        result.swa.cpu(),
        out / "swa.pt",
        meta={**meta, **_scores(result.scores, "swa")},
        overwrite=True,
    )
    save_checkpoint(
        result.sgd.cpu(),
        out / "sgd.pt",
        meta={**meta, **_scores(result.scores, "sgd")},
        overwrite=True,
    )
    if swag is not None:
        save_swag(swag, out / "swag.pt", meta, overwrite=True)
    s = result.scores
    print(
        f"{out}: {result.averaged} models averaged (epochs {args.epochs}, swa-start "
        f"{swa_start}, every {args.every}, {args.rate} rate)"
    )
    print(f"  test accuracy  SGD {s['sgd_acc']:.2f}%  SWA {s['swa_acc']:.2f}%")
    print(f"  test NLL       SGD {s['sgd_loss']:.4f}   SWA {s['swa_loss']:.4f}")
    if swag is not None:
        print(f"  SWAG: {swag.n} models, rank {swag.rank}, {swag.sq_mean.numel()} parameters")
    print(f"  wrote {', '.join(str(p) for p in outputs)}")
    report(
        args,
        out=args.out,
        files=outputs,
        averaged=result.averaged,
        epochs=args.epochs,
        swa_start=swa_start,
        every=args.every,
        rate=args.rate,
        sgd={"acc": s["sgd_acc"], "nll": s["sgd_loss"]},
        swa={"acc": s["swa_acc"], "nll": s["swa_loss"]},
        swag=None
        if swag is None
        else {"models": swag.n, "rank": swag.rank, "parameters": swag.sq_mean.numel()},
    )
    return 0


def _scores(scores: dict[str, float | None], prefix: str) -> dict[str, float]:
    return {
        f"test_{k.split('_')[1]}": float(v)
        for k, v in scores.items()
        if k.startswith(prefix) and v is not None
    }


# --------------------------------------------------------------------------- swag predict


def _register_swag_predict(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "predict",
        help="Bayesian model averaging over SWAG samples, in one batched pass",
        description="Draw --samples weight vectors from a SWAG file (theta_SWA + sqrt(scale) "
        "(sigma*z1 + D z2 / sqrt(K_c - 1))), recompute each sample's BatchNorm statistics on "
        "the train data, average the predicted probabilities over the samples and score them "
        "on the test data: accuracy, NLL per sample, ECE (20 bins), Brier. Writes OUT (HDF5) "
        "and OUT with .png (reliability diagram of SWA and SWAG).",
    )
    p.add_argument("swag", help="SWAG file (written by fastloss swag collect)")
    add_data_options(p)
    p.add_argument("--samples", type=int, default=30, help="default 30")
    p.add_argument("--scale", type=float, default=0.5, help="default 0.5")
    p.add_argument("--mode", choices=SWAG_MODES, default="full", help="default full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--overwrite", action="store_true")
    command(p, _swag_predict, sharded=True)


def _swag_predict(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_outputs([out], args.overwrite)
    swag, meta = load_swag(args.swag)
    train, test = load_data_from(args)
    check_fits(train, meta, args.swag, args.data)
    model = build_from_spec(meta, f"{args.swag}: the SWAG file")
    options = dict(batch_size=args.batch_size, device=args.device, progress=not args.quiet)
    samples = swag.samples(args.samples, args.scale, args.mode, args.seed)
    # θ_SWA rides along as member 0: one batched pass, its BN statistics recomputed too
    both = evaluate_ensemble(model, [swag.mean_state(), *samples], test, train, **options)
    if not reports():
        return 0
    labels = test[1].numpy()
    swa = score_members(both.member_probs[:1], labels)
    bma = score_members(both.member_probs[1:], labels)
    settings = {"samples": args.samples, "scale": args.scale, "mode": args.mode, "seed": args.seed}
    settings.update(swag=str(args.swag), data=args.data)
    _save_result(out, bma, labels, settings, meta, args.overwrite)
    figure = out.with_suffix(".png")
    save_figure(plot_reliability({"SWA": swa.reliability, "SWAG": bma.reliability}), figure)
    print(
        f"{out}: SWAG ({args.mode}, scale {args.scale}), {args.samples} samples; "
        f"{swag.n} models collected, rank {swag.rank}"
    )
    _print_table(
        {
            "SWA": swa.ensemble,
            f"SWAG BMA ({args.samples})": bma.ensemble,
            "SWAG, one sample (mean)": _member_mean(bma),
        }
    )
    print(f"  reliability diagram: {figure}")
    report(
        args,
        out=args.out,
        files=[out, figure],
        samples=args.samples,
        scale=args.scale,
        mode=args.mode,
        models=swag.n,
        rank=swag.rank,
        swa=_as_printed(swa.ensemble),
        ensemble=_as_printed(bma.ensemble),
        sample_mean=_as_printed(_member_mean(bma)),
    )
    return 0


def _member_mean(result: EnsembleResult) -> dict[str, float]:
    return {k: sum(m[k] for m in result.members) / len(result.members) for k in result.ensemble}


def _as_printed(scores: dict[str, float]) -> dict[str, float]:
    """Scores as the tables print them: accuracy in percent."""
    return {k: 100 * v if k == "acc" else v for k, v in scores.items()}


def _print_table(rows: dict[str, dict[str, float]]) -> None:
    width = max(len(k) for k in rows)
    print(f"  {'':{width}s}  acc (%)     NLL     ECE   Brier")
    for label, s in rows.items():
        print(
            f"  {label:{width}s}  {100 * s['acc']:7.2f}  {s['nll']:6.4f}  {s['ece']:6.4f}  "
            f"{s['brier']:6.4f}"
        )


# --------------------------------------------------------------------------- fge


def _register_fge(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "fge",
        help="fast geometric ensembling from a trained network",
        description="From a trained network, SGD with a triangular cyclic learning rate "
        "(lr1 -> lr2 -> lr1 per cycle of --cycle-epochs, linear in each half; Garipov et "
        "al. 2018), a snapshot in the middle of each cycle; the ensemble's test accuracy "
        "after each snapshot, all snapshots evaluated in one batched pass. Writes "
        "OUT/snapshot-NN.pt, OUT/fge.h5 and OUT/fge.png.",
    )
    p.add_argument("checkpoint", help="the trained network to start from")
    add_data_options(p)
    p.add_argument("--cycles", type=int, default=4, help="snapshots, default 4")
    p.add_argument("--cycle-epochs", type=int, default=2, help="epochs per cycle, default 2")
    p.add_argument("--lr1", type=float, default=0.2, help="highest rate, default 0.2")
    p.add_argument("--lr2", type=float, default=0.002, help="lowest rate, default 0.002")
    p.add_argument("--batch-size", type=int, default=64, help="default 64")
    p.add_argument("--wd", type=float, default=5e-4, help="weight decay, default 5e-4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    _add_output_options(p)
    command(p, _fge)


def _fge(args: argparse.Namespace) -> int:
    out = Path(args.out)
    snapshots = [out / f"snapshot-{i + 1:02d}.pt" for i in range(args.cycles)]
    check_outputs([out / "fge.h5", *snapshots], args.overwrite)
    _, meta = load_checkpoint(args.checkpoint)
    train, test = load_data_from(args)
    check_fits(train, meta, args.checkpoint, args.data)
    model = build_from_checkpoint(args.checkpoint)
    result = fge(
        model,
        train,
        test,
        cycles=args.cycles,
        cycle_epochs=args.cycle_epochs,
        lr1=args.lr1,
        lr2=args.lr2,
        batch_size=args.batch_size,
        weight_decay=args.wd,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    model_meta = model_spec(meta)
    for path, state in zip(snapshots, result.snapshots, strict=True):
        save_checkpoint(state, path, meta={**model_meta, "data": args.data}, overwrite=True)
    scores = result.scores
    assert scores is not None
    settings = {k: getattr(args, k) for k in ("cycles", "cycle_epochs", "lr1", "lr2", "seed")}
    settings.update(start=str(args.checkpoint), data=args.data)
    _save_result(out / "fge.h5", scores, test[1].numpy(), settings, model_meta, True)
    save_figure(plot_ensemble_growth(scores.cumulative, scores.members, "FGE"), out / "fge.png")
    print(
        f"{out}: FGE from {args.checkpoint}, {args.cycles} cycles of {args.cycle_epochs} "
        f"epochs (lr {args.lr1} -> {args.lr2})"
    )
    print("  snapshots   member acc (%)   ensemble acc (%)   ensemble NLL")
    for m, (member, ens) in enumerate(zip(scores.members, scores.cumulative, strict=True), 1):
        print(
            f"  {m:9d}   {100 * member['acc']:14.2f}   {100 * ens['acc']:16.2f}   "
            f"{ens['nll']:12.4f}"
        )
    print(f"  wrote {out / 'fge.h5'}, {out / 'fge.png'} and {len(snapshots)} snapshots")
    report(
        args,
        out=args.out,
        files=[out / "fge.h5", out / "fge.png", *snapshots],
        cycles=args.cycles,
        cycle_epochs=args.cycle_epochs,
        members=[_as_printed(m) for m in scores.members],
        cumulative=[_as_printed(c) for c in scores.cumulative],
        ensemble=_as_printed(scores.ensemble),
    )
    return 0


# --------------------------------------------------------------------------- ensemble eval


def _register_ensemble_eval(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "eval",
        help="score an ensemble of checkpoints, all members in one batched pass",
        description="Evaluate checkpoints of one architecture as an ensemble: every member "
        "at once on the engine, BatchNorm statistics recomputed per member on the train "
        "data, probabilities averaged. Prints each member's and the ensemble's accuracy, "
        "NLL per sample, ECE (20 bins) and Brier score; writes OUT (HDF5) and OUT with "
        ".png (reliability diagram).",
    )
    p.add_argument("checkpoints", nargs="+", help="two or more checkpoints")
    add_data_options(p)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--overwrite", action="store_true")
    command(p, _ensemble_eval, sharded=True)


def _ensemble_eval(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_outputs([out], args.overwrite)
    if len(args.checkpoints) < 2:
        raise ArgumentError("an ensemble needs at least two checkpoints")
    loaded = [load_checkpoint(path) for path in args.checkpoints]
    first_meta = loaded[0][1]
    for path, (_, meta) in zip(args.checkpoints[1:], loaded[1:], strict=True):
        _check_same_architecture(args.checkpoints[0], first_meta, path, meta)
    train, test = load_data_from(args)
    check_fits(train, first_meta, args.checkpoints[0], args.data)
    model = build_from_checkpoint(args.checkpoints[0])
    result = evaluate_ensemble(
        model,
        [state for state, _ in loaded],
        test,
        train,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.quiet,
    )
    if not reports():
        return 0
    settings = {"checkpoints": [str(p) for p in args.checkpoints], "data": args.data}
    _save_result(out, result, test[1].numpy(), settings, model_spec(first_meta), args.overwrite)
    figure = out.with_suffix(".png")
    save_figure(plot_reliability({"ensemble": result.reliability}), figure)
    rows = {Path(p).name: s for p, s in zip(args.checkpoints, result.members, strict=True)}
    print(f"{out}: {len(args.checkpoints)} members on {args.data}")
    _print_table({**rows, "ensemble": result.ensemble})
    print(f"  reliability diagram: {figure}")
    report(
        args,
        out=args.out,
        files=[out, figure],
        data=args.data,
        members=[
            {"checkpoint": path, **_as_printed(s)}
            for path, s in zip(args.checkpoints, result.members, strict=True)
        ],
        ensemble=_as_printed(result.ensemble),
    )
    return 0


# --------------------------------------------------------------------------- width


def _register_width(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "width",
        help="optima width: the SGD-SWA line and random rays from both",
        description="Train loss (NLL + wd/2 |w|^2) and test error along the line from w_SGD "
        "through w_SWA, extended past both ends, and along random filter-normalised rays "
        "from each (Izmailov et al. 2018); every point in one batched pass per subspace, "
        "BatchNorm statistics recomputed at each. Prints where the basin along the line is "
        "and writes OUT/width.png, OUT/rays.png and OUT/width.json.",
    )
    p.add_argument("sgd", help="the SGD checkpoint (e.g. OUT/sgd.pt of fastloss swa)")
    p.add_argument("swa", help="the SWA checkpoint")
    add_data_options(p)
    p.add_argument("--t", type=float, nargs=2, default=(-1.0, 2.0), help="line range, -1 2")
    p.add_argument("--points", type=int, default=61, help="points on the line (61)")
    p.add_argument("--rays", type=int, default=3, help="random rays from each point (3)")
    p.add_argument("--ray-length", type=float, default=1.0, help="ray length (1.0)")
    p.add_argument("--wd", type=float, default=5e-4, help="the l2 term's weight decay")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    _add_output_options(p)
    command(p, _width)


def _width(args: argparse.Namespace) -> int:
    out = Path(args.out)
    outputs = [out / "width.png", out / "rays.png", out / "width.json"]
    check_outputs(outputs, args.overwrite)
    with write_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    sgd, meta = load_checkpoint(args.sgd)
    swa, meta_swa = load_checkpoint(args.swa)
    _check_same_architecture(args.sgd, meta, args.swa, meta_swa)
    train, test = load_data_from(args)
    check_fits(train, meta, args.sgd, args.data)
    model = build_from_checkpoint(args.sgd)
    result = optima_width(
        model,
        sgd,
        swa,
        train,
        test,
        t_range=tuple(args.t),
        points=args.points,
        rays=args.rays,
        ray_length=args.ray_length,
        wd=args.wd,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.quiet,
    )
    length = float(result.distance[-1] / result.t[-1])
    line_fig = plot_width_line(result.distance, result.line, 0.0, length)
    save_figure(line_fig, out / "width.png")
    save_figure(plot_width_rays(result.rays), out / "rays.png")
    record = {"t": result.t, "distance": result.distance, "line": result.line}
    record.update({"rays": result.rays, "basin": result.basin, "sgd_swa_distance": length})
    with atomic_output(out / "width.json", overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(jsonable(record)))
    b = result.basin
    print(f"{out}: ‖w_SWA − w_SGD‖ = {length:.4g}; t from {args.t[0]:g} to {args.t[1]:g}")
    print(
        f"  basin along the line (train loss below {b['level']:.4f}): t from "
        f"{b['edges'][0]:.2f} to {b['edges'][1]:.2f}, centre {b['centre']:.2f}"
    )
    print(
        f"  offset from the centre in half-widths: SGD {b['sgd_offset']:+.2f}, "
        f"SWA {b['swa_offset']:+.2f}"
    )
    for name in ("sgd", "swa"):
        err = result.rays[name]["test_err"]
        print(
            f"  rays from {name.upper()}: test error {err[:, 0].mean():.2f}% at 0, "
            f"{err[:, -1].mean():.2f}% at {args.ray_length:g} (mean of {args.rays})"
        )
    print(f"  wrote {', '.join(str(p) for p in outputs)}")
    report(
        args,
        out=args.out,
        files=outputs,
        distance=length,
        t=args.t,
        basin=b,
        rays={
            name: {
                "test_err_start": result.rays[name]["test_err"][:, 0].mean(),
                "test_err_end": result.rays[name]["test_err"][:, -1].mean(),
            }
            for name in ("sgd", "swa")
        },
    )
    return 0
