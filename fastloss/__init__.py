"""fastloss: loss surfaces, mode connectivity, multi-point optimization, fast ensembling
and variance networks for PyTorch models.

One network runs at many weight vectors ``w_k = Σ_j c_kj W_j`` of a small subspace in one
batched pass, with compiled kernels that synthesise each point's weights on the fly. This
module is the public API; the packages below it are layered (docs/design.md): ``ops`` →
``core`` → ``engine`` → workflows (``surfaces``, ``curves``, ``mpo``, ``ensembles``) →
``variational`` → ``viz`` → ``cli``,
with ``io``, ``data``, ``models`` and ``training`` as leaves. Importing fastloss imports
neither matplotlib nor the command line.
"""

from fastloss import ops
from fastloss.core import Grid, Line, Plane, Subspace, batch
from fastloss.curves import (
    Bezier,
    PolyChain,
    curve_plane,
    evaluate_curve,
    evaluate_curve_plane,
    fit_curve,
    load_curve,
    save_curve,
)
from fastloss.data import load_data
from fastloss.ensembles import SWAG, evaluate_ensemble, fge, optima_width, train_swa
from fastloss.errors import FastlossError
from fastloss.io import CurveResult, Surface, export_vtk, load_checkpoint, save_checkpoint
from fastloss.models import build_from_checkpoint, build_model
from fastloss.mpo import (
    builtin_pattern,
    evaluate_pattern,
    fit_pattern,
    load_pattern,
    load_plane,
    random_pattern,
)
from fastloss.surfaces import evaluate, predict
from fastloss.training import train
from fastloss.variational import (
    load_vnet,
    predict_modes,
    save_vnet,
    train_vnet,
    variational,
)
from fastloss.version import __version__

__all__ = [
    "Bezier",
    "CurveResult",
    "FastlossError",
    "Grid",
    "Line",
    "Plane",
    "PolyChain",
    "SWAG",
    "Subspace",
    "Surface",
    "__version__",
    "batch",
    "build_from_checkpoint",
    "build_model",
    "builtin_pattern",
    "curve_plane",
    "evaluate",
    "evaluate_curve",
    "evaluate_curve_plane",
    "evaluate_ensemble",
    "evaluate_pattern",
    "export_vtk",
    "fge",
    "fit_curve",
    "fit_pattern",
    "load_checkpoint",
    "load_curve",
    "load_data",
    "load_pattern",
    "load_plane",
    "ops",
    "optima_width",
    "predict",
    "random_pattern",
    "save_checkpoint",
    "save_curve",
    "train",
    "train_swa",
    "variational",
    "train_vnet",
    "predict_modes",
    "save_vnet",
    "load_vnet",
]
