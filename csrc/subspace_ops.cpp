// Device-generic subspace layers: forward and backward of subspace_linear and
// subspace_conv, written once over ATen's GEMM/convolution and the per-backend
// `synthesize` and `combine` kernels (reached through the dispatcher).
//
// Two paths, following DESIGN.md §1:
// - shared input x [B, ...]: the J products x·W_jᵀ are computed once (one GEMM or one
//   convolution with the J weights stacked) and `combine` forms y_k = Σ_j c_kj (x·W_jᵀ + b_j).
//   Its cost is O(J), not O(K).
// - per-point input x [K, B, ...]: points are processed in chunks whose synthesised
//   weights fit a small buffer (cache-sized on the CPU), never K full copies at once.
// Backward reuses the same structure: per-point weight gradients M_k = dy_kᵀ x_k are formed
// chunk by chunk and folded into ∂W_j = Σ_k c_kj M_k and ∂c_kj = ⟨M_k, W_j⟩.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "fastloss.h"

namespace fastloss {
namespace {

bool is_reduced(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

bool has(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// Bytes of synthesised weights held at once: about half of one core's L2 on the CPU.
int64_t weight_budget_bytes(const at::Tensor& x) {
  return x.is_cpu() ? (int64_t{1} << 20) : (int64_t{512} << 20);
}

void check_common(const char* op, const at::Tensor& x, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias, const at::Tensor& coords,
                  int64_t weight_dim, const char* weight_shape) {
  TORCH_CHECK(weight.dim() == weight_dim, op, ": weight must be ", weight_shape, ", got shape ",
              weight.sizes());
  TORCH_CHECK(coords.dim() == 2 && coords.size(1) == weight.size(0), op,
              ": coords must be [K, J] with J = weight.size(0) = ", weight.size(0), ", got shape ",
              coords.sizes());
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), op, ": x is ", x.scalar_type(),
              " but weight is ", weight.scalar_type());
  TORCH_CHECK(coords.scalar_type() == weight.scalar_type() ||
                  (is_reduced(weight.scalar_type()) && coords.scalar_type() == at::kFloat),
              op, ": coords must have weight's dtype (or float32 for bf16/fp16 weights), got ",
              coords.scalar_type());
  FASTLOSS_CHECK_SAME_DEVICE(x, weight, "x", "weight");
  FASTLOSS_CHECK_SAME_DEVICE(coords, weight, "coords", "weight");
  if (has(bias)) {
    TORCH_CHECK(bias->dim() == 2 && bias->size(0) == weight.size(0) && bias->size(1) == weight.size(1),
                op, ": bias must be [J, ", weight.size(1), "] = [", weight.size(0), ", ",
                weight.size(1), "], got shape ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == weight.scalar_type(), op, ": bias is ",
                bias->scalar_type(), " but weight is ", weight.scalar_type());
    FASTLOSS_CHECK_SAME_DEVICE(*bias, weight, "bias", "weight");
  }
}

at::Tensor coords_like(const at::Tensor& coords, const at::Tensor& t) {
  return coords.to(t.scalar_type());
}

// Conv weight [J, Co, Ci/g, *k] -> [g * J * Co/g, Ci/g, *k]: one convolution with `groups`
// then yields all J products, ordered (group, j, channel) so each group stays contiguous.
at::Tensor stack_conv_weight(const at::Tensor& weight, int64_t groups) {
  const int64_t J = weight.size(0), Co = weight.size(1);
  auto shape = weight.sizes().vec();
  std::vector<int64_t> split = {J, groups, Co / groups};
  split.insert(split.end(), shape.begin() + 2, shape.end());
  std::vector<int64_t> stacked = {J * Co};
  stacked.insert(stacked.end(), shape.begin() + 2, shape.end());
  return weight.reshape(split).transpose(0, 1).reshape(stacked);
}

at::Tensor unstack_conv_weight(const at::Tensor& stacked, const at::Tensor& weight, int64_t groups) {
  const int64_t J = weight.size(0), Co = weight.size(1);
  auto shape = weight.sizes().vec();
  std::vector<int64_t> split = {groups, J, Co / groups};
  split.insert(split.end(), shape.begin() + 2, shape.end());
  return stacked.reshape(split).transpose(0, 1).reshape(shape);
}

std::vector<int64_t> expand_param(at::IntArrayRef p, int64_t n, const char* name) {
  TORCH_CHECK(p.size() == 1 || static_cast<int64_t>(p.size()) == n, "subspace_conv: ", name,
              " must have 1 or ", n, " entries, got ", p.size());
  return p.size() == 1 ? std::vector<int64_t>(n, p[0]) : p.vec();
}

struct ConvArgs {
  std::vector<int64_t> stride, padding, dilation, output_padding;
  int64_t groups;
};

at::Tensor conv(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b,
                const ConvArgs& a) {
  return at::convolution(x, w, b, a.stride, a.padding, a.dilation, false, a.output_padding, a.groups);
}

// Gradients of the bias part, shared by both layers: grad_bias = Cᵀ·Σdy, grad_coords += Σdy·bᵀ.
void bias_grads(const at::Tensor& dy_sum, const std::optional<at::Tensor>& bias,
                const at::Tensor& coords, std::array<bool, 4> mask, at::Tensor& grad_bias,
                at::Tensor& grad_coords) {
  if (!has(bias)) return;
  if (mask[2]) grad_bias = at::mm(coords_like(coords, dy_sum).t(), dy_sum).to(bias->scalar_type());
  if (mask[3]) grad_coords.add_(at::mm(dy_sum, bias->to(dy_sum.scalar_type()).t()));
}

}  // namespace

at::Tensor no_grad_placeholder(const at::Tensor& like) { return at::empty({0}, like.options()); }

at::Tensor call_synthesize(const at::Tensor& basis, const at::Tensor& coords) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastloss::synthesize", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op.call(basis, coords);
}

