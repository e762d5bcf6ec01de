"""The compiled ops: each point's weights synthesised from a subspace's basis on the fly.

``J`` basis points, ``K`` evaluation points, ``B`` samples per point, ``coords [K, J]``:

- `synthesize` — per-point tensors ``[K, *S]`` from a basis ``[J, *S]``;
- `subspace_linear`, `subspace_conv1d`, `subspace_conv2d` — the layers at K points;
- `pointwise_batch_norm` — batch norm with per-point statistics and affine parameters;
- `point_loss` — per-point cross-entropy sum and correct count, without a softmax tensor.

Each has a PyTorch reference in `fastloss.ops.reference` (what it computes; the fallback
when the extension is not built), fake kernels and autograd in `registrations`, and its
kernels in ``csrc/`` (``csrc/cpu/<op>_cpu.cpp``, ``csrc/cuda/<op>_cuda.cu``).
"""

from fastloss.ops.compiled import build_info, extension
from fastloss.ops.dispatch import (
    point_loss,
    pointwise_batch_norm,
    subspace_conv1d,
    subspace_conv2d,
    subspace_linear,
    synthesize,
)

if extension is not None:  # the compiled ops are registered: add fake kernels and autograd
    from fastloss.ops import registrations  # noqa: F401

__all__ = [
    "build_info",
    "point_loss",
    "pointwise_batch_norm",
    "subspace_conv1d",
    "subspace_conv2d",
    "subspace_linear",
    "synthesize",
]
