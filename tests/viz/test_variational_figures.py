"""Figures of variational networks: accuracy against K and the SNR histograms."""

import numpy as np
import pytest

from fastloss.viz.ensembles import save_figure
from fastloss.viz.variational import plot_accuracy_by_samples, plot_snr

PNG = b"\x89PNG\r\n\x1a\n"


def test_accuracy_by_samples_and_snr(tmp_path):
    fig = plot_accuracy_by_samples(
        {"dropout": [90, 92, 93], "variance": [40, 70, 91]}, {"dropout": 93.5, "variance": 10}
    )
    ax = fig.axes[0]
    assert len(ax.lines) == 4 and ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()][1] == "dropout: deterministic"
    snr = {"1": np.array([0.0, 1e-3, 2.0]), "3": np.array([5.0, 50.0])}
    fig2 = plot_snr(snr)
    assert len(fig2.axes) == 2 and fig2.axes[0].patches  # bars drawn
    # one shared axis; each layer's bars sum to 1 (fractions of its weights)
    assert fig2.axes[0].get_xlim() == fig2.axes[1].get_xlim()
    assert sum(p.get_height() for p in fig2.axes[1].patches) == pytest.approx(1.0)
    for name, f in (("k", fig), ("snr", fig2)):
        path = tmp_path / f"{name}.png"
        save_figure(f, path)
        assert path.read_bytes()[:8] == PNG
