"""Parity at the shapes and dtypes that reach each CUDA kernel's code paths: 16-byte and scalar
loads, several and partial tiles, loops past the grid limits, tensor cores (bf16, fp16, TF32).
Every case also runs on the CPU kernels, which proves the case itself. Then: rows with a NaN
logit are never correct on any device, every kernel gives the same bits twice, and (CUDA
only) runs on the caller's stream.

`bench/gpu_session.sh` runs the CUDA cases first with ``pytest tests/ops -k cuda``: every
CUDA test here has ``cuda`` in its id.
"""

import pytest
import torch
import torch.nn.functional as F

from fastloss import ops
from fastloss.ops import reference
from fastloss.ops.compiled import extension
from fastloss.ops.testing import devices, kernel_calls, misaligned, tensor, tf32_matmul

f16, bf16, f32, f64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
CUDA = [d for d in devices if d.id == "cuda"]

# What each "mode" computes in: a dtype, and for "tf32" float32 with TF32 matmuls allowed.
DTYPE = {"float64": f64, "float32": f32, "tf32": f32, "float16": f16, "bfloat16": bf16}
# (norm, elementwise) bounds on out - ref, ref the float64 reference of the same inputs:
#     ||out - ref|| <= norm ||ref||  and  |out - ref| <= elementwise (|ref| + rms(ref)).
# Reduced precision rounds the synthesised weights (the input too under TF32) and the output,
# each to the unit roundoff u of the type (2^-8 bf16; 2^-11 fp16 and TF32, which keeps fp16's
# 10 mantissa bits). At these shapes the CPU kernels and a float64 emulation of the
# tensor-core roundings gave <= 0.6u in norm and <= 5.6u elementwise: the bounds are 2u and
# 16u, loose enough for another accumulation order, tight enough that one unwritten or wrongly
# tiled element (off by about rms(ref)) fails. float32 and float64 only accumulate rounded
# sums: float32 measured <= 1.5e-6 in norm and 2.3e-6 elementwise (batch norm gradients, sums
# of B·S·C products), float64 7e-16 and 5e-15.
TOLERANCES = {
    "float64": (1e-12, 1e-12),
    "float32": (1e-5, 1e-4),
    "tf32": (2 * 2**-11, 16 * 2**-11),
    "float16": (2 * 2**-11, 16 * 2**-11),
    "bfloat16": (2 * 2**-8, 16 * 2**-8),
}


def modes(device_params, with_tf32=True):
    """(device, mode) pairs; TF32 only on CUDA, where the flag selects a kernel."""
    out = []
    for d in device_params:
        for mode in DTYPE:
            if mode != "tf32" or (with_tf32 and d.id == "cuda"):
                out.append(pytest.param(d.values[0], mode, marks=d.marks, id=f"{d.id}-{mode}"))
    return out


@pytest.fixture(autouse=True)
def _compiled_kernels(request):
    """The kernels must be what runs, not the reference they are checked against."""
    callspec = getattr(request.node, "callspec", None)
    device = callspec.params.get("device") if callspec is not None else None
    if device is None:
        return
    if device.type == "cuda" and not ops.build_info()["cuda"]:
        pytest.fail("a GPU is visible but fastloss was built without CUDA kernels")
    if extension is None:
        pytest.skip("compiled extension not built")


def assert_near(out, ref, mode):
    norm, elementwise = TOLERANCES[mode]
    assert out.dtype == DTYPE[mode] and out.shape == ref.shape
    assert torch.isfinite(out).all()
    out, ref = out.cpu().double(), ref.cpu().double()
    err = (out - ref).abs()
    relative = float(err.norm() / ref.norm())
    assert relative <= norm, f"relative error {relative:.2e} > {norm:.1e}"
    worst = float((err / (ref.abs() + ref.square().mean().sqrt())).max())
    assert worst <= elementwise, f"worst element off by {worst:.2e} > {elementwise:.1e}"
    return relative


def _coords(K, J, dtype, device):
    # bf16/fp16 weights take float32 coordinates, as the engine passes them.
    return tensor(K, J, dtype=f64 if dtype == f64 else f32, device=device)