at::Tensor call_combine(const at::Tensor& parts, const at::Tensor& coords,
                        const std::optional<at::Tensor>& bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastloss::combine", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                         const std::optional<at::Tensor>&)>();
  return op.call(parts, coords, bias);
}

int64_t points_per_chunk(int64_t K, int64_t weight_numel, int64_t element_size, int64_t budget_bytes) {
  const int64_t per_point = std::max<int64_t>(1, weight_numel * element_size);
  return std::max<int64_t>(1, std::min<int64_t>(K, budget_bytes / per_point));
}

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

// ---- convolution ---------------------------------------------------------------------

namespace {

ConvArgs conv_args(const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                   at::IntArrayRef dilation, int64_t groups) {
  const int64_t n = weight.dim() - 3;
  return {expand_param(stride, n, "stride"), expand_param(padding, n, "padding"),
          expand_param(dilation, n, "dilation"), std::vector<int64_t>(n, 0), groups};
}

void check_subspace_conv_args(const at::Tensor& x, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, const at::Tensor& coords,
                              int64_t groups) {
  TORCH_CHECK(weight.dim() == 4 || weight.dim() == 5,
              "subspace_conv: weight must be [J, Co, Ci/groups, k] (1D) or [J, Co, Ci/groups, kh, kw] (2D), got shape ",
              weight.sizes());
  check_common("subspace_conv", x, weight, bias, coords, weight.dim(), "[J, Co, Ci/groups, *kernel]");
  const int64_t n = weight.dim() - 3, K = coords.size(0);
  TORCH_CHECK(groups >= 1 && weight.size(1) % groups == 0, "subspace_conv: groups = ", groups,
              " must divide the output channels ", weight.size(1));
  TORCH_CHECK(x.dim() == n + 2 || x.dim() == n + 3, "subspace_conv: x must be [B, Ci, *spatial] (shared) or ",
              "[K, B, Ci, *spatial] (per point) with ", n, " spatial dims, got shape ", x.sizes());
  TORCH_CHECK(x.dim() == n + 2 || x.size(0) == K, "subspace_conv: per-point x must have K = ", K,
              " rows, got shape ", x.sizes());
  const int64_t ci = x.size(x.dim() - n - 1);
  TORCH_CHECK(ci == weight.size(2) * groups, "subspace_conv: x has ", ci,
              " input channels but weight expects Ci = ", weight.size(2) * groups);
}

}  // namespace

