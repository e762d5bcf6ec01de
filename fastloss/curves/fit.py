"""Fitting curves between two networks (Garipov et al. 2018): `fit_curve`.

The curve's bends θ minimise the loss averaged along the curve, ``E_{t~U[0,1]} L(φ_θ(t))``,
by SGD on one sampled ``t`` per step (the paper's estimator) or ``S`` of them. The S points
of a step go through the model in one batched pass (`fastloss.batch`, compiled ops with
autograd): the basis ``[w1, θ_1 … θ_n, w2]`` is rebuilt from the trainable bends before
each step and installed with `BatchedModel.load_basis`, so gradients reach the bends while
the endpoints stay exactly fixed. BatchNorm runs in train mode with each point's own batch
statistics. Weight decay acts on the weights at the sampled points, as in
dnn-mode-connectivity: ``0.5·wd·‖w(t)‖²`` with ``‖w(t)‖² = cᵀ G c`` (c = coords(t), G the
Gram matrix of the basis), not on the bends themselves.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fastloss.core import batch
from fastloss.curves.checkpoint import save_curve
from fastloss.curves.curve import Curve
from fastloss.curves.fit_step import OPTIMIZERS, fit_step, make_optimizer
from fastloss.engine import as_tensors, default_device, progress_bar
from fastloss.errors import ArgumentError, ArgumentTypeError, DivergedError
from fastloss.io.fit_store import FitStore
from fastloss.io.hashing import data_hash, tensor_digest
from fastloss.models import model_spec
from fastloss.ops.losses import Loss, PerSample, resolve_loss
from fastloss.training import FIT_SCHEDULES, check_schedule, lr_factor


def _fingerprint(curve: Curve) -> str:
    """A short hash of the starting curve: endpoints, initial bends, kind."""
    return tensor_digest(curve.basis.items(), prefix=f"{curve.kind};{list(curve.names)};")


def _with_bends(curve: Curve, bends: dict[str, Tensor]) -> Curve:
    """A copy of ``curve`` (same class) whose bends are ``bends``; the endpoints are the very
    values of ``curve``."""
    out = copy.copy(curve)
    out.basis = {
        n: torch.cat([b[:1], bends[n].detach().to(b.device, b.dtype), b[-1:]])
        for n, b in curve.basis.items()
    }
    out.reference_buffers = dict(curve.reference_buffers)
    out.info = dict(curve.info)
    return out


def _steps_per_epoch(n: int, batch_size: int) -> int:
    # A last batch of one sample is skipped: BatchNorm cannot use it.
    return n // batch_size + (1 if n % batch_size >= 2 else 0)


def _epoch_draws(n: int, steps: int, samples: int, seed: int, epoch: int) -> tuple[Tensor, Tensor]:
    """(shuffled sample order [n], t values [steps, samples]) of one epoch, from a generator
    seeded with (seed, epoch): a resumed epoch draws the same, so the fit's state needs no
    RNG state, and the curve's coordinates are computed once per epoch."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g), torch.rand(
        steps, samples, generator=g, dtype=torch.float64
    )


def _check_options(curve, epochs, lr, wd, samples, batch_size, optimizer, schedule, save_every):
    if not isinstance(curve, Curve):
        raise ArgumentTypeError(
            f"curve must be a fastloss Curve (Bezier, PolyChain), got {type(curve)}"
        )
    if curve.bends < 1:
        raise ArgumentError("the curve has no bends: a straight line has nothing to fit")
    if epochs < 1 or lr <= 0 or wd < 0 or samples < 1 or batch_size < 1:
        raise ArgumentError(
            "need epochs >= 1, lr > 0, wd >= 0, samples_per_step >= 1 and batch_size >= 1; got "
            f"{epochs}, {lr}, {wd}, {samples} and {batch_size}"
        )
    if optimizer not in OPTIMIZERS:
        raise ArgumentError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    check_schedule(schedule, FIT_SCHEDULES)
    if save_every is not None and save_every < 1:
        raise ArgumentError(f"save_every must be >= 1 steps, got {save_every}")


