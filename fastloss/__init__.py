"""fastloss: loss surfaces, mode connectivity and fast ensembling for PyTorch models."""

__version__ = "0.1.0"

from fastloss import ops  # noqa: E402  (ops checks the compiled extension against torch)
from fastloss.batched import batch  # noqa: E402
from fastloss.evaluate import evaluate  # noqa: E402
from fastloss.io import Surface  # noqa: E402
from fastloss.subspace import Grid, Line, Plane, Subspace  # noqa: E402

__all__ = [
    "Grid",
    "Line",
    "Plane",
    "Subspace",
    "Surface",
    "batch",
    "evaluate",
    "ops",
    "__version__",
]
