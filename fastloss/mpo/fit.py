"""Fitting a plane whose loss landscape draws a pattern (Skorokhodov & Burtsev 2019):
`fit_pattern`.

Each step takes one data batch (512 samples, shuffled per epoch) shared by all cells, and a
random subset of the trainable good and bad cells (50 + 50); the chosen cells run through
the model in ONE batched forward and backward (`fastloss.batch` with the plane's basis
installed by `BatchedModel.load_basis`, so autograd through the compiled ops reaches θ),
and Adam (lr 3e-4) updates θ = {w_O, w_up, φ_right, s} after the gradient's norm is clipped.
BatchNorm runs in train mode: every cell normalises with its own batch statistics.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fastloss.core import batch
from fastloss.engine import as_tensors, default_device, progress_bar
from fastloss.errors import ArgumentError, DivergedError, ResourceError
from fastloss.io.fit_store import FitStore
from fastloss.io.hashing import data_hash
from fastloss.models import model_spec
from fastloss.mpo.checkpoint import save_plane
from fastloss.mpo.patterns import BAD, GOOD, Pattern
from fastloss.mpo.plane import MPOPlane, init_plane
from fastloss.mpo.step import mpo_step
from fastloss.ops.losses import BUILTIN
from fastloss.training import FIT_SCHEDULES, check_schedule, lr_factor

_WINDOW_KEYS = ("objective", "good_loss", "bad_loss", "good_acc", "bad_acc")


def _check_options(steps, lr, batch_size, good_per_step, bad_per_step, bad_clamp, clip, every):
    if steps < 1 or not lr > 0 or batch_size < 2:
        raise ArgumentError(
            f"need steps >= 1, lr > 0 and batch_size >= 2; got {steps}, {lr} and {batch_size}"
        )
    if good_per_step < 1 or bad_per_step < 1:
        raise ArgumentError(
            "need at least one good and one bad cell per step; got "
            f"{good_per_step} and {bad_per_step}"
        )
    if not bad_clamp > 0 or (clip is not None and not clip > 0):
        raise ArgumentError(f"bad_clamp and clip must be > 0; got {bad_clamp} and {clip}")
    if every is not None and every < 1:
        raise ArgumentError(f"save_every must be >= 1 steps, got {every}")


def _step_draws(seed: int, step: int, good: Tensor, bad: Tensor, n_good: int, n_bad: int) -> Tensor:
    """The flat indices of the step's cells (good first), from a generator seeded with
    (seed, step): a resumed fit draws the same cells without storing RNG state."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    pick_good = good[torch.randperm(len(good), generator=g)[:n_good]]
    pick_bad = bad[torch.randperm(len(bad), generator=g)[:n_bad]]
    return torch.cat([pick_good, pick_bad])


def _epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + 500_009 + epoch)
    return torch.randperm(n, generator=g)


