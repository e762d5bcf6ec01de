"""``fastloss info``: the version, the compiled kernels and the devices."""

from __future__ import annotations

import argparse
import platform
import sys

import torch

from fastloss.cli.options import command, report
from fastloss.ops import build_info
from fastloss.version import __version__


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "info",
        help="show the version, compiled kernels and devices",
        description="Print the version, torch, which kernels were "
        "compiled (CPU, CUDA, arch list) and the visible devices.",
    )
    command(p, _info)


def _info(args: argparse.Namespace) -> int:
    built = build_info()
    print(f"fastloss {__version__}")
    print(f"python   {platform.python_version()} ({sys.executable})")
    print(f"torch    {torch.__version__} (CUDA {torch.version.cuda or 'none'})")
    if not built["compiled"]:
        print(
            "kernels  none compiled: ops use the PyTorch references "
            "(build with `pip install --no-build-isolation -e .`)"
        )
    else:
        cuda = (
            f"yes (CUDA {built['cuda_version']}, arch {built['cuda_arch_list']})"
            if built["cuda"]
            else "no"
        )
        print(f"kernels  CPU yes, CUDA {cuda}; compiled against torch {built['torch']}")
    cpu, threads = platform.processor() or platform.machine(), torch.get_num_threads()
    print(f"cpu      {cpu}, {threads} threads")
    gpus = [_gpu(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    for gpu in gpus:
        print(f"{gpu['device']}   {gpu['name']}, {gpu['capability']}, {gpu['memory_gib']:.0f} GiB")
    if not gpus:
        print("cuda     no GPU visible")
    report(
        args,
        version=__version__,
        python=platform.python_version(),
        python_executable=sys.executable,
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        kernels=built,
        cpu=cpu,
        threads=threads,
        gpus=gpus,
    )
    return 0


def _gpu(i: int) -> dict[str, object]:
    props = torch.cuda.get_device_properties(i)
    return {
        "device": f"cuda:{i}",
        "name": props.name,
        "capability": f"sm_{props.major}{props.minor}",
        "memory_gib": props.total_memory / 2**30,
    }
