// Device-generic subspace_linear and its backward (registered CompositeExplicitAutograd;
// csrc/cuda/subspace_linear_cuda.cu overrides the per-point forward on CUDA). The two paths
// are described in subspace_common.h: the shared input is one GEMM against the J stacked
// weights plus `combine`; the per-point input runs batched GEMMs on chunks of synthesised
// weights.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>

#include "fastloss.h"
#include "subspace_common.h"

namespace fastloss {

void check_subspace_linear_args(const at::Tensor& x, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, const at::Tensor& coords) {
  check_common("subspace_linear", x, weight, bias, coords, 3, "[J, O, I]");
  const int64_t K = coords.size(0), I = weight.size(2);
  TORCH_CHECK(x.dim() == 2 || x.dim() == 3,
              "subspace_linear: x must be [B, I] (shared) or [K, B, I] (per point), got shape ", x.sizes());
  TORCH_CHECK(x.size(-1) == I, "subspace_linear: x must end in I = weight.size(2) = ", I,
              ", got shape ", x.sizes());
  TORCH_CHECK(x.dim() == 2 || x.size(0) == K, "subspace_linear: per-point x must be [K, B, I] with K = ",
              K, ", got shape ", x.sizes());
}

at::Tensor subspace_linear_generic(const at::Tensor& x, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, const at::Tensor& coords) {
  check_subspace_linear_args(x, weight, bias, coords);
  const int64_t J = weight.size(0), O = weight.size(1), I = weight.size(2), K = coords.size(0);
  const std::optional<at::Tensor> bias3 =
      has(bias) ? std::optional<at::Tensor>(bias->reshape({J, 1, O})) : std::nullopt;
  if (x.dim() == 2) {
    const int64_t B = x.size(0);
    const auto parts = at::mm(x, weight.reshape({J * O, I}).t());
    return call_combine(parts.view({B, 1, J, O, 1}), coords, bias3).view({K, B, O});
  }
  const int64_t B = x.size(1);
  auto out = at::empty({K, B, O}, x.options());
  const auto bias_k = has(bias) ? call_synthesize(*bias, coords) : at::Tensor();
  // The GEMM reads the synthesised [O, I] weights transposed: measured on the CPU, that costs
  // less than transposing the basis on every call (which fitting, with a new basis each
  // step, cannot cache).
  const int64_t chunk = points_per_chunk(K, O * I, weight.element_size(), weight_budget_bytes(x));
  for (int64_t k0 = 0; k0 < K; k0 += chunk) {
    const int64_t kc = std::min(chunk, K - k0);
    const auto wk = call_synthesize(weight, coords.narrow(0, k0, kc)).transpose(1, 2);
    auto o = out.narrow(0, k0, kc);
    if (bias_k.defined())
      at::baddbmm_out(o, bias_k.narrow(0, k0, kc).unsqueeze(1), x.narrow(0, k0, kc), wk);
    else
      at::bmm_out(o, x.narrow(0, k0, kc), wk);
  }
  return out;
}

Grads subspace_linear_backward_generic(const at::Tensor& grad_out, const at::Tensor& x,
                                       const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                       const at::Tensor& coords, std::array<bool, 4> mask) {
  check_subspace_linear_args(x, weight, bias, coords);
  const int64_t J = weight.size(0), O = weight.size(1), I = weight.size(2), K = coords.size(0);
  const int64_t B = x.size(-2);
  TORCH_CHECK(grad_out.dim() == 3 && grad_out.size(0) == K && grad_out.size(1) == B && grad_out.size(2) == O,
              "subspace_linear_backward: grad_out must be [K, B, O] = [", K, ", ", B, ", ", O, "]");
  const auto dy = grad_out.contiguous();
  const auto c = coords_like(coords, dy);
  const auto w2 = weight.reshape({J * O, I});
  at::Tensor gx = no_grad_placeholder(x), gw = no_grad_placeholder(x), gb = no_grad_placeholder(x);
  at::Tensor gc = mask[3] ? at::zeros({K, J}, dy.options()) : no_grad_placeholder(x);

  if (x.dim() == 2) {
    if (mask[0] || mask[1]) {
      // G_j = Σ_k c_kj dy_k: the gradient reaching each basis product.
      const auto G = at::mm(c.t(), dy.view({K, B * O})).view({J, B, O});
      if (mask[0]) gx = at::mm(G.transpose(0, 1).reshape({B, J * O}), w2);
      if (mask[1]) gw = at::bmm(G.transpose(1, 2), x.unsqueeze(0).expand({J, B, I}));
    }
    if (mask[3]) {
      const auto parts = at::mm(x, w2.t()).view({B, J, O}).transpose(0, 1).reshape({J, B * O});
      gc.add_(at::mm(dy.view({K, B * O}), parts.t()));
    }
  } else {
    if (mask[0]) gx = at::empty_like(x);
    at::Tensor gw_acc;
    if (mask[1]) gw_acc = at::zeros({J, O * I}, dy.options().dtype(at::toOpMathType(dy.scalar_type())));
    const int64_t chunk = points_per_chunk(K, O * I, weight.element_size(), weight_budget_bytes(x));
    for (int64_t k0 = 0; k0 < K; k0 += chunk) {
      const int64_t kc = std::min(chunk, K - k0);
      const auto dy_c = dy.narrow(0, k0, kc);
      if (mask[0]) {
        auto gx_c = gx.narrow(0, k0, kc);
        at::bmm_out(gx_c, dy_c, call_synthesize(weight, coords.narrow(0, k0, kc)));
      }
      if (mask[1] || mask[3]) {
        const auto M = at::bmm(dy_c.transpose(1, 2), x.narrow(0, k0, kc)).view({kc, O * I});
        if (mask[1]) gw_acc.addmm_(c.narrow(0, k0, kc).t().to(gw_acc.scalar_type()), M.to(gw_acc.scalar_type()));
        if (mask[3]) gc.narrow(0, k0, kc).add_(at::mm(M, weight.reshape({J, O * I}).t()));
      }
    }
    if (mask[1]) gw = gw_acc.view({J, O, I}).to(weight.scalar_type());
  }
  bias_grads(dy.sum(1), bias, coords, mask, gb, gc);
  if (mask[3]) gc = gc.to(coords.scalar_type());
  return {gx, gw, gb, gc};
}

TORCH_LIBRARY_IMPL(fastloss, CompositeExplicitAutograd, m) {
  m.impl("subspace_linear", &subspace_linear_generic);
  m.impl("subspace_linear_backward", &subspace_linear_backward_generic);
}

}  // namespace fastloss