def fit_pattern(
    model: nn.Module,
    pattern: Pattern,
    train,
    *,
    steps: int = 2000,
    lr: float = 3e-4,
    batch_size: int = 512,
    good_per_step: int = 50,
    bad_per_step: int = 50,
    bad_clamp: float = 2.5,
    clip: float | None = 100.0,
    schedule: str = "constant",
    s: float = 0.1,
    init: str = "xavier",
    ignore_uniform: bool = True,
    seed: int = 0,
    out: str | Path | None = None,
    save_every: int | None = None,
    log_every: int = 50,
    resume: bool = True,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    model_meta: dict[str, Any] | None = None,
    stop_at_step: int | None = None,
    cells_per_pass: int | None = None,
) -> tuple[MPOPlane, dict[str, Any]]:
    """Train a plane of ``model``'s weights whose loss landscape draws ``pattern``; returns
    ``(θ, history)``.

    ``model`` gives the architecture (its weights are not used: θ starts from `init_plane`
    with ``seed``, ``init`` and ``s``); ``train`` is ``(x, y)`` or a DataLoader of a
    classification task. Each of the ``steps`` steps minimises, on one batch of
    ``batch_size`` samples, the mean cross-entropy of ``good_per_step`` random good cells
    minus that of ``bad_per_step`` random bad cells clamped at ``bad_clamp`` (`mpo_step`),
    with Adam at ``lr`` (times `fastloss.training.lr_factor` of ``schedule``: ``"constant"``
    as in the paper, ``"cosine"`` or ``"garipov"``) and the gradient's norm clipped to
    ``clip``. With
    ``ignore_uniform`` cells whose 3×3 neighbourhood is all one class are not trained on
    (`Pattern.cells`). All draws come from generators seeded with ``seed``: the same call
    gives the same plane.

    With ``out`` (a folder) the fit writes ``plane.pt`` (the latest θ with the pattern;
    `load_plane` reads it), snapshots ``steps/step-NNNNNNN.pt`` at step 0, every
    ``save_every`` steps and the last step, and ``state.pt`` to resume from (saved with
    every snapshot, every ``log_every`` steps and at the end of the call). A rerun with the
    same settings continues where the last one stopped and ends with the same θ as an
    uninterrupted run; a finished fit returns at once; a folder holding another fit is
    refused, naming the first differing setting, unless ``overwrite``. ``stop_at_step``
    ends this call after that many steps in all (for time-limited jobs). ``cells_per_pass``
    runs each step's cells in passes of that many, adding up their gradients: the same step
    in less memory (a step's activations grow with cells × batch_size).

    History: ``{"log": [records every log_every steps: from_step, step, objective, good_loss,
    bad_loss, good_acc, bad_acc (train-mode means over the window's steps and cells,
    accuracies as fractions), gap (= good_acc − bad_acc), s, seconds], "steps",
    "total_steps", "finished", "resumed_from", "already_finished", "seconds"}``.
    """
    _check_options(steps, lr, batch_size, good_per_step, bad_per_step, bad_clamp, clip, save_every)
    check_schedule(schedule, FIT_SCHEDULES)
    if log_every < 1:
        raise ArgumentError(f"log_every must be >= 1, got {log_every}")
    x_all, y_all = as_tensors(train, "train", BUILTIN["cross_entropy"])
    n = x_all.shape[0]
    if n < 2:
        raise ArgumentError(f"train has {n} sample(s); fitting needs at least 2")
    batch_size = min(batch_size, n)
    steps_per_epoch = n // batch_size
    cells = torch.from_numpy(pattern.cells(ignore_uniform).reshape(-1))
    positions_all = torch.from_numpy(pattern.positions().reshape(-1, 2))
    good_cells = torch.nonzero(cells == GOOD).flatten()
    bad_cells = torch.nonzero(cells == BAD).flatten()
    device = default_device(device)
    theta0 = init_plane(model, seed=seed, init=init, s=s)
    settings = {
        "pattern": {
            "name": pattern.name,
            "shape": list(pattern.shape),
            "hash": hashlib.sha256(pattern.good.tobytes()).hexdigest()[:16],
        },
        "ignore_uniform": ignore_uniform,
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {"n": n, "hash": data_hash(x_all, y_all)},
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "good_per_step": good_per_step,
        "bad_per_step": bad_per_step,
        "bad_clamp": bad_clamp,
        "clip": clip,
        "schedule": schedule,
        "s": s,
        "init": init,
        "seed": seed,
        "log_every": log_every,
    }
    source = model_meta or getattr(model, "fastloss_spec", None) or {}
    meta_model = {**model_spec(source), **({"data": source["data"]} if "data" in source else {})}
    store = FitStore(out, result="plane.pt") if out is not None else None
    state = store.start(settings, resume, overwrite) if store is not None else None
    if state is not None and state["finished"]:
        summary = _summary(state["history"], steps, state["step"], True, state["seconds"])
        summary["already_finished"] = True
        return _plane_from(state["theta"], theta0), summary

    theta = theta0.detached(device).requires_grad_()
    opt = torch.optim.Adam(theta.parameters(), lr=lr)
    batched = batch(model, theta.plane().to(device)).to(device).train()
    x_all = x_all.to(device, theta.s.dtype)
    y_all = y_all.to(device)
    positions_all = positions_all.to(device)

    log: list[dict[str, Any]] = []
    step, seconds = 0, 0.0
    window = torch.zeros(len(_WINDOW_KEYS) + 1, dtype=torch.float64)
    if state is not None:
        with torch.no_grad():
            for t, saved in zip(theta.parameters(), _flat(state["theta"]), strict=True):
                t.copy_(saved)
        opt.load_state_dict(state["optimizer"])
        step, seconds, log = state["step"], state["seconds"], state["history"]
        window = state["window"].clone()
    resumed_from = step if state is not None else None

    def save(snapshot: bool, finished: bool = False) -> None:
        if store is None:
            return
        cpu = theta.detached("cpu")
        record = {
            "step": step,
            "finished": finished,
            "settings": settings,
            "history": log,
            "theta": _theta_state(cpu),
            "optimizer": opt.state_dict(),
            "seconds": seconds + time.perf_counter() - start,
            "window": window.clone(),
        }
        meta = {
            **meta_model,
            "step": step,
            "total_steps": steps,
            "finished": finished,
            "fit_settings": settings,
            "history": log,
        }
        store.save(
            lambda path: save_plane(cpu, pattern, path, meta, overwrite=True), record, snapshot
        )

    bar = progress_bar(steps, step, progress, desc=f"mpo {pattern.name}", unit="step")
    start = time.perf_counter()
    order, drawn_epoch = torch.empty(0), -1
    try:
        if store is not None and step == 0:
            save(snapshot=True)
        last = steps if stop_at_step is None else min(steps, max(stop_at_step, step))
        while step < last:
            epoch, position = divmod(step, steps_per_epoch)
            if epoch != drawn_epoch:
                order, drawn_epoch = _epoch_order(n, seed, epoch).to(device), epoch
            idx = order[position * batch_size : (position + 1) * batch_size]
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(schedule, step / steps)
            chosen = _step_draws(seed, step, good_cells, bad_cells, good_per_step, bad_per_step)
            good = torch.arange(len(chosen)) < min(good_per_step, len(good_cells))
            try:
                stats = mpo_step(
                    batched,
                    theta,
                    opt,
                    positions_all[chosen.to(device)],
                    good.to(device),
                    x_all[idx],
                    y_all[idx],
                    bad_clamp,
                    clip,
                    cells_per_pass,
                )
            except RuntimeError as e:  # torch.OutOfMemoryError is one too
                _raise_if_out_of_memory(e, len(chosen), len(idx))
                raise
            if not math.isfinite(stats.objective):
                raise DivergedError(
                    f"MPO diverged: objective {stats.objective} at step {step + 1}; lower lr "
                    f"(now {lr}) or clip"
                )
            step += 1
            g = good.to(stats.loss.device)
            window += torch.tensor(
                [
                    stats.objective,
                    float(stats.loss[g].mean()),
                    float(stats.loss[~g].mean()),
                    float(stats.acc[g].mean()),
                    float(stats.acc[~g].mean()),
                    1.0,
                ],
                dtype=torch.float64,
            )
            bar.update(1)
            if step % 10 == 0 or step == last:
                means = window[:-1] / window[-1]
                bar.set_postfix(gap=f"{float(means[3] - means[4]):.3f}", refresh=False)
            logged = step % log_every == 0 or step == steps
            if logged:
                log.append(_record(window, step, theta, seconds + time.perf_counter() - start))
                window.zero_()
            snapshot = save_every is not None and step % save_every == 0
            if step == steps:
                save(snapshot=True, finished=True)
            elif snapshot or logged or step == last:
                save(snapshot)
    finally:
        bar.close()
    seconds += time.perf_counter() - start
    summary = _summary(log, steps, step, step == steps, seconds)
    summary["resumed_from"] = resumed_from
    return theta.detached("cpu"), summary


