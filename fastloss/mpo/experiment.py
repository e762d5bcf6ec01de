"""The batch-norm experiment (Skorokhodov & Burtsev 2019, §4.2, Fig. 4): random masks of
growing fill probability p, fitted with the six-conv net without and with BatchNorm; the
paper finds the gap between good and bad cells smaller with BN (random patterns are harder
to draw on a smoother landscape).

Every (p, seed, model) run fits `fit_pattern` and scores the test accuracies of all cells
(`evaluate_pattern`). Each finished run is written to ``out/runs/<run>.json`` at once, so an
interrupted experiment resumes where it stopped; ``out/runs.csv`` and ``out/summary.json``
hold the table.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastloss.data import num_classes
from fastloss.engine import as_tensors
from fastloss.errors import ArgumentError, FileFormatError, OutputExistsError
from fastloss.io.atomic import atomic_output
from fastloss.models import build_model
from fastloss.mpo.evaluate import evaluate_pattern
from fastloss.mpo.fit import fit_pattern
from fastloss.mpo.patterns import PatternError, random_pattern
from fastloss.ops.losses import BUILTIN

PAPER_PS = tuple(round(0.1 * i, 1) for i in range(1, 10))
SMALL_PS = (0.1, 0.3, 0.5, 0.7, 0.9)  # the defaults: every other p of the paper's
MODELS = {False: "mpo-cnn", True: "mpo-cnn-bn"}  # given six channel widths: mpo-cnn6(-bn)


@dataclass(frozen=True)
class Sizes:
    """How big each fit of the experiment is. The defaults run the default experiment (5 p,
    2 seeds, 2 models) in about ten minutes on a 2-core CPU on digits; `PAPER` is the
    paper's. At this size the plain net leaves chance accuracy only after about 150 steps at
    lr 1e-3 (at lr 1e-2 it never did in 150 steps), hence 300 steps at a constant 1e-3."""

    size: tuple[int, int] = (12, 12)  # the random masks' W×H
    channels: tuple[int, ...] = (4, 4, 8, 8, 16, 16)  # the six convs
    hidden: int = 32  # the dense layer
    steps: int = 300
    lr: float = 1e-3
    schedule: str = "constant"
    batch_size: int = 32
    cells_per_step: int = 8  # good cells, and as many bad ones


PAPER = Sizes((30, 30), (8, 8, 32, 32, 64, 64), 128, 10_000, 3e-4, "constant", 512, 50)


def _run_name(p: float, seed: int, bn: bool) -> str:
    return f"p{p:g}-seed{seed}-{'bn' if bn else 'nobn'}"


def bn_experiment(
    train,
    test,
    *,
    ps: Sequence[float] = SMALL_PS,
    seeds: Sequence[int] = (0, 1),
    sizes: Sizes = Sizes(),
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit a random mask for every p in ``ps`` and seed in ``seeds`` with the six-conv net
    without and with BatchNorm, the same mask and seed for both; returns ``{"runs": [one
    row per run], "summary": [one row per p], "claim_holds": bool}``. ``sizes`` gives the
    masks' size, the net's widths and each fit's steps, learning rate, schedule, batch and
    cells per step (`Sizes`; `PAPER` for the paper's).

    A run's row: ``p``, ``seed``, ``bn``, test ``good_acc``, ``bad_acc``, ``gap``, ``iou``,
    ``train_gap``, ``seconds``. A summary row: ``p``, and for ``nobn`` and ``bn`` the mean
    and standard deviation across seeds of the gap, the mean good and bad accuracies, and
    ``gap_diff`` = gap without BN − gap with BN (per seed, then mean and std).
    ``claim_holds`` is the paper's claim tested on these runs: for every seed, the gap
    averaged over p is smaller with BN.
    """
    if not ps or not seeds:
        raise ArgumentError("give at least one fill probability and one seed")
    for p in ps:
        if not 0 < p < 1:
            raise PatternError(f"fill probabilities must be in (0, 1), got {p}")
    x, y = as_tensors(train, "train", BUILTIN["cross_entropy"])
    test_xy = as_tensors(test, "test", BUILTIN["cross_entropy"])
    classes = num_classes((x, y), test_xy)
    settings = {**asdict(sizes), "data_n": int(x.shape[0])}
    settings = json.loads(json.dumps(settings))  # tuples as lists, as stored
    runs_dir = Path(out) / "runs" if out is not None else None
    rows = []
    for p in ps:
        for seed in seeds:
            for bn in (False, True):
                path = runs_dir / f"{_run_name(p, seed, bn)}.json" if runs_dir else None
                row = _stored_run(path, settings, overwrite) if path else None
                if row is None:
                    row = _one_run(p, seed, bn, sizes, (x, y), test_xy, classes, device, progress)
                    if path is not None:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        with atomic_output(path, overwrite=True) as tmp:
                            Path(tmp).write_text(json.dumps({"settings": settings, **row}))
                rows.append(row)
    summary = summarise(rows)
    result = {"runs": rows, "summary": summary, "claim_holds": claim_holds(rows)}
    if out is not None:
        _write_table(Path(out), result, settings)
    return result


