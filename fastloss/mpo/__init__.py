"""Multi-point optimization (Skorokhodov & Burtsev 2019): planes of weights whose loss
landscape draws a given picture, and the batch-norm smoothing experiment.

- `patterns`: `Pattern` (good, bad and ignored cells) from pictures, random masks and
  built-in drawings.
- `plane`: `MPOPlane`, θ = {w_O, w_up, φ_right, s} with Gram–Schmidt and the shifted
  normalisation scales; `init_plane`.
- `step` / `fit`: `mpo_step` (every chosen cell in one batched forward and backward) and
  `fit_pattern`, resumable from its output folder; `checkpoint`: `save_plane`, `load_plane`.
- `evaluate`: `evaluate_pattern`, every cell on train and test through the engine, and
  `pattern_scores` (accuracy gap, IoU).
- `experiment`: `bn_experiment`, the paper's Fig. 4.
"""

from fastloss.mpo.checkpoint import load_plane, load_plane_model, save_plane
from fastloss.mpo.evaluate import evaluate_pattern, pattern_grid, pattern_scores
from fastloss.mpo.fit import fit_pattern
from fastloss.mpo.patterns import (
    BUILTIN_PATTERNS,
    Pattern,
    PatternError,
    builtin_pattern,
    load_pattern,
    random_pattern,
    resolve_pattern,
)
from fastloss.mpo.plane import MPOPlane, init_plane
from fastloss.mpo.step import mpo_objective, mpo_step

__all__ = [
    "BUILTIN_PATTERNS",
    "MPOPlane",
    "Pattern",
    "PatternError",
    "builtin_pattern",
    "evaluate_pattern",
    "fit_pattern",
    "init_plane",
    "load_pattern",
    "load_plane",
    "load_plane_model",
    "mpo_objective",
    "mpo_step",
    "pattern_grid",
    "pattern_scores",
    "random_pattern",
    "resolve_pattern",
    "save_plane",
]
