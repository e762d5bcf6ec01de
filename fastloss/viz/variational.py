"""Figures of variational networks (Neklyudov et al. 2018): the ensemble's accuracy against
the number of weight samples K for each network, with its deterministic prediction beside
it, and the per-layer histograms of the weights' signal-to-noise ratio μ²/σ², where a
variance network's means have collapsed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_accuracy_by_samples", "plot_snr"]


def plot_accuracy_by_samples(
    curves: Mapping[str, Sequence[float]], deterministic: Mapping[str, float] | None = None
) -> Figure:
    """Ensemble accuracy (%) after k = 1 … K samples, one line per labelled network; its
    deterministic accuracy as a dashed level of the same colour."""
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    for label, acc in curves.items():
        k = np.arange(1, len(acc) + 1)
        (line,) = ax.plot(k, acc, label=f"{label}: ensemble")
        if deterministic and label in deterministic:
            ax.axhline(
                deterministic[label],
                color=line.get_color(),
                ls="--",
                lw=1,
                label=f"{label}: deterministic",
            )
    ax.set_xscale("log")
    ax.set_xlabel("weight samples K")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("ensemble of K samples")
    ax.legend(fontsize=8)
    return fig


def plot_snr(snr: Mapping[str, np.ndarray], title: str = "signal-to-noise ratio") -> Figure:
    """Histogram of log10(μ²/σ²) per layer (a variance layer's zero means sit at the left
    edge, clipped to 1e-12)."""
    layers = list(snr)
    fig = Figure(figsize=(3.2 * len(layers), 3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(layers), sharey=True))
    for ax, name in zip(axes, layers, strict=True):
        values = np.log10(np.maximum(np.asarray(snr[name], dtype=np.float64), 1e-12))
        ax.hist(values, bins=40, color="C0")
        ax.set_title(f"layer {name}", fontsize=9)
        ax.set_xlabel("log10 μ²/σ²")
    axes[0].set_ylabel("weights")
    fig.suptitle(title)
    return fig
