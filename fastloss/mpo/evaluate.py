"""Evaluating a fitted plane on every cell of its pattern, and how well it draws it.

`evaluate_pattern` runs the engine on the grid of cell centres (`fastloss.surfaces.evaluate`
on `MPOPlane.plane`), so BatchNorm statistics are recomputed for every cell over the train
data, as everywhere in fastloss (docs/design.md, "BatchNorm"): training normalised each
cell with its own batch statistics, and recomputed statistics are the same thing averaged
over the data set. The result is a surface in the loss-landscape layout with the pattern
stored beside the metrics (``pattern``: 1 good, 0 bad; ``cells``: 1 good, −1 bad, 0 not
trained), and the scores of `pattern_scores` in its attributes.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from fastloss.core import Grid
from fastloss.data import num_classes
from fastloss.engine import as_tensors
from fastloss.engine.sharding import barrier, world
from fastloss.errors import ArgumentError, OutputExistsError
from fastloss.io import Surface
from fastloss.mpo.patterns import Pattern
from fastloss.mpo.plane import MPOPlane
from fastloss.ops.losses import BUILTIN
from fastloss.surfaces import evaluate


def pattern_grid(pattern: Pattern) -> Grid:
    """The grid of the pattern's cell centres: x = α from −(W−1)/2 to (W−1)/2, y = β."""
    H, W = pattern.shape
    return Grid(x=(-(W - 1) / 2, (W - 1) / 2, W), y=(-(H - 1) / 2, (H - 1) / 2, H))


def default_threshold(num_classes: int) -> float:
    """Half way from chance to perfect accuracy: ``(1 + 1/C) / 2`` (0.55 for 10 classes)."""
    return (1 + 1 / num_classes) / 2


def pattern_scores(accuracy: np.ndarray, pattern: Pattern, threshold: float) -> dict[str, float]:
    """How well an accuracy map ``[H, W]`` (fractions, row 0 at the top, as the pattern)
    draws ``pattern``: ``good_acc`` and ``bad_acc`` (mean accuracy over all good and all bad
    cells), ``gap`` = good_acc − bad_acc (the paper's Fig. 4 measure), and ``iou``, the
    intersection over union of the cells with accuracy ≥ ``threshold`` and the good cells."""
    if accuracy.shape != pattern.shape:
        raise ArgumentError(
            f"the accuracy map is {accuracy.shape} but the pattern is {pattern.shape}"
        )
    good = pattern.good
    found = accuracy >= threshold
    union = int((found | good).sum())
    good_acc, bad_acc = float(accuracy[good].mean()), float(accuracy[~good].mean())
    return {
        "good_acc": good_acc,
        "bad_acc": bad_acc,
        "gap": good_acc - bad_acc,
        "iou": int((found & good).sum()) / union if union else 1.0,
        "threshold": threshold,
    }


def image_rows(values: np.ndarray) -> np.ndarray:
    """A surface's ``[ny, nx]`` values (row 0 = lowest β) turned to picture rows (row 0 at
    the top), and back."""
    return np.ascontiguousarray(values[::-1])


def evaluate_pattern(
    model: nn.Module,
    plane: MPOPlane,
    pattern: Pattern,
    train,
    test=None,
    *,
    threshold: float | None = None,
    ignore_uniform: bool = True,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[Surface, dict[str, dict[str, float]]]:
    """Loss and accuracy of every cell of ``pattern`` on ``train`` (and ``test``), and the
    scores of each split (`pattern_scores`); returns ``(surface, {split: scores})``.

    ``threshold`` (an accuracy fraction) decides which cells count as found for the IoU;
    by default `default_threshold` of the data's number of classes. ``out`` writes the
    surface as HDF5 (atomically; an existing file is kept unless ``overwrite``).
    """
    if out is not None and os.path.exists(out) and not overwrite:
        raise OutputExistsError(f"{out} exists; pass overwrite=True to replace it")
    x, y = as_tensors(train, "train", BUILTIN["cross_entropy"])
    splits: dict[str, Any] = {"train": (x, y)}
    if test is not None:
        splits["test"] = as_tensors(test, "test", BUILTIN["cross_entropy"])
    if threshold is None:
        threshold = default_threshold(num_classes(*splits.values()))
    if not 0 < threshold <= 1:
        raise ArgumentError(f"threshold is an accuracy fraction in (0, 1], got {threshold}")
    surface = evaluate(
        model,
        plane.plane(),
        pattern_grid(pattern),
        **splits,
        bn="recompute",  # "none" for a model without BatchNorm
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        progress=progress,
    )
    scores = {
        split: pattern_scores(image_rows(surface.values[f"{split}_acc"]) / 100, pattern, threshold)
        for split in splits
    }
    surface.values["pattern"] = image_rows(pattern.good.astype(np.float64))
    surface.values["cells"] = image_rows(pattern.cells(ignore_uniform).astype(np.float64))
    surface.attrs.update({"mpo_pattern": pattern.name, "mpo_scores": scores, "s": float(plane.s)})
    surface = Surface(
        surface.x, surface.y, surface.values, None, surface.attrs, surface.markers, surface.settings
    )
    if out is not None and world()[0] == 0:  # in a process group, rank 0 writes
        surface.save(out, overwrite=overwrite)
    barrier()
    return surface, scores
