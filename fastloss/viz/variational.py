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
    """Histogram of log10(μ²/σ²) per layer, on one axis for all layers and as a fraction of
    each layer's weights, with SNR = 1 marked: a layer whose means collapsed sits left of the
    line (a variance layer's zero means at the left edge, clipped to 1e-12)."""
    layers = list(snr)
    values = {n: np.log10(np.maximum(np.asarray(snr[n], dtype=np.float64), 1e-12)) for n in layers}
    low = min(min(float(v.min()), 0.0) for v in values.values())
    high = max(max(float(v.max()), 0.0) for v in values.values())
    bins = np.linspace(low - 0.5, high + 0.5, 50)
    fig = Figure(figsize=(2.8 * len(layers), 3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(layers), sharex=True, sharey=True))
    for ax, name in zip(axes, layers, strict=True):
        v = values[name]
        ax.hist(v, bins=bins, weights=np.full(v.shape, 1 / max(1, v.size)), color="C0")
        ax.axvline(0.0, color="0.4", linestyle="--", linewidth=1)
        ax.set_title(f"layer {name} ({v.size} weights)", fontsize=9)
        ax.set_xlabel("log10 μ²/σ²")
    axes[0].set_ylabel("fraction of the layer's weights")
    fig.suptitle(title)
    return fig
