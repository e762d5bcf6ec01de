// Device-generic subspace_conv (1D and 2D) and its backward, registered
// CompositeExplicitAutograd. The two paths of subspace_common.h with convolutions in place of
// GEMMs: the shared input is one convolution whose weight stacks the J basis weights
// (stack_conv_weight), then `combine`; the per-point input runs one convolution per point
// (on the CPU) or one grouped convolution per chunk of points (on the GPU), with weights
// synthesised chunk by chunk.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "fastloss.h"
#include "subspace_common.h"

namespace fastloss {
namespace {

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

// On the CPU a 1D convolution runs as a 2D one of height 1 in channels-last layout: oneDNN is
// 2-8x faster there than on [N, C, L], and the output, [K, B, Co, L] laid out as
// [K, B, L, Co], is the layout in which the pooling and batch norm that follow run fastest too.
bool runs_as_2d(const at::Tensor& x, const at::Tensor& weight, int64_t groups) {
  return weight.dim() == 4 && groups == 1 && x.is_cpu();
}

// The CPU's 2D convolutions take and give channels-last tensors per point (see
// subspace_conv_generic), forward and backward.
bool channels_last_2d(const at::Tensor& x, int64_t spatial, int64_t groups) {
  return spatial == 2 && groups == 1 && x.is_cpu();
}

// Per-point inputs on the GPU run as one grouped convolution over a chunk of points (the
// points' channels side by side, groups = points x groups) instead of one cuDNN call per
// point, whose launch cost dominates small layers (docs/design.md, "Per-point
// convolutions"). $FASTLOSS_CONV_PER_POINT picks the path on any device: "grouped",
// "loop", or "auto" (default: grouped on CUDA, the loop on the CPU, where oneDNN's
// channels-last convolutions per point are faster).
bool grouped_over_points(const at::Tensor& x) {
  const char* choice = std::getenv("FASTLOSS_CONV_PER_POINT");
  const std::string path = choice == nullptr ? "auto" : choice;
  TORCH_CHECK(path == "auto" || path == "grouped" || path == "loop",
              "FASTLOSS_CONV_PER_POINT must be auto, grouped or loop, got '", path, "'");
  return path == "grouped" || (path == "auto" && x.is_cuda());
}

std::tuple<std::vector<int64_t>, std::vector<int64_t>, std::vector<int64_t>> as_2d(const ConvArgs& a) {
  return {{1, a.stride[0]}, {0, a.padding[0]}, {1, a.dilation[0]}};
}

}  // namespace

at::Tensor subspace_conv_generic(const at::Tensor& x, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, const at::Tensor& coords,
                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, int64_t groups) {
  check_subspace_conv_args(x, weight, bias, coords, groups);
  const auto a = conv_args(weight, stride, padding, dilation, groups);
  if (runs_as_2d(x, weight, groups)) {
    const auto [s, p, d] = as_2d(a);
    return subspace_conv_generic(x.unsqueeze(-2), weight.unsqueeze(-2), bias, coords, s, p, d, groups)
        .squeeze(-2);
  }
  const int64_t J = weight.size(0), Co = weight.size(1), K = coords.size(0), n = weight.dim() - 3;
  // On the CPU, oneDNN's convolutions run much faster in channels-last (NHWC) layout, so 2D
  // outputs are produced channels-last per point: [K, B, Co, Ho, Wo] with strides of
  // [K, B, Ho, Wo, Co]. Merging K and B then gives a channels-last [K·B, Co, Ho, Wo] for the
  // layers that follow, and the next convolution reads it without a layout change.
  const bool channels_last = channels_last_2d(x, n, groups);
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
  if (grouped_over_points(x)) {
    at::Tensor out;
    for (int64_t k0 = 0; k0 < K; k0 += chunk) {
      const int64_t kc = std::min(chunk, K - k0);
      // [kc, B, Ci, *s] -> [B, kc·Ci, *s]; weights [kc, Co, Ci/g, *k] -> [kc·Co, Ci/g, *k]
      const auto xs = x.narrow(0, k0, kc).transpose(0, 1).flatten(1, 2);
      const auto wk = call_synthesize(weight, coords.narrow(0, k0, kc)).flatten(0, 1);
      std::optional<at::Tensor> bk = std::nullopt;
      if (bias_k.defined()) bk = bias_k.narrow(0, k0, kc).flatten();
      auto group_args = a;
      group_args.groups = kc * groups;
      const auto y = conv(xs, wk, bk, group_args);  // [B, kc·Co, *so]
      auto split = y.sizes().vec();
      split[1] = Co;
      split.insert(split.begin() + 1, kc);
      const auto yk = y.reshape(split).transpose(0, 1);  // [kc, B, Co, *so]
      if (kc == K) return yk.contiguous();
      if (!out.defined()) {
        auto shape = yk.sizes().vec();
        shape[0] = K;
        out = at::empty(shape, y.options());
      }
      out.narrow(0, k0, kc).copy_(yk);
    }
    return out;
  }
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
  if (runs_as_2d(x, weight, groups)) {
    const auto [s, p, d] = as_2d(a);
    auto g = subspace_conv_backward_generic(grad_out.unsqueeze(-2), x.unsqueeze(-2), weight.unsqueeze(-2),
                                            bias, coords, s, p, d, groups, mask);
    if (mask[0]) std::get<0>(g) = std::get<0>(g).squeeze(-2);
    if (mask[1]) std::get<1>(g) = std::get<1>(g).squeeze(-2);
    return g;
  }
  const int64_t J = weight.size(0), Co = weight.size(1), K = coords.size(0), n = weight.dim() - 3;
  TORCH_CHECK(grad_out.dim() == n + 3 && grad_out.size(0) == K && grad_out.size(2) == Co,
              "subspace_conv_backward: grad_out must be [K, B, Co, *out_spatial] with K = ", K,
              ", Co = ", Co, ", got shape ", grad_out.sizes());
  // The shared-input path reads dy as one [K, B·Co·spatial] matrix; the per-point path hands
  // each point's slice to oneDNN in the layout of the forward (channels-last 2D on the CPU,
  // where the backward convolutions run 2x faster too).
  const bool shared = x.dim() == n + 2;
  const bool channels_last = channels_last_2d(x, n, groups);
  const auto layout = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const auto dy = shared ? grad_out.contiguous() : grad_out;
  const int64_t B = dy.size(1), per_point = dy.numel() / std::max<int64_t>(K, 1);
  const auto c = coords_like(coords, dy);
  at::Tensor gx = no_grad_placeholder(x), gw = no_grad_placeholder(x), gb = no_grad_placeholder(x);
  at::Tensor gc = mask[3] ? at::zeros({K, J}, dy.options()) : no_grad_placeholder(x);

  if (shared) {
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
            dy.select(0, k).contiguous(layout), x.select(0, k).contiguous(layout), wk.select(0, i),
            std::nullopt, a.stride, a.padding,
            a.dilation, false, a.output_padding, groups, {mask[0], M.defined(), false});
        if (mask[0]) gx.select(0, k).copy_(gx_k);
        if (M.defined()) M.select(0, i).view(weight.sizes().slice(1)).copy_(gw_k);
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
  m.impl("subspace_conv", &subspace_conv_generic);
  m.impl("subspace_conv_backward", &subspace_conv_backward_generic);
}

}  // namespace fastloss
