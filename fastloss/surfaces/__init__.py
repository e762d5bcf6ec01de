"""Loss surfaces: `evaluate` a model's metrics on a grid of a plane or a line (to a `Surface`,
in memory or HDF5), `predict` its outputs at points of a subspace, and `profile_surface`:
where an evaluation's time goes, before a large grid."""

from fastloss.surfaces.evaluate import evaluate, grid_points, profile_surface
from fastloss.surfaces.predict import predict

__all__ = ["evaluate", "grid_points", "predict", "profile_surface"]