def _raise_if_out_of_memory(e: RuntimeError, cells: int, samples: int) -> None:
    text = str(e)
    if isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in text:
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise ResourceError(
            f"one step of {cells} cells × {samples} samples does not fit in memory ({first}); "
            "set cells_per_pass to run the step's cells in several passes, or lower "
            "batch_size (a rerun resumes from the last save)"
        ) from e


def _record(window: Tensor, step: int, theta: MPOPlane, seconds: float) -> dict[str, Any]:
    means = (window[:-1] / window[-1]).tolist()
    record: dict[str, Any] = {"step": step, "from_step": step - int(window[-1]) + 1}
    record.update(zip(_WINDOW_KEYS, means, strict=True))
    record["gap"] = record["good_acc"] - record["bad_acc"]
    record["s"] = float(theta.s.detach())
    record["seconds"] = seconds
    return record


def _theta_state(theta: MPOPlane) -> dict[str, Any]:
    return {"origin": theta.origin, "up": theta.up, "phi_right": theta.phi_right, "s": theta.s}


def _flat(state: dict[str, Any]) -> list[Tensor]:
    """The saved θ in `MPOPlane.parameters` order."""
    return [state[v][n] for v in ("origin", "up", "phi_right") for n in state[v]] + [state["s"]]


def _plane_from(state: dict[str, Any], like: MPOPlane) -> MPOPlane:
    return MPOPlane(
        dict(state["origin"]),
        dict(state["up"]),
        dict(state["phi_right"]),
        state["s"],
        list(like.shifted),
        dict(like.buffers),
    )


def _summary(
    log: list[dict[str, Any]], total: int, step: int, finished: bool, seconds: float
) -> dict[str, Any]:
    last = log[-1] if log else {}
    return {
        "log": log,
        "gap": last.get("gap"),
        "steps": step,
        "total_steps": total,
        "finished": bool(finished),
        "resumed_from": None,
        "already_finished": False,
        "seconds": seconds,
    }