def _layout(t, layout):
    return misaligned(t) if layout == "misaligned" else t


# ---- subspace_linear (per-point x: the tiled SIMT and tensor-core kernels) ----------------

LINEAR_CASES = [
    # K, J, B, O, I, x layout
    # 3 x 3 tiles of 64 with partial edges (5 x 5 of 32 for the SIMT kernel, which takes 32 x
    # 32 tiles below two 64-tiles per SM); I % 8 == 0: 16-byte loads; I = 2 x 32 + 8 (and
    # 4 x 16 + 8): a partial last step of the I loop.
    pytest.param(3, 3, 130, 130, 72, "contiguous", id="tiles"),
    # The same with x one element off a 16-byte boundary: the scalar loads.
    pytest.param(3, 3, 130, 130, 72, "misaligned", id="misaligned-x"),
    # I % 4 != 0: the scalar loads by shape; a second 64-row tile with only 6 rows.
    pytest.param(2, 2, 70, 66, 19, "contiguous", id="odd-I"),
    # 576 tiles of 64, over two per SM on any GPU of up to 288 SMs: the SIMT 64 x 64 tiles.
    pytest.param(64, 2, 130, 130, 40, "contiguous", id="many-blocks"),
    # K > 65535 = the grid's z limit: each block loops over points. Tiny layers keep it small.
    pytest.param(70000, 2, 2, 3, 8, "contiguous", id="z-loop"),
]


def _linear_ref(x, weight, bias, coords):
    """reference.subspace_linear in float64, batched (its loop over K points is slow here)."""
    x, weight, bias, coords = (t.cpu().double() for t in (x, weight, bias, coords))
    w = reference.synthesize(weight, coords)
    b = reference.synthesize(bias, coords)
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


@pytest.mark.parametrize("device,mode", modes(devices))
@pytest.mark.parametrize("K,J,B,O,I,layout", LINEAR_CASES)
def test_subspace_linear_paths(device, mode, K, J, B, O, I, layout):
    dtype = DTYPE[mode]
    x = _layout(tensor(K, B, I, dtype=dtype, device=device), layout)
    weight = tensor(J, O, I, dtype=dtype, device=device)
    bias = tensor(J, O, dtype=dtype, device=device)
    coords = _coords(K, J, dtype, device)
    with tf32_matmul(mode == "tf32"):
        out = ops.subspace_linear(x, weight, bias, coords)
    relative = assert_near(out, _linear_ref(x, weight, bias, coords), mode)
    if mode == "tf32" and torch.cuda.get_device_capability(device) >= (8, 0):
        # Exact float32 is ~1e-7 off; TF32 rounding leaves ~3e-4 (measured by emulation).
        assert relative > 1e-5, "TF32 allowed on sm_80+, but the tensor-core kernel did not run"


def test_linear_reference_is_batched_reference():
    args = [tensor(*s, dtype=f64, device="cpu") for s in [(4, 3, 5), (2, 6, 5), (2, 6), (4, 2)]]
    torch.testing.assert_close(_linear_ref(*args), reference.subspace_linear(*args))


# ---- synthesize and combine (the contraction kernel) ---------------------------------------

SYNTHESIZE_CASES = [
    # K, J, basis shape after J, layout
    pytest.param(5, 3, (9, 8), "contiguous", id="vector"),  # 72: 8/4/2 elements per load
    pytest.param(5, 3, (73,), "contiguous", id="scalar"),  # 73: one element per load
    pytest.param(5, 3, (9, 8), "misaligned", id="misaligned"),  # off 16 bytes: one element
    # 2^21 + 3 points in groups of 4, 8 groups per block: more than 65535 blocks along y.
    pytest.param(2**21 + 3, 2, (3,), "contiguous", id="y-loop"),
]


@pytest.mark.parametrize("device,mode", modes(devices, with_tf32=False))
@pytest.mark.parametrize("K,J,shape,layout", SYNTHESIZE_CASES)
def test_synthesize_paths(device, mode, K, J, shape, layout):
    dtype = DTYPE[mode]
    basis = _layout(tensor(J, *shape, dtype=dtype, device=device), layout)
    coords = _coords(K, J, dtype, device)
    out = torch.ops.fastloss.synthesize(basis, coords)
    assert_near(out, reference.synthesize(basis.cpu().double(), coords.cpu().double()), mode)


