"""Scores of predicted probabilities, against their definitions written out."""

import numpy as np
import pytest
import torch

from fastloss.ensembles import metrics
from fastloss.errors import DataError


def _probs(n=500, c=5, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, c, n)
    return probs, labels


def test_nll_is_the_mean_cross_entropy_not_the_sum():
    probs, labels = _probs()
    expected = torch.nn.functional.nll_loss(
        torch.log(torch.from_numpy(probs)), torch.from_numpy(labels)
    )
    assert metrics.nll(probs, labels) == pytest.approx(float(expected), rel=1e-12)


def test_ece_and_brier_match_a_loop_over_bins_and_samples():
    probs, labels = _probs(seed=1)
    conf, pred = probs.max(1), probs.argmax(1)
    ece = 0.0
    for lo, hi in zip(np.linspace(0, 1, 21)[:-1], np.linspace(0, 1, 21)[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += (
                inside.sum()
                / len(labels)
                * abs((pred[inside] == labels[inside]).mean() - conf[inside].mean())
            )
    assert metrics.ece(probs, labels) == pytest.approx(ece, rel=1e-12)
    brier = np.mean(
        [sum((probs[i, c] - (c == labels[i])) ** 2 for c in range(5)) for i in range(500)]
    )
    assert metrics.brier(probs, labels) == pytest.approx(brier, rel=1e-12)
    bins = metrics.reliability(probs, labels)
    assert bins["count"].sum() == len(labels) and len(bins["edges"]) == 21


def test_a_calibrated_predictor_has_small_ece_and_a_confident_wrong_one_large():
    rng = np.random.default_rng(2)
    n = 20_000
    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.uniform(size=n) < conf  # right exactly as often as it claims
    probs = np.stack([conf, 1 - conf], 1)
    labels = np.where(correct, 0, 1)
    assert metrics.ece(probs, labels) < 0.02
    assert metrics.ece(probs, 1 - labels) > 0.4  # E|1 − 2c| = 0.5 for c ~ U(0.5, 1)
    assert metrics.accuracy(probs, labels) == pytest.approx(correct.mean())


def test_bad_input_is_refused():
    probs, labels = _probs()
    with pytest.raises(DataError, match="labels must lie in"):
        metrics.nll(probs, labels + 5)
    with pytest.raises(DataError, match="expected probabilities"):
        metrics.brier(probs[:, :, None], labels)
    with pytest.raises(DataError, match=r"\[S, N, C\]"):
        metrics.scores_of_sets(probs, labels)


def test_scores_of_sets_equal_each_set_scored_alone():
    sets = np.stack([_probs(seed=s)[0] for s in range(4)])
    labels = _probs()[1]
    together = metrics.scores_of_sets(sets, labels)
    for probs, got in zip(sets, together, strict=True):
        alone = {
            "acc": metrics.accuracy(probs, labels),
            "nll": metrics.nll(probs, labels),
            "ece": metrics.reliability(probs, labels)["ece"],
            "brier": metrics.brier(probs, labels),
        }
        assert got == pytest.approx(alone, rel=1e-12, abs=1e-15)
    assert len({round(s["ece"], 12) for s in together}) == 4  # the sets' bins are kept apart