def fit_curve(
    model: nn.Module,
    curve: Curve,
    train,
    *,
    epochs: int = 100,
    lr: float = 0.1,
    wd: float = 5e-4,
    samples_per_step: int = 1,
    batch_size: int = 128,
    optimizer: str = "sgd",
    schedule: str = "garipov",
    seed: int = 0,
    out: str | Path | None = None,
    save_every: int | None = None,
    resume: bool = True,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    model_meta: dict[str, Any] | None = None,
    stop_at_step: int | None = None,
    loss: str | PerSample | Loss = "cross_entropy",
) -> tuple[Curve, dict[str, Any]]:
    """Train the bends of ``curve`` so that ``model``'s loss along it is low; returns
    ``(fitted curve, history)``.

    ``model`` gives the architecture (its own weights are not used); ``train`` is ``(x, y)``
    or a DataLoader. Each step takes a mini-batch of ``batch_size`` samples (shuffled per
    epoch) and ``samples_per_step`` values ``t ~ U[0, 1]``, and minimises the mean over them
    of the ``loss`` (cross-entropy by default; ``"mse"``, ``"gaussian_nll"`` or a per-sample
    callable, see `fastloss.ops.losses`) plus ``0.5·wd·‖w(t)‖²``, with SGD (momentum 0.9) or
    Adam; the learning rate follows ``schedule`` (see `fastloss.training.lr_factor`). All
    draws come from generators seeded with ``seed``: the same call gives the same curve.

    With ``out`` (a folder) the fit writes ``curve.pt`` (the latest curve; its metadata holds
    the step, epoch, settings, history and, from ``model_meta`` or the model's
    ``fastloss_spec``, the keys that rebuild the architecture), snapshots
    ``steps/step-NNNNNNN.pt`` at step 0, every ``save_every`` steps and the last step, and
    ``state.pt`` to resume from (saved at those steps and after every epoch). A rerun with
    the same settings continues where the last one stopped and ends with the same curve as an
    uninterrupted run; a finished fit returns at once. A folder holding a fit with other
    settings is refused, naming the first differing one, unless ``overwrite``.
    ``stop_at_step`` ends this call after that many steps in all (the state is saved; a rerun
    continues), for time-limited jobs.

    History: ``{"epochs": [per-epoch dicts: epoch, step, lr, train_loss (mean cross-entropy
    over the epoch's steps and points, in train mode), train_acc (classification), seconds],
    "train_loss", "train_acc", "steps", "total_steps", "finished", "resumed_from" (the step this
    call started from, None for a fresh fit), "already_finished", "seconds"}``.
    """
    _check_options(
        curve, epochs, lr, wd, samples_per_step, batch_size, optimizer, schedule, save_every
    )
    spec = resolve_loss(loss)
    x_all, y_all = as_tensors(train, "train", spec)
    n = x_all.shape[0]
    batch_size = min(batch_size, n)
    steps_per_epoch = _steps_per_epoch(n, batch_size)
    if steps_per_epoch == 0:
        raise ArgumentError(f"train has {n} sample(s); fitting needs at least 2")
    total_steps = epochs * steps_per_epoch
    device = default_device(device)
    dtype = next(iter(curve.basis.values())).dtype
    settings = {
        "kind": curve.kind,
        "bends": curve.bends,
        "curve": _fingerprint(curve),
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {"n": n, "hash": data_hash(x_all, y_all)},
        "epochs": epochs,
        "lr": lr,
        "wd": wd,
        "samples_per_step": samples_per_step,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "schedule": schedule,
        "seed": seed,
    }
    if spec.name != "cross_entropy":  # settings of cross-entropy fits stay as they were
        settings["loss"] = spec.name
    # What curve.pt keeps of the model's metadata: how to rebuild it, and the data set's name.
    source = model_meta or getattr(model, "fastloss_spec", None) or {}
    meta_model = {**model_spec(source), **({"data": source["data"]} if "data" in source else {})}
    store = FitStore(out) if out is not None else None
    state = store.start(settings, resume, overwrite) if store is not None else None
    if state is not None and state["finished"]:
        summary = _summary(state, total_steps, state["step"])
        summary["already_finished"] = True
        return _with_bends(curve, state["bends"]), summary

    ends = {n_: b.detach()[[0, -1]].to(device) for n_, b in curve.basis.items()}
    bends = {
        n_: b.detach()[1:-1].to(device, copy=True).requires_grad_(True)
        for n_, b in curve.basis.items()
    }
    opt = make_optimizer(optimizer, list(bends.values()), lr)
    batched = batch(model, curve.to(device)).to(device).train()
    x_all = x_all.to(device, dtype)
    y_all = y_all.to(device, dtype if y_all.is_floating_point() else None)

    history: list[dict[str, Any]] = []
    step, seconds, sums = 0, 0.0, torch.zeros(3, dtype=torch.float64)
    if state is not None:  # continue an interrupted fit exactly where its state was saved
        with torch.no_grad():
            for name, b in bends.items():
                b.copy_(state["bends"][name])
        opt.load_state_dict(state["optimizer"])
        step, seconds, history = state["step"], state["seconds"], state["history"]
        sums = state["epoch_sums"].clone()
    resumed_from = step if state is not None else None

    def save(snapshot: bool, finished: bool = False) -> None:
        if store is None:
            return
        cpu_bends = {k: v.detach().cpu() for k, v in bends.items()}
        record = {
            "step": step,
            "finished": finished,
            "settings": settings,
            "history": history,
            "bends": cpu_bends,
            "optimizer": opt.state_dict(),
            "seconds": seconds + time.perf_counter() - start,
            "epoch_sums": sums.clone(),
        }
        meta = {
            **meta_model,
            "step": step,
            "epoch": step / steps_per_epoch,
            "total_steps": total_steps,
            "finished": finished,
            "fit_settings": settings,
            "history": history,
        }
        fitted = _with_bends(curve, cpu_bends)
        store.save(lambda path: save_curve(fitted, path, meta, overwrite=True), record, snapshot)

    bar = progress_bar(total_steps, step, progress, desc="fit curve", unit="step")
    start = time.perf_counter()
    order, epoch_coords, drawn_epoch = torch.empty(0), torch.empty(0), -1
    try:
        if store is not None and step == 0:
            save(snapshot=True)
        last = total_steps if stop_at_step is None else min(total_steps, max(stop_at_step, step))
        while step < last:
            epoch, position = divmod(step, steps_per_epoch)
            if epoch != drawn_epoch:
                order, t = _epoch_draws(n, steps_per_epoch, samples_per_step, seed, epoch)
                order = order.to(device)
                epoch_coords = curve.coords(t.reshape(-1)).to(device, dtype)
                epoch_coords = epoch_coords.view(steps_per_epoch, samples_per_step, -1)
                drawn_epoch = epoch
            idx = order[position * batch_size : (position + 1) * batch_size]
            coords = epoch_coords[position]
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(schedule, step / total_steps)
            per_point, correct = fit_step(
                batched, ends, bends, opt, coords, x_all[idx], y_all[idx], wd, spec
            )
            step_loss = float(per_point.mean())
            if not math.isfinite(step_loss):
                raise DivergedError(
                    f"curve fitting diverged: loss {step_loss} at step {step + 1}; lower lr "
                    f"(now {lr})"
                )
            step += 1
            accuracy = 0.0 if correct is None else float(correct.sum()) / (len(idx) * len(coords))
            sums += torch.tensor([step_loss, accuracy, 1.0], dtype=torch.float64)
            bar.update(1)
            if step % 10 == 0 or step == last:
                bar.set_postfix(loss=f"{float(sums[0] / sums[2]):.4f}", refresh=False)
            epoch_done = step % steps_per_epoch == 0
            if epoch_done:
                record = {
                    "epoch": step // steps_per_epoch,
                    "step": step,
                    "lr": opt.param_groups[0]["lr"],
                    "train_loss": float(sums[0] / sums[2]),
                    "train_acc": float(100 * sums[1] / sums[2]),
                    "seconds": seconds + time.perf_counter() - start,
                }
                if not spec.classification:
                    del record["train_acc"]
                history.append(record)
                sums.zero_()
            snapshot = save_every is not None and step % save_every == 0
            if step == total_steps:
                save(snapshot=True, finished=True)
            elif snapshot or epoch_done or step == last:
                save(snapshot)
    finally:
        bar.close()
    seconds += time.perf_counter() - start
    summary = _summary(
        {"history": history, "seconds": seconds, "finished": step == total_steps},
        total_steps,
        step,
    )
    summary["resumed_from"] = resumed_from
    return _with_bends(curve, {k: v.detach().cpu() for k, v in bends.items()}), summary


def _summary(state: dict[str, Any], total_steps: int, step: int) -> dict[str, Any]:
    history = state["history"]
    last = history[-1] if history else {}
    return {
        "epochs": history,
        "train_loss": last.get("train_loss"),
        "train_acc": last.get("train_acc"),
        "steps": step,
        "total_steps": total_steps,
        "finished": bool(state["finished"]),
        "resumed_from": None,
        "already_finished": False,
        "seconds": state["seconds"],
    }
