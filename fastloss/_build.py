"""Build configuration shared by setup.py and the optional JIT build (`jit_load`).

Kept free of fastloss imports so setup.py can load it by path before anything is built.
"""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
SOURCE_LIST = os.path.join(CSRC, "sources.txt")
DEFAULT_CUDA_ARCHS = "8.0;9.0"
# Parts of csrc/sources.txt: every build, CUDA builds only, the pybind11 module (not in CMake).
SOURCE_PARTS = ("ops", "cuda", "python")


def want_cuda() -> bool:
    """CUDA kernels are built when nvcc and a CUDA-enabled torch are present, unless overridden."""
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if os.environ.get("FASTLOSS_FORCE_CPU", "0") == "1":
        return False
    if os.environ.get("FASTLOSS_FORCE_CUDA", "0") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def cuda_arch_list() -> str:
    """TORCH_CUDA_ARCH_LIST if set; otherwise the visible GPUs, or 8.0 and 9.0 when none is."""
    import torch

    archs = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if not archs and not torch.cuda.is_available():
        archs = DEFAULT_CUDA_ARCHS
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    if not archs:
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        archs = ";".join(f"{major}.{minor}" for major, minor in sorted(caps))
    return archs


def source_list() -> list[tuple[str, str]]:
    """(part, absolute path) for each entry of csrc/sources.txt (CMakeLists.txt reads it too)."""
    entries = []
    with open(SOURCE_LIST, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 2 or fields[0] not in SOURCE_PARTS:
                raise ValueError(
                    f"{SOURCE_LIST}:{number}: expected '<part> <path>' with part one of "
                    f"{', '.join(SOURCE_PARTS)}, got {line!r}"
                )
            entries.append((fields[0], os.path.join(ROOT, fields[1])))
    return entries


def sources(with_cuda: bool) -> list[str]:
    """Absolute paths of the extension's sources: ops and python, plus cuda when with_cuda."""
    parts = {"ops", "python", "cuda"} if with_cuda else {"ops", "python"}
    return [path for part, path in source_list() if part in parts]


def compile_args(with_cuda: bool) -> tuple[dict[str, list[str]], list[str]]:
    """(extra_compile_args, define flags) for the extension."""
    import torch

    defines = [f'-DFASTLOSS_TORCH_VERSION="{torch.__version__}"']
    if with_cuda:
        defines += [
            "-DFASTLOSS_WITH_CUDA",
            f'-DFASTLOSS_CUDA_VERSION="{torch.version.cuda}"',
            f'-DFASTLOSS_CUDA_ARCH_LIST="{cuda_arch_list()}"',
        ]
    # -fopenmp: at::parallel_for is inlined into our kernels and runs serially without it.
    args = {"cxx": ["-O3", "-fopenmp", *defines]}
    if with_cuda:
        args["nvcc"] = ["-O3", "--expt-relaxed-constexpr", "-lineinfo", *defines]
    return args, defines


def extension(with_cuda: bool | None = None):
    """The setuptools Extension for fastloss._C."""
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    with_cuda = want_cuda() if with_cuda is None else with_cuda
    args, _ = compile_args(with_cuda)
    kind = CUDAExtension if with_cuda else CppExtension
    return kind(
        name="fastloss._C",
        sources=[os.path.relpath(s, ROOT) for s in sources(with_cuda)],
        include_dirs=[CSRC],
        extra_compile_args=args,
        extra_link_args=["-fopenmp"],
    )


def jit_load(verbose: bool = False):
    """Builds and loads the extension in place with torch.utils.cpp_extension.load."""
    import shlex

    from torch.utils.cpp_extension import load

    with_cuda = want_cuda()
    args, _ = compile_args(with_cuda)
    # load() writes the flags into its ninja file as they are, and ninja runs them through a
    # shell, so the quoted string defines ("2.14.1+cu130", "8.0;9.0") must be shell-quoted.
    return load(
        name="fastloss_C",
        sources=sources(with_cuda),
        extra_include_paths=[CSRC],
        extra_cflags=[shlex.quote(a) for a in args["cxx"]],
        extra_cuda_cflags=[shlex.quote(a) for a in args.get("nvcc", [])],
        extra_ldflags=["-fopenmp"],
        with_cuda=with_cuda,
        verbose=verbose,
    )
