"""Ensembles and Bayesian model averages evaluated in one batched pass.

The members (checkpoints, FGE snapshots, SWAG samples, a curve's points) are the points of a
subspace: by default the one-hot subspace whose basis is the members themselves (J = M,
member m at coordinates e_m), or any `Subspace` with the members' coordinates (a curve's
control points and Bernstein weights). The engine runs the model at every member at once
(`fastloss.predict`), recomputing each member's BatchNorm statistics on the training data as
``torch.optim.swa_utils.update_bn`` would; the predicted probabilities are averaged over
the members (the BMA, Maddox et al. 2019, eq. 5) and scored (`fastloss.ensembles.metrics`).
`serial_ensemble` is the loop it replaces: per member, load the weights, ``update_bn``,
predict.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn

from fastloss.core import Subspace
from fastloss.data import Dataset
from fastloss.engine import check_batch_size, has_batch_norm
from fastloss.ensembles.metrics import ECE_BINS, reliability, scores_of_sets
from fastloss.errors import ArgumentError, DataError
from fastloss.surfaces import predict

Member = nn.Module | Mapping[str, Tensor]


@dataclass
class EnsembleResult:
    """``members``: each member's scores; ``ensemble``: the BMA's over all members;
    ``cumulative``: the BMA's over the first m members, m = 1 … M (an FGE run's accuracy
    after each snapshot); ``reliability``: the BMA's reliability bins
    (`metrics.reliability`); ``probs``: the BMA's probabilities ``[N, C]``;
    ``member_probs``: each member's ``[M, N, C]``."""

    members: list[dict[str, float]]
    ensemble: dict[str, float]
    cumulative: list[dict[str, float]]
    reliability: dict[str, Any]
    probs: np.ndarray
    member_probs: np.ndarray


def members_subspace(members: Sequence[Member]) -> tuple[Subspace, Tensor]:
    """The one-hot subspace of ``members`` (each a module or a state dict) and their
    coordinates (the identity). Refuses fewer than two members, members of another
    architecture than the first, and NaN or inf weights (named)."""
    if len(members) < 2:
        raise ArgumentError(
            f"an ensemble needs at least two members, got {len(members)}; evaluate a single "
            "network with fastloss.training.evaluate_model"
        )
    names = [f"member{m + 1}" for m in range(len(members))]
    subspace = Subspace.from_points(members, names, kind="ensemble", check_finite=False)
    for name, stacked in subspace.basis.items():  # one pass per parameter, all members
        if stacked.numel() and not torch.isfinite(torch.stack(torch.aminmax(stacked))).all():
            bad = ~torch.isfinite(stacked).flatten(1).all(1)  # NaN propagates through aminmax
            m = int(bad.nonzero()[0]) + 1
            raise DataError(f"ensemble member {m}: {name!r} holds NaN or inf")
    for name, t in subspace.reference_buffers.items():  # bn="fixed" uses the first's
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise DataError(f"ensemble member 1: {name!r} holds NaN or inf")
    return subspace, torch.eye(len(members), dtype=torch.float64)


def _as_probs(outputs: np.ndarray) -> np.ndarray:
    logits = torch.from_numpy(np.asarray(outputs, dtype=np.float64))
    return torch.softmax(logits, dim=-1).numpy()


def check_data(model: nn.Module, test: Dataset, train: Dataset | None, bn: str) -> None:
    """Refuse a test set that is not an (x, y) pair, and a BN update without train data."""
    if not (isinstance(test, (tuple, list)) and len(test) == 2):
        raise ArgumentError("test must be an (x, y) pair of tensors")
    if bn == "recompute" and has_batch_norm(model) and train is None:
        raise ArgumentError(
            "the model has BatchNorm: give train data for each member's BN update (or "
            "bn='fixed' to keep the statistics stored with the first member)"
        )


