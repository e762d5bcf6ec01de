"""Scores of predicted class probabilities: accuracy, mean negative log-likelihood, expected
calibration error and the Brier score, for one network or a Bayesian model average.

Every score is a mean per sample: the NLL is ``−mean log p(y|x)``, never the sum over the
test set (which swa_gaussian's issues #8 and #25 show is easy to confuse with it). The ECE
follows Guo et al. 2017 with equal-width confidence bins (20 by default, as Maddox et al.
2019 report it).
"""

from __future__ import annotations

import numpy as np

from fastloss.errors import DataError

ECE_BINS = 20
_TINY = 1e-12  # log(0) guard: a probability of exactly 0 on the true class


def _check(probs: np.ndarray, labels: np.ndarray) -> None:
    if probs.ndim != 2 or labels.ndim != 1 or probs.shape[0] != labels.shape[0]:
        raise DataError(
            f"expected probabilities [N, C] and labels [N], got {list(probs.shape)} and "
            f"{list(labels.shape)}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise DataError(
            f"labels must lie in [0, {probs.shape[1]}) for {probs.shape[1]} classes, got "
            f"{labels.min()}..{labels.max()}"
        )


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose most probable class is the label."""
    _check(probs, labels)
    return float((probs.argmax(1) == labels).mean())


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood per sample, ``−mean_i log p(y_i | x_i)``."""
    _check(probs, labels)
    p_true = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(p_true, _TINY)).mean())


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over samples of ``Σ_c (p_c − 1[c = y])²`` (Brier 1950, multi-class form)."""
    _check(probs, labels)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(np.square(probs - onehot).sum(1).mean())


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per confidence bin (``bins`` equal widths over [0, 1]): ``edges [bins + 1]``,
    ``count``, mean ``confidence`` and ``accuracy`` (NaN where a bin is empty), and the
    ``ece``, ``Σ_b (n_b / N)·|accuracy_b − confidence_b|``."""
    _check(probs, labels)
    if bins < 1:
        raise DataError(f"bins must be >= 1, got {bins}")
    confidence = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin b holds confidences in (edges[b], edges[b + 1]]; a confidence of 0 joins bin 0
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, confidence, minlength=bins) / count
        acc = np.bincount(which, correct, minlength=bins) / count
    filled = count > 0
    ece = float((count[filled] * np.abs(acc[filled] - conf[filled])).sum() / max(len(labels), 1))
    return {"edges": edges, "count": count, "confidence": conf, "accuracy": acc, "ece": ece}


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``bins`` equal-width confidence bins."""
    return reliability(probs, labels, bins)["ece"]


def scores(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, float]:
    """``{"acc", "nll", "ece", "brier"}`` of ``probs [N, C]`` against ``labels [N]``."""
    _check(probs, labels)
    return scores_of_sets(probs[None], labels, bins)[0]


def scores_of_sets(
    probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """`scores` of each of ``probs [S, N, C]``, S predictions of the same samples (an
    ensemble's members), computed for all S at once."""
    if probs.ndim != 3:
        raise DataError(f"expected probabilities [S, N, C], got {list(probs.shape)}")
    _check(probs[0], labels)
    if bins < 1:
        raise DataError(f"bins must be >= 1, got {bins}")
    S, N = probs.shape[:2]
    p_true = probs[:, np.arange(N), labels]
    correct = probs.argmax(2) == labels
    confidence = probs.max(2)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    which += bins * np.arange(S)[:, None]  # one set of bins per prediction set
    # Σ_b (n_b / N)·|acc_b − conf_b| = Σ_b |Σ_{i∈b} correct_i − Σ_{i∈b} confidence_i| / N
    gap = np.bincount(which.ravel(), (correct - confidence).ravel(), minlength=S * bins)
    ece = np.abs(gap.reshape(S, bins)).sum(1) / max(N, 1)
    # Σ_c (p_c − 1[c = y])² = Σ_c p_c² − 2 p_y + 1
    brier = (np.square(probs).sum(2) - 2 * p_true + 1).mean(1)
    nll = -np.log(np.maximum(p_true, _TINY)).mean(1)
    acc = correct.mean(1)
    return [
        {"acc": float(acc[i]), "nll": float(nll[i]), "ece": float(ece[i]), "brier": float(brier[i])}
        for i in range(S)
    ]
