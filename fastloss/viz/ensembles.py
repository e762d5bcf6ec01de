"""Figures of ensembles: the reliability diagram (Guo et al. 2017; Maddox et al. 2019, Fig. 3)
and an ensemble's accuracy as members join (Garipov et al. 2018's FGE curves)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "plot_ensemble_growth",
    "plot_reliability",
    "plot_width_line",
    "plot_width_rays",
    "save_figure",
]


def plot_reliability(curves: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Confidence against accuracy − confidence per bin (the paper's form: below zero is
    overconfident), one line per labelled `fastloss.ensembles.reliability` result, ECE in
    the legend."""
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    ax.axhline(0.0, color="0.5", lw=0.8)
    for label, bins in curves.items():
        filled = np.asarray(bins["count"]) > 0
        conf = np.asarray(bins["confidence"])[filled]
        acc = np.asarray(bins["accuracy"])[filled]
        ax.plot(conf, acc - conf, marker="o", ms=3, label=f"{label} (ECE {bins['ece']:.3f})")
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy − confidence")
    ax.set_title("reliability")
    ax.legend(fontsize=8)
    return fig


def plot_ensemble_growth(
    cumulative: Sequence[Mapping[str, float]],
    members: Sequence[Mapping[str, float]],
    title: str = "ensemble",
) -> Figure:
    """Test accuracy of the ensemble of the first m members, and of each member, against m."""
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    m = np.arange(1, len(cumulative) + 1)
    ax.plot(m, [100 * c["acc"] for c in cumulative], marker="o", label="ensemble of 1…m")
    ax.plot(m, [100 * c["acc"] for c in members], marker="x", ls=":", label="member m")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("members m")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> str:
    fig.savefig(path, dpi=dpi)
    return os.fspath(path)


def plot_width_line(
    distance: np.ndarray, line: Mapping[str, np.ndarray], sgd_at: float, swa_at: float
) -> Figure:
    """Paper 002's "optima width" figure: train loss (with ℓ2) and test error along the line
    through w_SGD and w_SWA, against the distance from w_SGD."""
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(distance, line["train_loss"], color="tab:blue", label="train loss (NLL + ℓ2)")
    ax.set_xlabel("distance from w_SGD along w_SGD → w_SWA")
    ax.set_ylabel("train loss", color="tab:blue")
    twin = ax.twinx()
    twin.plot(distance, line["test_err"], color="tab:red", ls="--", label="test error")
    twin.set_ylabel("test error (%)", color="tab:red")
    for at, name in ((sgd_at, "SGD"), (swa_at, "SWA")):
        ax.axvline(at, color="0.4", lw=0.8, ls=":")
        ax.annotate(name, (at, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom")
    ax.set_title("train loss and test error along the SGD–SWA line", pad=18)
    return fig


def plot_width_rays(rays: Mapping[str, Mapping[str, np.ndarray]]) -> Figure:
    """Test error along random filter-normalised rays from w_SGD and from w_SWA (paper 002,
    "optima width along random directions"): one thin line per ray, the mean thick."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for (name, ray), colour in zip(rays.items(), ("tab:blue", "tab:orange"), strict=False):
        for values in ray["test_err"]:
            ax.plot(ray["s"], values, color=colour, lw=0.6, alpha=0.5)
        ax.plot(ray["s"], ray["test_err"].mean(0), color=colour, lw=2, label=name.upper())
    ax.set_xlabel("distance along a filter-normalised direction")
    ax.set_ylabel("test error (%)")
    ax.set_title("test error along random rays")
    ax.legend()
    return fig
