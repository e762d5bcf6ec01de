"""fastloss: loss surfaces, mode connectivity and fast ensembling for PyTorch models."""

from fastloss import ops

__version__ = "0.1.0"

__all__ = ["ops", "__version__"]