at::Tensor subspace_conv_generic(const at::Tensor& x, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, const at::Tensor& coords,
                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, int64_t groups) {
  check_subspace_conv_args(x, weight, bias, coords, groups);
  const auto a = conv_args(weight, stride, padding, dilation, groups);
  const int64_t J = weight.size(0), Co = weight.size(1), K = coords.size(0), n = weight.dim() - 3;
  // On the CPU, oneDNN's convolutions run much faster in channels-last (NHWC) layout, so 2D
  // outputs are produced channels-last per point: [K, B, Co, Ho, Wo] with strides of
  // [K, B, Ho, Wo, Co]. Merging K and B then gives a channels-last [K·B, Co, Ho, Wo] for the
  // layers that follow, and the next convolution reads it without a layout change.
  const bool channels_last = n == 2 && groups == 1 && x.is_cpu();
  if (x.dim() == n + 2) {
    const std::optional<at::Tensor> bias3 =
        has(bias) ? std::optional<at::Tensor>(bias->reshape({J, groups, Co / groups})) : std::nullopt;
    if (channels_last) {
      // Parts [B, J·Co, Ho, Wo] channels-last are [B·Ho·Wo, 1, J, Co, 1] in memory.
      const auto parts = conv(x.contiguous(at::MemoryFormat::ChannelsLast),
                              stack_conv_weight(weight, groups), std::nullopt, a);
      const int64_t B = parts.size(0), Ho = parts.size(2), Wo = parts.size(3);
      const auto rows = parts.permute({0, 2, 3, 1}).contiguous().view({B * Ho * Wo, 1, J, Co, 1});
      return call_combine(rows, coords, bias3).view({K, B, Ho, Wo, Co}).permute({0, 1, 4, 2, 3});
    }
    const auto parts = conv(x, stack_conv_weight(weight, groups), std::nullopt, a).contiguous();
    const int64_t B = parts.size(0);
    auto out_shape = parts.sizes().vec();
    const auto out = call_combine(parts.view({B, groups, J, Co / groups, -1}), coords, bias3);
    out_shape[1] = Co;
    out_shape.insert(out_shape.begin(), K);
    return out.view(out_shape);
  }
  const auto bias_k = has(bias) ? call_synthesize(*bias, coords) : at::Tensor();
  const int64_t chunk = points_per_chunk(K, weight.numel() / J, weight.element_size(), weight_budget_bytes(x));
  at::Tensor out;
  for (int64_t k0 = 0; k0 < K; k0 += chunk) {
    const int64_t kc = std::min(chunk, K - k0);
    const auto wk = call_synthesize(weight, coords.narrow(0, k0, kc));
    for (int64_t i = 0; i < kc; ++i) {
      const int64_t k = k0 + i;
      const auto x_k = channels_last ? x.select(0, k).contiguous(at::MemoryFormat::ChannelsLast)
                                     : x.select(0, k);
      const auto y = conv(x_k, wk.select(0, i),
                          bias_k.defined() ? std::optional<at::Tensor>(bias_k.select(0, k)) : std::nullopt, a);
      if (K == 1) return y.unsqueeze(0);  // no copy: y already has the output's layout
      if (!out.defined()) {
        auto shape = y.sizes().vec();
        if (channels_last) {
          out = at::empty({K, shape[0], shape[2], shape[3], shape[1]}, y.options())
                    .permute({0, 1, 4, 2, 3});
        } else {
          shape.insert(shape.begin(), K);
          out = at::empty(shape, y.options());
        }
      }
      out.select(0, k).copy_(y);
    }
  }
  return out;
}

