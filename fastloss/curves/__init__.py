"""Mode connectivity (Garipov et al. 2018): curves of low loss between two trained networks.

- `curve`: `Bezier` and `PolyChain`, subspaces with basis ``[w1, θ_1 … θ_n, w2]``;
  `checkpoint`: saving and loading them.
- `fit` / `fit_step`: `fit_curve`, S values of t per step in one batched pass, resumable
  from its output folder (`fastloss.io.fit_store`).
- `evaluate`: `evaluate_curve` (the curve against the straight segment, ensembles along it)
  and `evaluate_curve_plane` (the loss surface in the curve's plane, `plane.curve_plane`).
- `snapshots` and `video`: the frames of the plane as the curve trains.
"""

from fastloss.curves.checkpoint import load_curve, load_curve_model, save_curve
from fastloss.curves.curve import CURVES, Bezier, Curve, PolyChain, make_curve
from fastloss.curves.evaluate import evaluate_curve, evaluate_curve_plane
from fastloss.curves.fit import fit_curve
from fastloss.curves.fit_step import fit_step, make_optimizer
from fastloss.curves.plane import StraightCurveError, curve_plane, curve_points, frame_curves
from fastloss.curves.snapshots import Snapshot, default_grid, load_snapshots
from fastloss.curves.video import evaluate_frames

__all__ = [
    "CURVES",
    "Bezier",
    "Curve",
    "PolyChain",
    "Snapshot",
    "StraightCurveError",
    "curve_plane",
    "curve_points",
    "default_grid",
    "evaluate_curve",
    "evaluate_curve_plane",
    "evaluate_frames",
    "fit_curve",
    "fit_step",
    "frame_curves",
    "load_curve",
    "load_curve_model",
    "load_snapshots",
    "make_curve",
    "make_optimizer",
    "save_curve",
]