COMBINE_CASES = [
    # K, parts [B, G, J, C, S], layout
    pytest.param(6, (2, 2, 3, 4, 18), "contiguous", id="vector"),  # C·S = 72
    pytest.param(6, (2, 2, 3, 5, 3), "contiguous", id="scalar"),  # C·S = 15
    pytest.param(6, (2, 2, 3, 4, 18), "misaligned", id="misaligned"),
    # 32 rows x 17500 groups of 4 points, 8 per block: more than 65535 blocks along y.
    pytest.param(70000, (32, 1, 2, 1, 1), "contiguous", id="y-loop"),
]


@pytest.mark.parametrize("device,mode", modes(devices, with_tf32=False))
@pytest.mark.parametrize("K,shape,layout", COMBINE_CASES)
def test_combine_paths(device, mode, K, shape, layout):
    dtype = DTYPE[mode]
    B, G, J, C, S = shape
    parts = _layout(tensor(*shape, dtype=dtype, device=device), layout)
    bias = tensor(J, G, C, dtype=dtype, device=device)
    coords = _coords(K, J, dtype, device)
    out = torch.ops.fastloss.combine(parts, coords, bias)
    p, b, c = (t.cpu().double() for t in (parts, bias, coords))
    want = torch.einsum("kj,bgjcs->kbgcs", c, p + b.permute(1, 0, 2)[None, ..., None])
    assert_near(out, want, mode)


# ---- pointwise_batch_norm -------------------------------------------------------------------

BATCH_NORM_CASES = [
    # K, B, C, spatial
    # S = 1: the rows kernel (one block per point and 32 channels) once it has two blocks per
    # SM: 600 blocks here, for any GPU of up to 300 SMs; 32 + 8 channels (a partial tile).
    pytest.param(300, 100, 40, (), id="rows"),
    # S = 1 with only 6 such blocks: a block per (point, channel); 700 > 256 rows per thread.
    pytest.param(3, 700, 40, (), id="rows-few-points"),
    pytest.param(2, 5, 4, (16, 16), id="maps-16x16"),  # S = 256 > 32 lanes: a loop along S
    pytest.param(2, 3, 3, (7, 7), id="maps-7x7"),  # S = 49: a partial pass of the lanes
    # K·C > 2^20 blocks: blocks loop. B = 8 keeps every point's variance far above eps (with
    # B = 2, some of 2^20 pairs are nearly equal and their normalisation ill-conditioned).
    pytest.param(2**20 + 3, 8, 1, (), id="grid-loop"),
]


def _batch_norm_ref(x, mean, var, weight, bias, coords, training):
    """reference.pointwise_batch_norm in float64, with the K points folded into the channels
    of one F.batch_norm (its loop over K points is slow here); returns y, mean, var."""
    x, weight, bias, coords = (t.cpu().double() for t in (x, weight, bias, coords))
    K, B, C = x.shape[:3]
    mean, var = (t.cpu().double().reshape(-1).clone() for t in (mean, var))
    folded = x.transpose(0, 1).reshape(B, K * C, -1)
    gamma, beta = (reference.synthesize(p, coords).reshape(-1) for p in (weight, bias))
    y = F.batch_norm(folded, mean, var, gamma, beta, training, 0.1, 1e-5)
    return y.view(B, K, *x.shape[2:]).transpose(0, 1), mean.view(K, C), var.view(K, C)