Grads subspace_conv_backward_generic(const at::Tensor& grad_out, const at::Tensor& x,
                                     const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                     const at::Tensor& coords, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                     std::array<bool, 4> mask) {
  check_subspace_conv_args(x, weight, bias, coords, groups);
  const auto a = conv_args(weight, stride, padding, dilation, groups);
  const int64_t J = weight.size(0), Co = weight.size(1), K = coords.size(0), n = weight.dim() - 3;
  TORCH_CHECK(grad_out.dim() == n + 3 && grad_out.size(0) == K && grad_out.size(2) == Co,
              "subspace_conv_backward: grad_out must be [K, B, Co, *out_spatial] with K = ", K,
              ", Co = ", Co, ", got shape ", grad_out.sizes());
  const auto dy = grad_out.contiguous();
  const int64_t B = dy.size(1), per_point = dy.numel() / std::max<int64_t>(K, 1);
  const auto c = coords_like(coords, dy);
  at::Tensor gx = no_grad_placeholder(x), gw = no_grad_placeholder(x), gb = no_grad_placeholder(x);
  at::Tensor gc = mask[3] ? at::zeros({K, J}, dy.options()) : no_grad_placeholder(x);

  if (x.dim() == n + 2) {
    const auto ws = stack_conv_weight(weight, groups);
    if (mask[0] || mask[1]) {
      // Σ_k c_kj dy_k, laid out as the gradient of the stacked convolution's output.
      auto G = at::mm(c.t(), dy.view({K, per_point})).view({J, B, groups, Co / groups, -1});
      auto gshape = dy.sizes().vec();
      gshape.erase(gshape.begin());
      gshape[1] = J * Co;
      const auto Gs = G.permute({1, 2, 0, 3, 4}).reshape(gshape);
      auto [gx_, gws, unused] = at::convolution_backward(Gs, x, ws, std::nullopt, a.stride, a.padding,
                                                         a.dilation, false, a.output_padding, groups,
                                                         {mask[0], mask[1], false});
      if (mask[0]) gx = gx_;
      if (mask[1]) gw = unstack_conv_weight(gws, weight, groups);
    }
    if (mask[3]) {
      const auto parts = conv(x, ws, std::nullopt, a).reshape({B, groups, J, Co / groups, -1});
      gc.add_(at::mm(dy.view({K, per_point}), parts.permute({2, 0, 1, 3, 4}).reshape({J, per_point}).t()));
    }
  } else {
    if (mask[0]) gx = at::empty_like(x);
    const int64_t wn = weight.numel() / J;
    at::Tensor gw_acc;
    if (mask[1]) gw_acc = at::zeros({J, wn}, dy.options().dtype(at::toOpMathType(dy.scalar_type())));
    const int64_t chunk = points_per_chunk(K, wn, weight.element_size(), weight_budget_bytes(x));
    for (int64_t k0 = 0; k0 < K; k0 += chunk) {
      const int64_t kc = std::min(chunk, K - k0);
      const auto wk = call_synthesize(weight, coords.narrow(0, k0, kc));
      at::Tensor M = (mask[1] || mask[3]) ? at::empty({kc, wn}, dy.options()) : at::Tensor();
      for (int64_t i = 0; i < kc; ++i) {
        const int64_t k = k0 + i;
        auto [gx_k, gw_k, unused] = at::convolution_backward(
            dy.select(0, k), x.select(0, k), wk.select(0, i), std::nullopt, a.stride, a.padding,
            a.dilation, false, a.output_padding, groups, {mask[0], M.defined(), false});
        if (mask[0]) gx.select(0, k).copy_(gx_k);
        if (M.defined()) M.select(0, i).copy_(gw_k.reshape({wn}));
      }
      if (mask[1]) gw_acc.addmm_(c.narrow(0, k0, kc).t().to(gw_acc.scalar_type()), M.to(gw_acc.scalar_type()));
      if (mask[3]) gc.narrow(0, k0, kc).add_(at::mm(M, weight.reshape({J, wn}).t()));
    }
    if (mask[1]) gw = gw_acc.view(weight.sizes()).to(weight.scalar_type());
  }
  std::vector<int64_t> reduce_dims = {1};
  for (int64_t d = 3; d < dy.dim(); ++d) reduce_dims.push_back(d);
  bias_grads(dy.sum(reduce_dims), bias, coords, mask, gb, gc);
  if (mask[3]) gc = gc.to(coords.scalar_type());
  return {gx, gw, gb, gc};
}

TORCH_LIBRARY_IMPL(fastloss, CompositeExplicitAutograd, m) {
  m.impl("subspace_linear", &subspace_linear_generic);
  m.impl("subspace_linear_backward", &subspace_linear_backward_generic);
  m.impl("subspace_conv", &subspace_conv_generic);
  m.impl("subspace_conv_backward", &subspace_conv_backward_generic);
}

}  // namespace fastloss
