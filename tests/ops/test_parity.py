"""Compiled ops against the PyTorch references, on every available device."""

import pytest
import torch

from fastloss import ops
from fastloss.ops import reference
from fastloss.ops.testing import devices, dtypes, tensor, tolerances


def _ref_inputs(*tensors):
    return [None if t is None else t.to(torch.float64) for t in tensors]


def assert_matches(out, ref, dtype):
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    out, ref = out.to(torch.float64), ref.to(torch.float64)
    if dtype in (torch.bfloat16, torch.float16):
        relative = (out - ref).norm() / ref.norm().clamp_min(1e-12)
        assert relative < 1e-2, f"relative error {relative:.2e}"
    else:
        rtol, atol = tolerances[dtype]
        torch.testing.assert_close(out, ref, rtol=rtol, atol=atol)


def _coords(K, J, dtype, device):
    # Coordinates stay float32 for bf16 weights, as the engine passes them.
    return tensor(K, J, dtype=torch.float32 if dtype == torch.bfloat16 else dtype, device=device)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", dtypes)
@pytest.mark.parametrize("K,J,B", [(1, 1, 1), (1, 3, 5), (4, 1, 5), (4, 3, 1), (6, 8, 9)])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_subspace_linear(device, dtype, K, J, B, shared, with_bias):
    I, O = 19, 23
    x = (
        tensor(B, I, dtype=dtype, device=device)
        if shared
        else tensor(K, B, I, dtype=dtype, device=device)
    )
    weight = tensor(J, O, I, dtype=dtype, device=device)
    bias = tensor(J, O, dtype=dtype, device=device) if with_bias else None
    coords = _coords(K, J, dtype, device)
    out = ops.subspace_linear(x, weight, bias, coords)
    assert out.shape == (K, B, O)
    assert_matches(out, reference.subspace_linear(*_ref_inputs(x, weight, bias, coords)), dtype)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("shared", [True, False])
def test_subspace_linear_noncontiguous(device, shared):
    K, J, B, I, O = 3, 2, 6, 10, 7
    dtype = torch.float32
    big = tensor(K, I, 2 * B, dtype=dtype, device=device)
    x = big[0, :, ::2].t() if shared else big[:, :, ::2].transpose(1, 2)
    weight = tensor(J, I, O, dtype=dtype, device=device).transpose(1, 2)
    coords = tensor(J, K, dtype=dtype, device=device).t()
    bias = tensor(O, J, dtype=dtype, device=device).t()
    assert not (x.is_contiguous() or weight.is_contiguous() or coords.is_contiguous())
    out = ops.subspace_linear(x, weight, bias, coords)
    assert_matches(out, reference.subspace_linear(*_ref_inputs(x, weight, bias, coords)), dtype)