def _batch_norm_inputs(K, B, C, spatial, dtype, device):
    x = tensor(K, B, C, *spatial, dtype=dtype, device=device) * 3 + 1
    stats = f64 if dtype == f64 else f32
    mean = tensor(K, C, dtype=stats, device=device)
    var = tensor(K, C, dtype=stats, device=device).abs() + 0.5
    J = 2
    weight, bias = (tensor(J, C, dtype=dtype, device=device) for _ in range(2))
    return x, mean, var, weight, bias, _coords(K, J, dtype, device)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_reference_is_the_reference(training):
    x, mean, var, weight, bias, coords = _batch_norm_inputs(3, 6, 4, (2, 3), f64, "cpu")
    want_mean, want_var = mean.clone(), var.clone()
    want = reference.pointwise_batch_norm(
        x, want_mean, want_var, weight, bias, coords, training, 0.1, 1e-5
    )
    got, got_mean, got_var = _batch_norm_ref(x, mean, var, weight, bias, coords, training)
    for a, b in ((got, want), (got_mean, want_mean), (got_var, want_var)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device,mode", modes(devices, with_tf32=False))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("K,B,C,spatial", BATCH_NORM_CASES)
def test_pointwise_batch_norm_paths(device, mode, training, K, B, C, spatial):
    x, mean, var, weight, bias, coords = _batch_norm_inputs(K, B, C, spatial, DTYPE[mode], device)
    want, want_mean, want_var = _batch_norm_ref(x, mean, var, weight, bias, coords, training)
    out = ops.pointwise_batch_norm(x, mean, var, weight, bias, coords, training, 0.1, 1e-5)
    assert_near(out, want, mode)
    # The running statistics come from save_mean / save_invstd: float32 for reduced x.
    stats_mode = "float64" if mode == "float64" else "float32"
    assert_near(mean, want_mean, stats_mode)
    assert_near(var, want_var, stats_mode)


@pytest.mark.parametrize("device,mode", modes(devices, with_tf32=False))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("K,B,C,spatial", BATCH_NORM_CASES[:4])
def test_pointwise_batch_norm_backward_paths(device, mode, training, K, B, C, spatial):
    x, mean, var, weight, bias, coords = _batch_norm_inputs(K, B, C, spatial, DTYPE[mode], device)
    grad = tensor(*x.shape, dtype=DTYPE[mode], device=device)
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias, coords)]
    out = ops.pointwise_batch_norm(leaves[0], mean, var, *leaves[1:], training, 0.1, 1e-5)
    got = torch.autograd.grad(out, leaves, grad)
    ref_leaves = [t.detach().cpu().double().requires_grad_() for t in (x, weight, bias, coords)]
    want_out, _, _ = _batch_norm_ref(ref_leaves[0], mean, var, *ref_leaves[1:], training)
    want = torch.autograd.grad(want_out, ref_leaves, grad.cpu().double())
    for name, g, w, leaf in zip(("x", "weight", "bias", "coords"), got, want, leaves, strict=True):
        # Each gradient has its input's dtype (float32 coordinates beside reduced weights).
        leaf_mode = mode if leaf.dtype == DTYPE[mode] else "float32"
        assert g.dtype == leaf.dtype, name
        assert_near(g, w, leaf_mode)


# ---- point_loss -------------------------------------------------------------------------------

POINT_LOSS_CASES = [
    # K, B, C: the lanes per row are the power of two >= C between 4 and 32.
    pytest.param(3, 130, 3, id="C3-4lanes"),
    pytest.param(3, 130, 7, id="C7-8lanes"),
    pytest.param(2, 70, 10, id="C10-16lanes"),
    pytest.param(2, 70, 100, id="C100-32lanes"),  # 4 classes per lane
    pytest.param(2**20 + 5, 1, 3, id="grid-loop"),  # the per-point sums loop past 2^20 blocks
]


def _loss_tolerance(dtype):
    # Logits are exact inputs; the math is float32 (float64 for float64), sums over B <= 130.
    return 1e-10 if dtype == f64 else 1e-5


@pytest.mark.parametrize("device,mode", modes(devices, with_tf32=False))
@pytest.mark.parametrize("K,B,C", POINT_LOSS_CASES)
def test_point_loss_paths(device, mode, K, B, C):
    dtype = DTYPE[mode]
    logits = (tensor(K, B, C, dtype=f32, device=device) * 4).to(dtype)
    target = torch.randint(0, C, (B,), device=device)
    loss, correct = ops.point_loss(logits, target)
    ref_loss, ref_correct = reference.point_loss(logits.cpu().double(), target.cpu())
    assert loss.dtype == (f64 if dtype == f64 else f32)
    assert torch.equal(correct.cpu(), ref_correct)
    tol = _loss_tolerance(dtype)
    torch.testing.assert_close(loss.cpu().double(), ref_loss, rtol=tol, atol=tol * B)


