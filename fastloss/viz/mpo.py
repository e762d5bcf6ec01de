"""Figures of multi-point optimization (Skorokhodov & Burtsev 2019): a fitted plane beside
its pattern (the paper's Figures 1–2), and the batch-norm experiment (its Figure 4).

Cells are drawn as pixels, the picture upright: the surface's rows run from the lowest β up,
so they are drawn with ``origin="lower"`` on the cells' (α, β) coordinates.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from fastloss.errors import ArgumentError
from fastloss.io import Surface
from fastloss.viz.style import add_colorbar

__all__ = ["plot_bn_experiment", "plot_pattern_surface", "save_bn_figures"]


def _extent(surface: Surface) -> list[float]:
    assert surface.y is not None
    dx = (surface.x[-1] - surface.x[0]) / max(len(surface.x) - 1, 1) / 2
    dy = (surface.y[-1] - surface.y[0]) / max(len(surface.y) - 1, 1) / 2
    return [surface.x[0] - dx, surface.x[-1] + dx, surface.y[0] - dy, surface.y[-1] + dy]


def plot_pattern_surface(surface: Surface, title: str | None = None) -> Figure:
    """One row per split (train, test): the pattern (good cells black), the loss on a log
    colour scale, and the accuracy, with each split's accuracy gap and IoU in the titles
    (from `fastloss.mpo.evaluate_pattern`'s surface)."""
    if "pattern" not in surface.values or surface.y is None:
        raise ArgumentError(
            "not an MPO surface (no 'pattern' values); make one with fastloss mpo eval"
        )
    splits = [s for s in ("train", "test") if f"{s}_acc" in surface.values]
    scores: Mapping[str, Any] = surface.attrs.get("mpo_scores") or {}
    fig = Figure(figsize=(11, 3.3 * len(splits)), layout="constrained")
    axes = fig.subplots(len(splits), 3, squeeze=False)
    extent = _extent(surface)
    for row, split in zip(axes, splits, strict=True):
        ax = row[0]
        ax.imshow(surface.values["pattern"], cmap="gray_r", origin="lower", extent=extent)
        ax.set_title("pattern (good cells black)", fontsize=10)
        loss = surface.values[f"{split}_loss"]
        positive = loss[np.isfinite(loss) & (loss > 0)]
        norm = LogNorm(*(positive.min(), positive.max())) if positive.size else None
        image = row[1].imshow(
            np.where(loss > 0, loss, np.nan),
            norm=norm,
            cmap="RdBu_r",
            origin="lower",
            extent=extent,
        )
        add_colorbar(fig, image, row[1], f"{split} loss", log=True)
        image = row[2].imshow(
            surface.values[f"{split}_acc"],
            norm=Normalize(0, 100),
            cmap="RdBu",
            origin="lower",
            extent=extent,
        )
        add_colorbar(fig, image, row[2], f"{split} accuracy (%)", log=False)
        s = scores.get(split, {})
        row[1].set_title(f"{split} loss (log scale)", fontsize=10)
        row[2].set_title(
            f"{split} accuracy: gap {s.get('gap', float('nan')):.3f}, "
            f"IoU {s.get('iou', float('nan')):.3f}",
            fontsize=10,
        )
        for ax in row:
            ax.set_xlabel("α (w_right)")
            ax.set_ylabel("β (w_up)")
    if title:
        fig.suptitle(title)
    return fig


def _by_p(rows: Sequence[Mapping[str, Any]], bn: bool, key: str) -> tuple[np.ndarray, ...]:
    ps = sorted({float(r["p"]) for r in rows if bool(r["bn"]) == bn})
    values = [[float(r[key]) for r in rows if bool(r["bn"]) == bn and r["p"] == p] for p in ps]
    mean = np.array([np.mean(v) for v in values])
    std = np.array([np.std(v) for v in values])
    return np.array(ps), mean, std


def plot_bn_experiment(rows: Sequence[Mapping[str, Any]]) -> tuple[Figure, Figure]:
    """The paper's Figure 4 from the experiment's runs (``p``, ``bn``, ``gap``,
    ``good_acc``, ``bad_acc`` per run, test accuracies as fractions): (a) the accuracy gap
    against p with and without BN, bands of one standard deviation across seeds; (b) the
    mean accuracy on good (solid) and bad (dotted) cells, blue without and red with BN."""
    if not rows:
        raise ArgumentError("the batch-norm experiment has no finished runs to draw")
    colours = {False: "tab:blue", True: "tab:red"}
    labels = {False: "without BN", True: "with BN"}
    fig_a = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig_a.add_subplot()
    for bn in (False, True):
        ps, mean, std = _by_p(rows, bn, "gap")
        if ps.size:
            ax.plot(ps, mean, "o-", color=colours[bn], label=labels[bn])
            ax.fill_between(ps, mean - std, mean + std, color=colours[bn], alpha=0.2)
    ax.set_xlabel("fill probability p")
    ax.set_ylabel("accuracy gap (good − bad cells)")
    ax.set_title("(a) accuracy gap, ±1 std across seeds", fontsize=10)
    ax.legend()
    fig_b = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig_b.add_subplot()
    for bn in (False, True):
        for key, style, which in (("good_acc", "-", "good"), ("bad_acc", ":", "bad")):
            ps, mean, _ = _by_p(rows, bn, key)
            if ps.size:
                ax.plot(
                    ps,
                    mean,
                    style,
                    marker="o",
                    color=colours[bn],
                    label=f"{labels[bn]}, {which} cells",
                )
    ax.set_xlabel("fill probability p")
    ax.set_ylabel("mean test accuracy")
    ax.set_title("(b) mean accuracy on good and bad cells", fontsize=10)
    ax.legend(fontsize=8)
    return fig_a, fig_b


def save_bn_figures(
    rows: Sequence[Mapping[str, Any]], fig_a: str | os.PathLike, fig_b: str | os.PathLike
) -> list[str]:
    """Write `plot_bn_experiment`'s two figures to PNG paths; returns the paths."""
    figures = plot_bn_experiment(rows)
    for fig, path in zip(figures, (fig_a, fig_b), strict=True):
        fig.savefig(path, dpi=150)
    return [os.fspath(fig_a), os.fspath(fig_b)]
