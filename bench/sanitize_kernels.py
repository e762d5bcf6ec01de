"""Runs each CUDA kernel variant of fastloss once on small inputs, for compute-sanitizer:

    compute-sanitizer --tool memcheck --error-exitcode 1 python bench/sanitize_kernels.py

The calls are `fastloss.ops.testing.kernel_calls` (several blocks, partial tiles, scalar and
vector loads). PyTorch's caching allocator is turned off first, so that every tensor is its
own allocation and a read past its end is reported instead of landing in a neighbour.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYTORCH_NO_CUDA_MEMORY_CACHING", "1")  # before torch touches CUDA

import sys  # noqa: E402

import torch  # noqa: E402

from fastloss.ops import build_info  # noqa: E402
from fastloss.ops.testing import kernel_calls  # noqa: E402


def main() -> int:
    if not torch.cuda.is_available():
        print("sanitize_kernels: no CUDA device is visible; nothing to check", file=sys.stderr)
        return 2
    if not build_info()["cuda"]:
        print(
            "sanitize_kernels: fastloss was built without CUDA kernels; rebuild on this machine",
            file=sys.stderr,
        )
        return 2
    device = torch.device("cuda")
    for name, (fn, inputs) in kernel_calls(device).items():
        fn(*inputs)
        torch.cuda.synchronize(device)
        print(f"  {name}: ran", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
