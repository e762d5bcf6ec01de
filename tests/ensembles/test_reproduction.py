"""The papers' claims on built-in data (MNIST-1D, an MLP 40-128-128-10, three seeds; about
50 s): SWA at least as accurate as SGD on average (Izmailov et al. 2018), SWAG's NLL below
SGD's (Maddox et al. 2019), the FGE ensemble above its best member (Garipov et al. 2018),
and w_SWA nearer the centre of its basin along the SGD–SWA line than w_SGD in every seed
(Izmailov et al. 2018, "Optima width"). ``pytest -s`` prints the table in the form of paper
002's SWA table."""

import numpy as np
import pytest

from fastloss.data import load_data
from fastloss.ensembles.experiment import reproduce
from fastloss.ensembles.width import basin_centre

pytestmark = pytest.mark.slow


def test_swa_swag_fge_and_width_as_in_the_papers():
    train, test = load_data("mnist1d")
    result = reproduce(train, test, seeds=(0, 1, 2))
    rows, mean, claims = result["rows"], result["mean"], result["claims"]
    print(
        "\nMNIST-1D, MLP 40-128-128-10, budget 30 epochs, test accuracy (%), "
        "mean ± std over 3 seeds"
    )
    print("| SGD | FGE | SWA 1 budget | SWA 1.25 budgets | SWA 1.5 budgets |")

    def cell(key, digits=2):
        values = [r[key] for r in rows]
        return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"

    print(
        f"| {cell('sgd_acc')} | {cell('fge_acc')} | {cell('swa1_acc')} | "
        f"{cell('swa1.25_acc')} | {cell('swa1.5_acc')} |"
    )
    print(
        f"NLL: SGD {cell('sgd_nll', 4)}, SWAG BMA {cell('swag_nll', 4)}; "
        f"ECE SGD {cell('sgd_ece', 4)}, SWAG {cell('swag_ece', 4)}"
    )
    print(
        f"FGE best member {cell('fge_best_member_acc')}; width offsets "
        f"SGD {cell('width_sgd_offset')}, SWA {cell('width_swa_offset')}"
    )
    print("claims:", claims)
    assert claims["swa_at_least_sgd"], mean
    assert claims["swag_nll_below_sgd"], mean
    assert claims["fge_at_least_best_member"], rows
    assert claims["swa_nearer_basin_centre"], rows


def test_basin_centre_reads_a_parabola():
    t = np.linspace(-1, 2, 61)
    basin = basin_centre(t, (t - 0.8) ** 2)
    assert basin["centre"] == pytest.approx(0.8, abs=1e-9)
    assert basin["swa_nearer_centre"] and basin["swa_offset"] == pytest.approx(
        0.2 / (basin["edges"][1] - 0.8)
    )
    assert np.isnan(basin_centre(t, t)["centre"])  # the lowest loss at an end: no basin
