"""Loss surfaces: `evaluate` a model's metrics on a grid of a plane or a line (to a `Surface`,
in memory or HDF5), and `predict` its outputs at points of a subspace."""

from fastloss.surfaces.evaluate import evaluate, grid_points
from fastloss.surfaces.predict import predict

__all__ = ["evaluate", "grid_points", "predict"]
