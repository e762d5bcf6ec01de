"""Gradients (gradcheck in float64), torch.library.opcheck and torch.compile."""

import pytest
import torch

from fastloss import ops
from fastloss.ops import reference
from fastloss.ops.compiled import extension
from fastloss.ops.testing import devices, tensor

needs_extension = pytest.mark.skipif(extension is None, reason="compiled extension not built")
f64 = torch.float64


def _leaf(*shape, device):
    return tensor(*shape, dtype=f64, device=device).requires_grad_()


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_subspace_linear_gradcheck(device, shared, with_bias):
    K, J, B, I, O = 3, 2, 4, 5, 6
    x = _leaf(B, I, device=device) if shared else _leaf(K, B, I, device=device)
    args = (
        x,
        _leaf(J, O, I, device=device),
        _leaf(J, O, device=device) if with_bias else None,
        _leaf(K, J, device=device),
    )
    assert torch.autograd.gradcheck(ops.subspace_linear, args)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize(
    "spatial,groups,stride,padding,dilation", [(2, 1, 1, 1, 1), (2, 2, 2, 0, 1), (1, 2, 1, 2, 2)]
)
@pytest.mark.parametrize("path", ["auto", "grouped"])  # the per-point forward's two paths
def test_subspace_conv_gradcheck(
    device, shared, spatial, groups, stride, padding, dilation, path, monkeypatch
):
    monkeypatch.setenv("FASTLOSS_CONV_PER_POINT", path)
    K, J, B, Ci, Co = 2, 3, 2, 4, 4
    size = [6, 5][:spatial]
    x = _leaf(B, Ci, *size, device=device) if shared else _leaf(K, B, Ci, *size, device=device)
    weight = _leaf(J, Co, Ci // groups, *([3] * spatial), device=device)
    conv = ops.subspace_conv2d if spatial == 2 else ops.subspace_conv1d

    def f(x, w, b, c):
        return conv(x, w, b, c, stride, padding, dilation, groups)

    args = (x, weight, _leaf(J, Co, device=device), _leaf(K, J, device=device))
    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("spatial", [(2, 2), ()], ids=["2d", "1d"])
def test_pointwise_batch_norm_gradcheck(device, training, spatial):
    K, J, B, C = 2, 3, 4, 3
    mean, var = (
        tensor(K, C, dtype=f64, device=device),
        tensor(K, C, dtype=f64, device=device).abs() + 0.5,
    )

    def f(x, w, b, c):
        return ops.pointwise_batch_norm(x, mean, var, w, b, c, training, 0.1, 1e-5)

    args = (
        _leaf(K, B, C, *spatial, device=device),
        _leaf(J, C, device=device),
        _leaf(J, C, device=device),
        _leaf(K, J, device=device),
    )
    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("device", devices)
def test_point_loss_gradcheck(device):
    target = torch.tensor([0, 3, 1, 3], device=device)
    logits = _leaf(3, 4, 5, device=device)
    assert torch.autograd.gradcheck(lambda z: ops.point_loss(z, target)[0], (logits,))


@pytest.mark.parametrize("device", devices)
def test_synthesize_gradcheck(device):
    args = (_leaf(3, 4, 2, device=device), _leaf(5, 3, device=device))
    assert torch.autograd.gradcheck(torch.ops.fastloss.synthesize, args)


@pytest.mark.parametrize("device", devices)
def test_coords_grad_only_when_required(device):
    # Gradients flow to exactly the inputs that require them (the mask reaches the kernel).
    x = _leaf(3, 4, 5, device=device)
    weight = tensor(2, 6, 5, dtype=f64, device=device)
    coords = tensor(3, 2, dtype=f64, device=device)
    ops.subspace_linear(x, weight, None, coords).sum().backward()
    assert x.grad is not None and weight.grad is None and coords.grad is None
    coords.requires_grad_()
    out = ops.subspace_linear(x.detach(), weight, None, coords)
    (grad,) = torch.autograd.grad(out.square().sum(), coords)
    ref = reference.subspace_linear(x.detach(), weight, None, coords)
    (ref_grad,) = torch.autograd.grad(ref.square().sum(), coords)
    torch.testing.assert_close(grad, ref_grad)


def _opcheck_samples(device):
    d = torch.float32
    K, J = 3, 2
    c = tensor(K, J, dtype=d, device=device)
    lin = (
        tensor(4, 5, dtype=d, device=device),
        tensor(J, 6, 5, dtype=d, device=device),
        tensor(J, 6, dtype=d, device=device),
        c,
    )
    lin_pp = (tensor(K, 4, 5, dtype=d, device=device), *lin[1:])
    conv = (
        tensor(K, 2, 4, 6, 6, dtype=d, device=device),
        tensor(J, 4, 2, 3, 3, dtype=d, device=device),
        tensor(J, 4, dtype=d, device=device),
        c,
        [1, 1],
        [1, 1],
        [1, 1],
        2,
    )
    bn = (
        tensor(K, 4, 3, dtype=d, device=device),
        None,
        None,
        tensor(J, 3, dtype=d, device=device),
        tensor(J, 3, dtype=d, device=device),
        c,
        True,
        1e-5,
    )
    loss = (tensor(K, 4, 7, dtype=d, device=device), torch.tensor([1, 0, 6, 2], device=device))
    return [
        ("subspace_linear", lin),
        ("subspace_linear", lin_pp),
        ("subspace_conv", conv),
        ("pointwise_batch_norm", bn),
        ("point_loss", loss),
        ("synthesize", (lin[1], c)),
        ("combine", (tensor(2, 1, J, 3, 4, dtype=d, device=device), c, None)),
    ]


@needs_extension
@pytest.mark.parametrize("device", devices)
def test_opcheck(device):
    for name, args in _opcheck_samples(device):
        op = getattr(torch.ops.fastloss, name)
        grad_args = tuple(
            a.clone().requires_grad_()
            if isinstance(a, torch.Tensor) and a.is_floating_point()
            else a
            for a in args
        )
        # combine is a forward-only building block of the shared-input path.
        for sample in (args,) if name == "combine" else (args, grad_args):
            torch.library.opcheck(op, sample)


@needs_extension
def test_torch_compile_fullgraph():
    def layer(x, w1, b1, w2, coords, target):
        h = torch.relu(ops.subspace_linear(x, w1, b1, coords))
        logits = ops.subspace_linear(h, w2, None, coords)
        return ops.point_loss(logits, target)

    K, J, B = 4, 3, 8
    args = (
        torch.randn(B, 5),
        torch.randn(J, 7, 5),
        torch.randn(J, 7),
        torch.randn(J, 3, 7),
        torch.randn(K, J),
        torch.randint(0, 3, (B,)),
    )
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    loss, correct = compiled(*args)
    ref_loss, ref_correct = layer(*args)
    torch.testing.assert_close(loss, ref_loss)
    assert torch.equal(correct, ref_correct)
