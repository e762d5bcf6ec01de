"""Neklyudov et al. 2018's pattern on built-in data (about 6 min on a 2-core CPU): dropout's
three prediction schemes agree; a variance network (zero-mean hidden layers, σ learned)
predicts at chance from its mean weights while its ensemble of K = 100 samples is within a
few points of dropout's; variational dropout with α per neuron, trained by the SGVLB, also
predicts at chance from its means (with the BatchNorm statistics of training); and the
parametrisation table's trend, the deterministic accuracy falling towards chance as the
posterior loses its mean. ``pytest -s`` prints the tables; the figures go to ``tmp_path``.
"""

import numpy as np
import pytest

from fastloss.variational.experiment import reproduce
from fastloss.variational.model import snr
from fastloss.viz.variational import plot_accuracy_by_samples, plot_snr

pytestmark = pytest.mark.slow

NAMES = {
    "dropout": "dropout (α = 1)",
    "neuron": "variational dropout, α per neuron",
    "layer": "α per layer",
    "weight": "α per weight",
    "additive": "additive",
    "variance": "variance network",
}


def _table(result, title):
    runs = result["runs"]
    seeds = len(next(iter(runs.values())))
    print(f"\n{title}; chance {result['chance']:.1f} %; mean ± std over {seeds} seed(s)")
    print("| network | ELBO | stoch. | det. | ens. | det. (BN recomputed) | ens. (BN recomputed) |")
    print("|---|---|---|---|---|---|---|")

    def cell(row, key, digits=1):
        values = [r[key] for r in runs[row]]
        return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"

    for row in runs:
        print(
            f"| {NAMES[row]} | {cell(row, 'elbo', 0)} | {cell(row, 'stoch')} | "
            f"{cell(row, 'det')} | {cell(row, 'ens')} | {cell(row, 'det_bn')} | "
            f"{cell(row, 'ens_bn')} |"
        )
    print("claims:", result["claims"])


def test_digits_lenet5_dropout_against_a_variance_network(tmp_path):
    result = reproduce("digits", rows=("dropout", "variance"), seeds=(0, 1))
    _table(result, "digits, LeNet-5 (20-50 / 500) with BN, test accuracy (%)")
    claims = result["claims"]
    assert claims["dropout_modes_close"], result["mean"]
    assert claims["variance_det_at_chance"], result["mean"]
    assert claims["variance_ensemble_near_dropout"], result["mean"]
    first = {row: runs[0] for row, runs in result["runs"].items()}
    curves = {NAMES[row]: r["acc_by_k"] for row, r in first.items()}
    levels = {NAMES[row]: r["det"] for row, r in first.items()}
    plot_accuracy_by_samples(curves, levels).savefig(tmp_path / "accuracy_by_k.png")


def test_mnist1d_mlp_dropout_variational_dropout_and_a_variance_network():
    result = reproduce("mnist1d", seeds=(0, 1))
    _table(result, "MNIST-1D, MLP 40-256-256-10 with BN, test accuracy (%)")
    claims = result["claims"]
    assert claims["dropout_modes_close"], result["mean"]
    assert claims["neuron_det_at_chance"], result["mean"]
    assert claims["variance_det_at_chance"], result["mean"]
    assert claims["variance_ensemble_near_dropout"], result["mean"]


def test_digits_parametrisations_lose_the_mean_in_order(tmp_path):
    rows = ("layer", "neuron", "weight", "additive")
    result = reproduce("digits", rows=rows, seeds=(0,), model_kwargs={})
    _table(result, "digits, LeNet-5 (6-16 / 120-84) with BN, parametrisations, test accuracy (%)")
    claims = result["claims"]
    assert claims["layer_det_at_chance"] and claims["neuron_det_at_chance"], result["mean"]
    assert claims["weight_det_above_neuron"], result["mean"]
    assert claims["additive_det_above_neuron"], result["mean"]
    assert all(m["ens"] >= 90 for m in result["mean"].values()), result["mean"]
    ratios = {k: v.numpy() for k, v in snr(result["runs"]["neuron"][0]["model"]).items()}
    plot_snr(ratios, "variational dropout, α per neuron").savefig(tmp_path / "snr.png")
    # the means' collapse: most weights' SNR under 1 in every hidden layer
    for name, ratio in list(ratios.items())[1:-1]:
        assert np.median(ratio) < 1, (name, np.median(ratio))
