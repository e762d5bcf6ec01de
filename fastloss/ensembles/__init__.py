"""Fast ensembling and Bayesian model averaging (Garipov et al. 2018; Izmailov et al. 2018;
Maddox et al. 2019), with every member of an ensemble evaluated in one batched pass.

- `swa`: `train_swa`, stochastic weight averaging on `torch.optim.swa_utils`, collecting a
  `SWAG` on the same run; `schedules`: the SWA and FGE learning rates.
- `swag`: `SWAG`, the running moments and deviations, and its samples.
- `fge`: `fge`, fast geometric ensembling from a trained network.
- `evaluate`: `evaluate_ensemble` (members as points of a subspace, BN recomputed per
  member, probabilities averaged) and `serial_ensemble`, the loop it replaces;
  `metrics`: accuracy, NLL, ECE, Brier, reliability bins.
- `width`: `optima_width`, the SGD–SWA line and random rays; `experiment`: `reproduce`,
  the papers' comparisons on built-in data.
"""

from fastloss.ensembles.evaluate import (
    EnsembleResult,
    evaluate_ensemble,
    members_subspace,
    serial_ensemble,
)
from fastloss.ensembles.fge import FGEResult, fge
from fastloss.ensembles.metrics import brier, ece, nll, reliability, scores
from fastloss.ensembles.schedules import FGESchedule, SWASchedule
from fastloss.ensembles.swa import SWAResult, train_swa
from fastloss.ensembles.swag import SWAG, load_swag, save_swag
from fastloss.ensembles.width import WidthResult, optima_width

__all__ = [
    "SWAG",
    "EnsembleResult",
    "FGEResult",
    "FGESchedule",
    "SWAResult",
    "SWASchedule",
    "WidthResult",
    "brier",
    "ece",
    "evaluate_ensemble",
    "fge",
    "load_swag",
    "members_subspace",
    "nll",
    "optima_width",
    "reliability",
    "save_swag",
    "scores",
    "serial_ensemble",
    "train_swa",
]
