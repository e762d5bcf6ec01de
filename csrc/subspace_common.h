// Helpers shared by the device-generic subspace layers, subspace_linear.cpp and
// subspace_conv.cpp (internal to the build; not installed with fastloss.h).
//
// Both layers are written once over ATen's GEMM/convolution and the per-backend
// `synthesize` and `combine` kernels (reached through the dispatcher: call_synthesize and
// call_combine in fastloss.h), with two paths (docs/design.md, "The one idea"):
// - shared input x [B, ...]: the J products x·W_jᵀ are computed once (one GEMM or one
//   convolution with the J weights stacked) and `combine` forms y_k = Σ_j c_kj (x·W_jᵀ + b_j).
//   Its cost is O(J), not O(K).
// - per-point input x [K, B, ...]: points are processed in chunks whose synthesised
//   weights fit a small buffer (cache-sized on the CPU), never K full copies at once.
// Backward reuses the same structure: per-point weight gradients M_k = dy_kᵀ x_k are formed
// chunk by chunk and folded into ∂W_j = Σ_k c_kj M_k and ∂c_kj = ⟨M_k, W_j⟩.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>

#include "fastloss.h"

namespace fastloss {

inline bool is_reduced(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

inline bool has(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// Bytes of synthesised weights held at once: about half of one core's L2 on the CPU.
inline int64_t weight_budget_bytes(const at::Tensor& x) {
  return x.is_cpu() ? (int64_t{1} << 20) : (int64_t{512} << 20);
}

inline void check_common(const char* op, const at::Tensor& x, const at::Tensor& weight,
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

inline at::Tensor coords_like(const at::Tensor& coords, const at::Tensor& t) {
  return coords.to(t.scalar_type());
}

// Gradients of the bias part, shared by both layers: grad_bias = Cᵀ·Σdy, grad_coords += Σdy·bᵀ.
inline void bias_grads(const at::Tensor& dy_sum, const std::optional<at::Tensor>& bias,
                       const at::Tensor& coords, std::array<bool, 4> mask, at::Tensor& grad_bias,
                       at::Tensor& grad_coords) {
  if (!has(bias)) return;
  if (mask[2]) grad_bias = at::mm(coords_like(coords, dy_sum).t(), dy_sum).to(bias->scalar_type());
  if (mask[3]) grad_coords.add_(at::mm(dy_sum, bias->to(dy_sum.scalar_type()).t()));
}

}  // namespace fastloss
