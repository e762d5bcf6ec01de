"""Builds fastloss._C: CPU kernels always, CUDA kernels when nvcc and a CUDA torch are present.

FASTLOSS_FORCE_CPU=1 / FASTLOSS_FORCE_CUDA=1 override the choice; TORCH_CUDA_ARCH_LIST is
respected (8.0 and 9.0 when unset and no GPU is visible). Build flags live in
fastloss/_build.py, shared with the JIT build; the sources are listed in csrc/sources.txt,
shared with CMakeLists.txt. Install with
`pip install --no-build-isolation .` so the extension is compiled against the torch you run.
"""

import importlib.util
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension

_spec = importlib.util.spec_from_file_location(
    "fastloss_build",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "fastloss", "_build.py"),
)
_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build)

setup(
    ext_modules=[_build.extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