def score_members(
    member_probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> EnsembleResult:
    """Scores of members' probabilities ``[M, N, C]``, their average and its prefixes."""
    M = len(member_probs)
    running = np.cumsum(member_probs, axis=0) / np.arange(1, M + 1)[:, None, None]
    cumulative = scores_of_sets(running, labels, bins)
    bma = running[-1]
    return EnsembleResult(
        members=scores_of_sets(member_probs, labels, bins),
        ensemble=cumulative[-1],
        cumulative=cumulative,
        reliability=reliability(bma, labels, bins),
        probs=bma,
        member_probs=member_probs,
    )


def ensemble_probs(
    model: nn.Module,
    members: Sequence[Member] | tuple[Subspace, Tensor],
    test_x: Tensor,
    train: Dataset | None = None,
    *,
    bn: str = "recompute",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Every member's predicted probabilities on ``test_x``, ``[M, N, C]`` in float64, in one
    batched pass (per chunk of members); see `evaluate_ensemble`, which scores them."""
    if isinstance(members, tuple) and len(members) == 2 and isinstance(members[0], Subspace):
        subspace, coords = members
        if len(coords) < 2:
            raise ArgumentError(f"an ensemble needs at least two members, got {len(coords)}")
    else:
        subspace, coords = members_subspace(list(members))  # type: ignore[arg-type]
    outputs = predict(
        model,
        subspace,
        coords,
        test_x,
        train=train if has_batch_norm(model) and bn == "recompute" else None,
        bn=bn,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        progress=progress,
    )
    return _as_probs(outputs)


def evaluate_ensemble(
    model: nn.Module,
    members: Sequence[Member] | tuple[Subspace, Tensor],
    test: Dataset,
    train: Dataset | None = None,
    *,
    bn: str = "recompute",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    bins: int = ECE_BINS,
    progress: bool = False,
) -> EnsembleResult:
    """Every member of the ensemble on ``test = (x, y)`` in one batched pass (per chunk of
    members), each with its own BatchNorm statistics recomputed on ``train`` (``bn=
    "recompute"``); returns the members' and the BMA's accuracy, mean NLL per sample, ECE
    (``bins`` bins) and Brier score (`EnsembleResult`). ``members`` are modules or state
    dicts of ``model``'s architecture, or ``(subspace, coords [M, J])``."""
    check_data(model, test, train, bn)
    x, y = test
    options = dict(bn=bn, batch_size=batch_size, device=device, dtype=dtype, progress=progress)
    probs = ensemble_probs(model, members, x, train, **options)  # type: ignore[arg-type]
    return score_members(probs, y.cpu().numpy(), bins)


def _batches(x: Tensor, batch_size: int, like: Tensor) -> list[Tensor]:
    check_batch_size(batch_size)
    x = x.to(like.device, like.dtype if x.is_floating_point() else None)
    return [x[i : i + batch_size] for i in range(0, len(x), batch_size)]


@torch.no_grad()
def serial_ensemble(
    model: nn.Module,
    members: Sequence[Member],
    test: Dataset,
    train: Dataset | None = None,
    batch_size: int = 512,
    bins: int = ECE_BINS,
) -> EnsembleResult:
    """The loop `evaluate_ensemble` replaces (what swa_gaussian runs for SWAG): for every
    member, load its weights, ``update_bn`` on ``train`` if the model has BatchNorm, predict
    ``test`` in batches of ``batch_size``."""
    net = copy.deepcopy(model)
    x, y = test
    like = next(net.parameters())
    probs = []
    for member in members:
        state = member.state_dict() if isinstance(member, nn.Module) else member
        net.load_state_dict(state, strict=False)
        if has_batch_norm(net):
            if train is None:
                raise ArgumentError("the model has BatchNorm: give train data for its BN update")
            update_bn(_batches(train[0], batch_size, like), net)
        net.eval()
        out = torch.cat([net(xb) for xb in _batches(x, batch_size, like)])
        probs.append(torch.softmax(out.double(), -1).cpu().numpy())
    return score_members(np.stack(probs), y.cpu().numpy(), bins)
