"""Fake kernels (for torch.compile / meta tensors) and autograd for the compiled ops.

Imported by `fastloss.ops` once the extension has registered the `torch.ops.fastloss` ops.
Backward ops take an ``output_mask`` and return an empty ``[0]`` tensor for each gradient
that was not asked for.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastloss.ops.reference import opmath

lib = torch.library
ops = torch.ops.fastloss


def _empty_grads(mask, x: Tensor, *others: Tensor | None) -> tuple[Tensor, ...]:
    return tuple(
        torch.empty_like(like) if (wanted and like is not None) else x.new_empty(0)
        for wanted, like in zip(mask, (x, *others), strict=True)
    )


# ---- fake kernels ------------------------------------------------------------------------


@lib.register_fake("fastloss::synthesize")
def _(basis, coords):
    return basis.new_empty((coords.shape[0], *basis.shape[1:]))


@lib.register_fake("fastloss::combine")
def _(parts, coords, bias):
    B, G, _, C, S = parts.shape
    return parts.new_empty((coords.shape[0], B, G, C, S))


@lib.register_fake("fastloss::subspace_linear")
def _(x, weight, bias, coords):
    return x.new_empty((coords.shape[0], x.shape[-2], weight.shape[1]))


def _conv_out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@lib.register_fake("fastloss::subspace_conv")
def _(x, weight, bias, coords, stride, padding, dilation, groups):
    n = weight.dim() - 3
    spatial = [
        _conv_out_size(x.shape[-n + i], weight.shape[3 + i], stride[i], padding[i], dilation[i])
        for i in range(n)
    ]
    return x.new_empty((coords.shape[0], x.shape[-n - 2], weight.shape[1], *spatial))


@lib.register_fake("fastloss::subspace_linear_backward")
def _(grad_out, x, weight, bias, coords, output_mask):
    return _empty_grads(output_mask, x, weight, bias, coords)


@lib.register_fake("fastloss::subspace_conv_backward")
def _(grad_out, x, weight, bias, coords, stride, padding, dilation, groups, output_mask):
    return _empty_grads(output_mask, x, weight, bias, coords)


@lib.register_fake("fastloss::pointwise_batch_norm")
def _(x, mean, var, weight, bias, coords, training, eps):
    stats = x.new_empty((x.shape[0], x.shape[2]), dtype=opmath(x.dtype))
    return torch.empty_like(x), stats, torch.empty_like(stats)


@lib.register_fake("fastloss::pointwise_batch_norm_backward")
def _(grad_out, x, save_mean, save_invstd, weight, bias, coords, training, output_mask):
    return _empty_grads(output_mask, x, weight, bias, coords)


@lib.register_fake("fastloss::point_loss")
def _(logits, target):
    K = logits.shape[0]
    return logits.new_empty((K,), dtype=opmath(logits.dtype)), logits.new_empty(
        (K,), dtype=torch.int64
    )


# ---- autograd ----------------------------------------------------------------------------


def _mask(ctx) -> list[bool]:
    return [bool(n) for n in ctx.needs_input_grad[:4]]


def _or_none(grads, mask) -> tuple[Tensor | None, ...]:
    return tuple(g if wanted else None for g, wanted in zip(grads, mask, strict=True))


def _setup_layer(ctx, inputs, output):
    x, weight, bias, coords = inputs[:4]
    ctx.save_for_backward(x, weight, bias, coords)
    ctx.conv_args = tuple(inputs[4:])


def _linear_backward(ctx, grad):
    x, weight, bias, coords = ctx.saved_tensors
    mask = _mask(ctx)
    mask[2] = mask[2] and bias is not None
    grads = ops.subspace_linear_backward(grad, x, weight, bias, coords, mask)
    return _or_none(grads, mask)


def _conv_backward(ctx, grad):
    x, weight, bias, coords = ctx.saved_tensors
    mask = _mask(ctx)
    mask[2] = mask[2] and bias is not None
    grads = ops.subspace_conv_backward(grad, x, weight, bias, coords, *ctx.conv_args, mask)
    return (*_or_none(grads, mask), None, None, None, None)


lib.register_autograd("fastloss::subspace_linear", _linear_backward, setup_context=_setup_layer)
lib.register_autograd("fastloss::subspace_conv", _conv_backward, setup_context=_setup_layer)


def _setup_batch_norm(ctx, inputs, output):
    x, _, _, weight, bias, coords, training, _ = inputs
    _, save_mean, save_invstd = output
    ctx.save_for_backward(x, save_mean, save_invstd, weight, bias, coords)
    ctx.training = training
    ctx.mark_non_differentiable(save_mean, save_invstd)


def _batch_norm_backward(ctx, grad, _grad_mean, _grad_invstd):
    x, save_mean, save_invstd, weight, bias, coords = ctx.saved_tensors
    needs = ctx.needs_input_grad
    mask = [needs[0], needs[3] and weight is not None, needs[4] and bias is not None, needs[5]]
    gx, gw, gb, gc = ops.pointwise_batch_norm_backward(
        grad.contiguous(), x, save_mean, save_invstd, weight, bias, coords, ctx.training, mask
    )
    gx, gw, gb, gc = _or_none((gx, gw, gb, gc), mask)
    return gx, None, None, gw, gb, gc, None, None


lib.register_autograd(
    "fastloss::pointwise_batch_norm", _batch_norm_backward, setup_context=_setup_batch_norm
)


def _setup_point_loss(ctx, inputs, output):
    logits, target = inputs
    ctx.save_for_backward(logits, target)
    ctx.mark_non_differentiable(output[1])


def _point_loss_backward(ctx, grad_loss, _grad_correct):
    # d(sum_b CE)/dlogits = softmax - onehot; formed only here, never in the forward.
    logits, target = ctx.saved_tensors
    probs = torch.softmax(logits.to(grad_loss.dtype), dim=-1)
    probs.scatter_add_(
        -1,
        target.view(1, -1, 1).expand(logits.shape[0], -1, 1),
        torch.full_like(probs[..., :1], -1.0),
    )
    return (probs * grad_loss.view(-1, 1, 1)).to(logits.dtype), None


lib.register_autograd("fastloss::point_loss", _point_loss_backward, setup_context=_setup_point_loss)


def _setup_synthesize(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _synthesize_backward(ctx, grad):
    # synthesize is bilinear: out = coords @ basis (flattened), so both gradients are GEMMs.
    basis, coords = ctx.saved_tensors
    g = grad.reshape(grad.shape[0], -1).to(coords.dtype)
    flat = basis.reshape(basis.shape[0], -1).to(coords.dtype)
    grad_basis = (
        (coords.t() @ g).reshape(basis.shape).to(basis.dtype) if ctx.needs_input_grad[0] else None
    )
    grad_coords = g @ flat.t() if ctx.needs_input_grad[1] else None
    return grad_basis, grad_coords


lib.register_autograd("fastloss::synthesize", _synthesize_backward, setup_context=_setup_synthesize)