CONV_CASES = [
    # spatial, Ci, Co, kernel, stride, padding, dilation, groups
    (2, 3, 4, 3, 1, 0, 1, 1),
    (2, 4, 6, 3, 2, 1, 1, 2),
    (2, 4, 4, 3, 1, 2, 2, 4),
    (2, 2, 5, 1, 1, 0, 1, 1),
    (1, 3, 6, 5, 2, 2, 1, 3),
    (1, 4, 2, 3, 1, 1, 2, 1),
]


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", dtypes)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize(
    "shared,with_bias,K,J",
    [(True, True, 4, 3), (False, True, 3, 2), (True, False, 1, 1), (False, False, 2, 5)],
)
def test_subspace_conv(device, dtype, case, shared, with_bias, K, J):
    spatial, Ci, Co, k, stride, padding, dilation, groups = case
    B, size = 2, [9, 8][:spatial]
    x_shape = (B, Ci, *size) if shared else (K, B, Ci, *size)
    x = tensor(*x_shape, dtype=dtype, device=device)
    weight = tensor(J, Co, Ci // groups, *([k] * spatial), dtype=dtype, device=device)
    bias = tensor(J, Co, dtype=dtype, device=device) if with_bias else None
    coords = _coords(K, J, dtype, device)
    conv = ops.subspace_conv2d if spatial == 2 else ops.subspace_conv1d
    out = conv(x, weight, bias, coords, stride, padding, dilation, groups)
    ref = reference.subspace_conv(
        *_ref_inputs(x, weight, bias, coords),
        [stride] * spatial,
        [padding] * spatial,
        [dilation] * spatial,
        groups,
    )
    assert out.shape == ref.shape
    assert_matches(out, ref, dtype)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("path", ["grouped", "loop"])
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_subspace_conv_per_point_paths(device, path, case, dtype, monkeypatch):
    """Both per-point paths on every device (``$FASTLOSS_CONV_PER_POINT``): one grouped
    convolution over the points (the GPU's default) and one convolution per point (the
    CPU's), on contiguous and channels-last inputs, with and without bias."""
    monkeypatch.setenv("FASTLOSS_CONV_PER_POINT", path)
    spatial, Ci, Co, k, stride, padding, dilation, groups = case
    K, J, B, size = 5, 3, 3, [9, 8][:spatial]
    conv = ops.subspace_conv2d if spatial == 2 else ops.subspace_conv1d
    weight = tensor(J, Co, Ci // groups, *([k] * spatial), dtype=dtype, device=device)
    coords = _coords(K, J, dtype, device)
    x = tensor(K, B, Ci, *size, dtype=dtype, device=device)
    if spatial == 2:  # as the layers before hand it on: channels-last per point
        x = x.view(K * B, Ci, *size).to(memory_format=torch.channels_last).view(x.shape)
    for bias in (tensor(J, Co, dtype=dtype, device=device), None):
        out = conv(x, weight, bias, coords, stride, padding, dilation, groups)
        ref = reference.subspace_conv(
            *_ref_inputs(x, weight, bias, coords),
            [stride] * spatial,
            [padding] * spatial,
            [dilation] * spatial,
            groups,
        )
        assert out.shape == ref.shape
        assert_matches(out, ref, dtype)


def test_an_unknown_per_point_conv_path_is_refused(monkeypatch):
    monkeypatch.setenv("FASTLOSS_CONV_PER_POINT", "fast")
    like = dict(dtype=torch.float32, device="cpu")
    x, weight = tensor(2, 1, 3, 5, 5, **like), tensor(1, 4, 3, 3, 3, **like)
    with pytest.raises(RuntimeError, match="must be auto, grouped or loop"):
        ops.subspace_conv2d(x, weight, None, torch.ones(2, 1))


@pytest.mark.parametrize("device", devices)
def test_subspace_conv_noncontiguous_channels_last(device):
    K, J, B = 3, 2, 4
    x = tensor(K * B, 3, 7, 7, dtype=torch.float32, device=device)
    x = x.to(memory_format=torch.channels_last).view(K, B, 3, 7, 7)
    weight = tensor(J, 5, 3, 3, 3, dtype=torch.float32, device=device).transpose(3, 4)
    coords = tensor(K, J, dtype=torch.float32, device=device)
    out = ops.subspace_conv2d(x, weight, None, coords, padding=1)
    ref = reference.subspace_conv(*_ref_inputs(x, weight, None, coords), [1, 1], [1, 1], [1, 1], 1)
    assert_matches(out, ref, torch.float32)


def test_subspace_conv1d_cpu_output_is_channels_last():
    # On the CPU a 1D convolution runs as a 2D one of height 1 in channels-last layout: its
    # output is [K, B, Co, L] laid out [K, B, L, Co], and the next convolution reads that
    # layout as it is. Both must still match the reference.
    K, J, B = 3, 2, 4
    x = tensor(B, 3, 11, dtype=torch.float32, device="cpu")
    w1 = tensor(J, 6, 3, 3, dtype=torch.float32, device="cpu")
    w2 = tensor(J, 5, 6, 3, dtype=torch.float32, device="cpu")
    b1 = tensor(J, 6, dtype=torch.float32, device="cpu")
    coords = _coords(K, J, torch.float32, "cpu")
    h = ops.subspace_conv1d(x, w1, b1, coords, padding=1)
    assert h.permute(0, 1, 3, 2).is_contiguous() and not h.is_contiguous()
    ref_h = reference.subspace_conv(x, w1, b1, coords, [1], [1], [1], 1)
    assert_matches(h, ref_h, torch.float32)
    out = ops.subspace_conv1d(h, w2, None, coords, stride=2)
    assert_matches(
        out, reference.subspace_conv(ref_h, w2, None, coords, [2], [0], [1], 1), torch.float32
    )


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", dtypes)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("spatial", [0, 2])
def test_pointwise_batch_norm(device, dtype, training, affine, spatial):
    K, J, B, C = 3, 2, 6, 5
    x = tensor(K, B, C, *([4] * spatial), dtype=dtype, device=device) * 3 + 1
    stats_dtype = torch.float32 if dtype == torch.bfloat16 else dtype
    mean = tensor(K, C, dtype=stats_dtype, device=device)
    var = tensor(K, C, dtype=stats_dtype, device=device).abs() + 0.5
    weight = tensor(J, C, dtype=dtype, device=device) if affine else None
    bias = tensor(J, C, dtype=dtype, device=device) if affine else None
    coords = _coords(K, J, dtype, device)
    ref_mean, ref_var = mean.double(), var.double()
    out = ops.pointwise_batch_norm(x, mean, var, weight, bias, coords, training, 0.1, 1e-5)
    ref = reference.pointwise_batch_norm(
        *_ref_inputs(x, ref_mean, ref_var, weight, bias, coords), training, 0.1, 1e-5
    )
    assert_matches(out, ref, dtype)
    # Running statistics: updated in training, untouched in eval.
    assert_matches(mean, ref_mean, stats_dtype)
    assert_matches(var, ref_var, stats_dtype)


@pytest.mark.parametrize("device", devices)
def test_pointwise_batch_norm_cumulative_average(device):
    K, J, B, C = 2, 2, 8, 3
    coords = tensor(K, J, dtype=torch.float32, device=device)
    stats = [
        torch.zeros(K, C, device=device),
        torch.ones(K, C, device=device),
        torch.zeros((), dtype=torch.long, device=device),
    ]
    ref_stats = [t.clone() for t in stats]
    for _ in range(3):
        x = tensor(K, B, C, dtype=torch.float32, device=device)
        ops.pointwise_batch_norm(
            x, stats[0], stats[1], None, None, coords, True, None, 1e-5, stats[2]
        )
        reference.pointwise_batch_norm(
            x, ref_stats[0], ref_stats[1], None, None, coords, True, None, 1e-5, ref_stats[2]
        )
    for got, want in zip(stats, ref_stats, strict=True):
        torch.testing.assert_close(got, want)
    assert int(stats[2]) == 3


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", dtypes)
@pytest.mark.parametrize("K,B,C", [(1, 1, 2), (3, 17, 10), (2, 5, 1000)])
def test_point_loss(device, dtype, K, B, C):
    logits = (tensor(K, B, C, dtype=torch.float32, device=device) * 4).to(dtype)
    target = torch.randint(0, C, (B,), device=device)
    loss, correct = ops.point_loss(logits, target)
    ref_loss, ref_correct = reference.point_loss(logits.double(), target)
    assert correct.dtype == torch.int64 and correct.shape == (K,)
    assert torch.equal(correct, ref_correct)
    rtol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(loss.double(), ref_loss, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("device", devices)
def test_point_loss_nan_logits(device):
    logits = tensor(2, 3, 4, dtype=torch.float32, device=device)
    logits[1, 0, 2] = float("nan")
    loss, correct = ops.point_loss(logits, torch.tensor([0, 1, 2], device=device))
    assert torch.isfinite(loss[0]) and torch.isnan(loss[1])


@pytest.mark.parametrize("device", devices)
def test_synthesize_and_combine(device):
    # The building blocks against their definitions, float32 coords with bf16 basis included.
    for dtype in dtypes:
        basis = tensor(3, 4, 5, dtype=dtype, device=device)
        coords = _coords(6, 3, dtype, device)
        out = torch.ops.fastloss.synthesize(basis, coords)
        assert_matches(out, reference.synthesize(basis.double(), coords.double()), dtype)
        parts = tensor(2, 2, 3, 4, 5, dtype=dtype, device=device)
        bias = tensor(3, 2, 4, dtype=dtype, device=device)
        got = torch.ops.fastloss.combine(parts, coords, bias)
        want = torch.einsum(
            "kj,bgjcs->kbgcs",
            coords.double(),
            parts.double() + bias.double().permute(1, 0, 2)[None, ..., None],
        )
        assert_matches(got, want, dtype)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("spatial", [1, 2])
def test_pointwise_batch_norm_channels_last_per_point(device, spatial):
    # On the CPU subspace_conv2d hands BN a [K, B, C, H, W] laid out [K, B, H, W, C], and
    # subspace_conv1d a [K, B, C, L] laid out [K, B, L, C].
    K, J, B, C = 3, 2, 4, 5
    size = [6, 7][:spatial]
    x = tensor(K, B, *size, C, dtype=torch.float64, device=device)
    x = x.permute(0, 1, spatial + 2, *range(2, spatial + 2))
    assert not x.is_contiguous()
    weight, bias = (tensor(J, C, dtype=torch.float64, device=device) for _ in range(2))
    coords = tensor(K, J, dtype=torch.float64, device=device)
    stats = [torch.zeros(K, C, dtype=torch.float64, device=device) for _ in range(2)]
    ref_stats = [s.clone() for s in stats]
    out = ops.pointwise_batch_norm(x, *stats, weight, bias, coords, True)
    ref = reference.pointwise_batch_norm(x, *ref_stats, weight, bias, coords, True, 0.1, 1e-5)
    assert_matches(out, ref, torch.float64)
    for got, want in zip(stats, ref_stats, strict=True):
        assert_matches(got, want, torch.float64)


@pytest.mark.parametrize("device", devices)
def test_pointwise_batch_norm_statistics_with_a_large_mean(device):
    # One pass over rows (channels-last, many rows): sums are taken relative to a pivot, so
    # a mean far above the spread keeps the variance accurate in float32.
    K, J, B, C = 2, 2, 700, 3
    x = (1000.0 + 0.01 * torch.randn(K, B, C, 1, 1)).to(device)
    coords = torch.tensor([[1.0, 0.0], [0.5, 0.5]], device=device)
    weight = torch.ones(J, C, device=device)
    bias = torch.zeros(J, C, device=device)
    stats = [torch.zeros(K, C, device=device), torch.ones(K, C, device=device)]
    y = ops.pointwise_batch_norm(
        x,
        *stats,
        weight,
        bias,
        coords,
        True,
        None,
        0.0,
        torch.zeros((), dtype=torch.long, device=device),
    )
    x64 = x.double().squeeze(-1).squeeze(-1)
    want_var = x64.var(1)  # the running variance is unbiased
    torch.testing.assert_close(stats[1].double(), want_var, rtol=2e-3, atol=0)
    torch.testing.assert_close(stats[0].double(), x64.mean(1), rtol=1e-6, atol=0)
    # Normalised output: zero mean per channel, to the float32 resolution of x (6e-5 at
    # 1000, 0.6% of its spread).
    torch.testing.assert_close(
        y.double().mean((1, 3, 4)),
        torch.zeros(K, C, dtype=torch.float64, device=device),
        rtol=0,
        atol=1e-2,
    )
