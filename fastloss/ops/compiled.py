"""Loads the compiled extension and checks that it matches the installed torch."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

import torch

from fastloss.errors import ExtensionMismatchError


def _rebuild_hint() -> str:
    return "Rebuild it against this torch: pip install --no-build-isolation --force-reinstall -e ."


def load_extension() -> ModuleType | None:
    """The compiled extension, checked against the installed torch; None when not built."""
    try:
        _C = importlib.import_module("fastloss._C")
    except ModuleNotFoundError as error:
        if error.name != "fastloss._C":  # the extension is there but needs a missing module
            raise
        return None
    except ImportError as error:  # e.g. undefined symbols from another torch's ABI
        raise ExtensionMismatchError(
            f"fastloss's compiled extension cannot be loaded with torch {torch.__version__}: "
            f"{error}. {_rebuild_hint()}"
        ) from error
    built_for = _C.torch_version()
    if built_for.split("+")[0] != torch.__version__.split("+")[0]:
        raise ExtensionMismatchError(
            f"fastloss was compiled against torch {built_for} but torch {torch.__version__} "
            f"is installed. {_rebuild_hint()}"
        )
    if _C.built_with_cuda() and torch.version.cuda and _C.cuda_version() != torch.version.cuda:
        raise ExtensionMismatchError(
            f"fastloss's CUDA kernels were compiled with CUDA {_C.cuda_version()} but torch uses "
            f"CUDA {torch.version.cuda}. {_rebuild_hint()}"
        )
    return _C


extension = load_extension()
_warned: set[str] = set()


def compiled_for(device: torch.device) -> bool:
    """True if the compiled kernels serve tensors on `device`; warns once per device if not."""
    if extension is not None and (
        device.type == "cpu" or (device.type == "cuda" and extension.built_with_cuda())
    ):
        return True
    if device.type not in _warned:
        _warned.add(device.type)
        reason = "is not built" if extension is None else f"has no {device.type} kernels"
        warnings.warn(
            f"fastloss: the compiled extension {reason}; {device.type} tensors use the PyTorch "
            "reference implementations (correct, slower). Build it with "
            "`pip install --no-build-isolation -e .`.",
            stacklevel=3,
        )
    return False


def build_info() -> dict[str, object]:
    """What was compiled: CPU and CUDA kernels, CUDA version and architectures."""
    if extension is None:
        return {"compiled": False, "cpu": False, "cuda": False}
    return {
        "compiled": True,
        "cpu": True,
        "cuda": extension.built_with_cuda(),
        "cuda_version": extension.cuda_version(),
        "cuda_arch_list": extension.cuda_arch_list(),
        "torch": extension.torch_version(),
    }