@pytest.mark.parametrize("device,mode", modes(devices, with_tf32=False))
@pytest.mark.parametrize("C", [3, 7, 10, 100])
def test_point_loss_nan_rows(device, mode, C):
    # A row with a NaN is never correct and makes its point's loss NaN, on every device: the
    # CPU kernel's rule. torch.argmax points at the (first) NaN, so rows with a NaN at their
    # target would count as hits under plain argmax.
    K, B = 4, 40
    logits = (tensor(K, B, C, dtype=f32, device="cpu") * 4).to(DTYPE[mode])
    target = torch.randint(0, C, (B,))
    target[1::4] = 0
    nan = float("nan")
    for b in range(0, B, 2):  # point 1: NaN at the target (a plain-argmax hit)
        logits[1, b, target[b]] = nan
    logits[1, 1::4] = nan  # whole rows of NaN: argmax 0, the target
    logits[1, 3::4, (target[3::4] + 1) % C] = nan  # NaN beside the target
    logits[2, 5, target[5]] = nan  # point 2: one NaN row, the others clean
    logits[3, :, 0] = nan  # point 3: every row NaN at class 0
    plain_hits = (logits.argmax(-1) == target).sum(1)
    clean = ~logits.isnan().any(-1)
    want_correct = ((logits.argmax(-1) == target) & clean).sum(1)
    assert not torch.equal(plain_hits, want_correct)  # the case tells the two rules apart
    assert torch.equal(reference.point_loss(logits.double(), target)[1], want_correct)

    loss, correct = ops.point_loss(logits.to(device), target.to(device))
    assert torch.equal(correct.cpu(), want_correct)
    assert torch.equal(loss.isnan().cpu(), torch.tensor([False, True, True, True]))
    cpu_loss, cpu_correct = ops.point_loss(logits, target)
    assert torch.equal(correct.cpu(), cpu_correct)
    tol = _loss_tolerance(DTYPE[mode])
    torch.testing.assert_close(loss[0].cpu(), cpu_loss[0], rtol=tol, atol=tol * B)


# ---- every kernel: bitwise repeatable, and on the caller's stream -------------------------------

CALLS = list(kernel_calls(torch.device("cpu")))


def _late_copy(t):
    """A NaN-filled stand-in for input t, misaligned as t is."""
    fill = torch.full_like(t, float("nan"))
    return misaligned(fill) if t.data_ptr() % 16 else fill


def _outputs(result):
    return result if isinstance(result, tuple | list) else (result,)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("name", CALLS)
def test_bitwise_repeatable(device, name):
    # Fixed-order reductions, no float atomics (csrc/cuda/cuda_utils.cuh): the same call twice
    # gives the same bits.
    fn, inputs = kernel_calls(device)[name]
    first, second = _outputs(fn(*inputs)), _outputs(fn(*inputs))
    assert len(first) == len(second) > 0
    for a, b in zip(first, second, strict=True):
        assert a.numel() > 0 and torch.equal(a, b)


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("name", CALLS)
def test_cuda_side_stream(device, name):
    # Kernels run on the caller's current stream. On a side stream, the inputs are written
    # only after a ~50 ms busy wait; a kernel launched on another stream would read them too
    # early (NaN from the fill) and disagree with the default-stream result.
    fn, inputs = kernel_calls(device)[name]
    want = _outputs(fn(*inputs))
    torch.cuda.synchronize(device)
    stream = torch.cuda.Stream(device)
    with torch.cuda.stream(stream):
        late = [_late_copy(t) if t.is_floating_point() else t for t in inputs]
        torch.cuda._sleep(100_000_000)
        for copy, t in zip(late, inputs, strict=True):
            if copy is not t:
                copy.copy_(t)
        got = _outputs(fn(*late))
    stream.synchronize()
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