def _stored_run(path: Path, settings: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    if overwrite or not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FileFormatError(f"{path}: not a readable run ({e}); pass overwrite=True") from e
    if stored.pop("settings", None) != settings:
        raise OutputExistsError(
            f"{path} holds a run made with other settings; pass overwrite=True to redo the "
            "experiment, or choose another output folder"
        )
    return stored


def _one_run(p, seed, bn, sizes: Sizes, train, test, classes, device, progress) -> dict[str, Any]:
    pattern = random_pattern(sizes.size, p, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(
            MODELS[bn],
            tuple(train[0].shape[1:]),
            classes,
            channels=tuple(sizes.channels),
            hidden=sizes.hidden,
        )
    start = time.perf_counter()
    theta, _ = fit_pattern(
        model,
        pattern,
        train,
        steps=sizes.steps,
        lr=sizes.lr,
        schedule=sizes.schedule,
        batch_size=sizes.batch_size,
        good_per_step=sizes.cells_per_step,
        bad_per_step=sizes.cells_per_step,
        seed=seed,
        device=device,
        progress=progress,
    )
    _, scores = evaluate_pattern(model, theta, pattern, train, test, device=device, progress=False)
    return {
        "p": p,
        "seed": seed,
        "bn": bn,
        **{k: scores["test"][k] for k in ("good_acc", "bad_acc", "gap", "iou")},
        "train_gap": scores["train"]["gap"],
        "seconds": time.perf_counter() - start,
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per p: mean and std across seeds of each model's gap, its mean good and bad
    accuracies, and of the paired difference gap without BN − gap with BN."""
    table = []
    for p in sorted({r["p"] for r in rows}):
        at_p = [r for r in rows if r["p"] == p]
        line: dict[str, Any] = {"p": p}
        for bn, tag in ((False, "nobn"), (True, "bn")):
            mine = [r for r in at_p if r["bn"] == bn]
            line[f"{tag}_gap"], line[f"{tag}_gap_std"] = _mean_std([r["gap"] for r in mine])
            line[f"{tag}_good_acc"] = _mean_std([r["good_acc"] for r in mine])[0]
            line[f"{tag}_bad_acc"] = _mean_std([r["bad_acc"] for r in mine])[0]
        paired = _paired(at_p)
        line["gap_diff"], line["gap_diff_std"] = _mean_std(paired) if paired else (math.nan,) * 2
        table.append(line)
    return table


def _paired(rows: Sequence[dict[str, Any]]) -> list[float]:
    """gap without BN − gap with BN for every (p, seed) that has both runs."""
    gaps = {(r["p"], r["seed"], r["bn"]): r["gap"] for r in rows}
    return [
        gaps[(p, seed, False)] - gaps[(p, seed, True)]
        for (p, seed, bn) in gaps
        if not bn and (p, seed, True) in gaps
    ]


def claim_holds(rows: Sequence[dict[str, Any]]) -> bool:
    """The paper's claim on these runs: for every seed, the accuracy gap averaged over p is
    smaller with BatchNorm than without."""
    seeds = sorted({r["seed"] for r in rows})
    for seed in seeds:
        diffs = _paired([r for r in rows if r["seed"] == seed])
        if not diffs or not np.mean(diffs) > 0:
            return False
    return True


def _write_table(out: Path, result: dict[str, Any], settings: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / "runs.csv", overwrite=True) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(result["runs"][0]))
        writer.writeheader()
        writer.writerows(result["runs"])
    with atomic_output(out / "summary.json", overwrite=True) as tmp:
        Path(tmp).write_text(
            json.dumps(
                {
                    "settings": settings,
                    "summary": result["summary"],
                    "claim_holds": result["claim_holds"],
                },
                indent=1,
            )
        )
