"""Devices, tolerances and inputs shared by the tests (pytorch_scatter's testing.py habit)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

devices: list[Any]
try:  # pytest is only needed by the tests; the CUDA entry shows as skipped without a GPU.
    import pytest

    devices = [
        pytest.param(torch.device("cpu"), id="cpu"),
        pytest.param(
            torch.device("cuda"),
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU visible"),
            id="cuda",
        ),
    ]
except ImportError:
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])

dtypes = [torch.float32, torch.float64, torch.bfloat16]

# (rtol, atol) against the reference evaluated in float64.
tolerances = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-4, 1e-4),
    torch.bfloat16: (3e-2, 3e-2),
    torch.float16: (5e-3, 5e-3),
}


def tensor(*shape: int, dtype: torch.dtype, device: torch.device, generator=None) -> torch.Tensor:
    """Random normal data, never zeros (zeros hide unwritten outputs)."""
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(
        dtype=dtype, device=device
    )


@contextmanager
def tf32_matmul(allowed: bool) -> Iterator[None]:
    """``torch.backends.cuda.matmul.allow_tf32`` set to `allowed` inside the block: on CUDA,
    float32 `subspace_linear` takes the tensor-core (TF32) kernel only when it is allowed."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def misaligned(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of `t` that starts one element past a 16-byte boundary, so kernels
    that load 16 bytes at a time must take their scalar path."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    out = buf[1:].view(t.shape).copy_(t)
    if out.data_ptr() % 16 == 0:  # allocations are 16-byte aligned, elements are 2-8 bytes
        raise AssertionError("misaligned: the copy is 16-byte aligned")
    return out


# A compiled op and its inputs; calling one runs one kernel (variant) on the device.
KernelCall = tuple[Callable[..., Any], tuple[torch.Tensor, ...]]


def kernel_calls(device: torch.device) -> dict[str, KernelCall]:
    """One call per kernel variant of the compiled ops, on inputs small enough for
    compute-sanitizer yet spanning several blocks, partial tiles and partial vectors.

    Used by the repeatability and stream tests (tests/ops/test_kernel_paths.py) and by
    bench/sanitize_kernels.py. They call ``torch.ops.fastloss`` directly, so a device without
    compiled kernels fails instead of running the reference.
    """
    g = torch.Generator().manual_seed(0)
    f32, bf16 = torch.float32, torch.bfloat16
    fl = torch.ops.fastloss

    def t(*shape: int, dtype: torch.dtype = f32) -> torch.Tensor:
        return tensor(*shape, dtype=dtype, device=device, generator=g)

    def linear(allow_tf32: bool) -> Callable[..., Any]:
        def call(x, weight, bias, coords):
            with tf32_matmul(allow_tf32):
                return fl.subspace_linear(x, weight, bias, coords)

        return call

    def batch_norm(x, weight, bias, coords):
        return fl.pointwise_batch_norm(x, None, None, weight, bias, coords, True, 1e-5)

    def batch_norm_backward(grad, x, weight, bias, coords):
        # grad_x alone: the kernel still forms the per-channel sums (training needs them);
        # the other gradients are cuBLAS products of those sums, not fastloss kernels.
        _, mean, invstd = batch_norm(x, weight, bias, coords)
        mask = [True, False, False, False]
        return fl.pointwise_batch_norm_backward(
            grad, x, mean, invstd, weight, bias, coords, True, mask
        )[0]

    # K = 3 points, J = 2 basis points; B = 70 and O = 66 make 2 x 2 linear tiles of 64 (3 x 3
    # of 32 for the SIMT kernel on so few blocks) with partial edges, I = 40 a full and a
    # partial step of the I loop. 150 points make 600 tiles of 64, enough for the SIMT
    # kernel's 64 x 64 tiles on any GPU of up to 300 SMs.
    K, J, B, O, I = 3, 2, 70, 66, 40

    def linear_args(
        dtype: torch.dtype, inputs: int = I, x_aligned: bool = True, points: int = K
    ) -> tuple[torch.Tensor, ...]:
        x = t(points, B, inputs, dtype=dtype)
        return (
            x if x_aligned else misaligned(x),
            t(J, O, inputs, dtype=dtype),
            t(J, O, dtype=dtype),
            t(points, J, dtype=torch.float64 if dtype == torch.float64 else f32),
        )

    # [K, B, C] with 40 channels: 600 blocks of 32 channels for the rows kernels, which take
    # over from a block per (k, c) slice at two blocks per SM; 3 points stay below that.
    rows, few_rows = t(300, 20, 40), t(K, B, 40)
    maps = t(K, 5, 4, 6, 6)  # [K, B, C, H, W]
    loss_target = torch.randint(0, 3, (B,), generator=g).to(device)
    wide_target = torch.randint(0, 100, (B,), generator=g).to(device)
    return {
        "synthesize-vector": (fl.synthesize, (t(J, 9, 8), t(K, J))),
        "synthesize-scalar": (fl.synthesize, (misaligned(t(J, 73, dtype=bf16)), t(K, J))),
        "combine": (fl.combine, (t(2, 2, J, 4, 18), t(5, J), t(J, 2, 4))),
        "linear-float32-simt": (linear(False), linear_args(f32)),
        "linear-float32-simt-64": (linear(False), linear_args(f32, points=150)),
        "linear-float64-simt": (linear(False), linear_args(torch.float64)),
        "linear-tf32-mma": (linear(True), linear_args(f32)),
        "linear-bfloat16-mma": (linear(False), linear_args(bf16)),
        "linear-float16-mma-scalar": (linear(False), linear_args(torch.float16, inputs=19)),
        "linear-bfloat16-mma-misaligned": (linear(False), linear_args(bf16, x_aligned=False)),
        "batch_norm-rows": (batch_norm, (rows, t(J, 40), t(J, 40), t(300, J))),
        "batch_norm-rows-few-points": (batch_norm, (few_rows, t(J, 40), t(J, 40), t(K, J))),
        "batch_norm-maps": (batch_norm, (maps, t(J, 4), t(J, 4), t(K, J))),
        "batch_norm_backward-rows": (
            batch_norm_backward,
            (t(*rows.shape), rows, t(J, 40), t(J, 40), t(300, J)),
        ),
        "batch_norm_backward-rows-few-points": (
            batch_norm_backward,
            (t(*few_rows.shape), few_rows, t(J, 40), t(J, 40), t(K, J)),
        ),
        "batch_norm_backward-maps": (
            batch_norm_backward,
            (t(*maps.shape), maps, t(J, 4), t(J, 4), t(K, J)),
        ),
        "point_loss-narrow": (fl.point_loss, (t(K, B, 3), loss_target)),
        "point_loss-wide": (fl.point_loss, (t(K, B, 100, dtype=bf16), wide_target)),
    }
