// CPU kernels for the two building blocks of every subspace layer:
//   synthesize: per-point weights  W_k = sum_j c_kj W_j
//   combine:    shared-input outputs y_k = sum_j c_kj (x W_j^T + b_j), from the J products
// Both are [K, J] x [J, N] products, memory-bound, accumulated in opmath (float for
// bf16/fp16): the BLAS GEMM writes each output once, faster than the hand loops they replaced.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <vector>

#include "synthesize_cpu.h"

namespace fastloss {
namespace {

bool is_reduced(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

}  // namespace

at::Tensor synthesize_cpu(const at::Tensor& basis_in, const at::Tensor& coords) {
  TORCH_CHECK(basis_in.dim() >= 1, "synthesize: basis must be [J, ...]");
  FASTLOSS_CHECK_DIM(coords, 2, "synthesize: coords");
  TORCH_CHECK(coords.size(1) == basis_in.size(0), "synthesize: coords is [K, ", coords.size(1),
              "] but basis has J = ", basis_in.size(0), " points");
  const auto basis = basis_in.contiguous();
  const int64_t J = basis.size(0), K = coords.size(0);
  std::vector<int64_t> out_shape = basis.sizes().vec();
  out_shape[0] = K;
  auto out = at::empty(out_shape, basis.options());
  if (out.numel() == 0) return out;
  // Synthesis is a [K, J] x [J, N] product: the BLAS GEMM is memory-bound here and faster
  // than a hand loop. Reduced precision is combined in float so coordinates keep 24 bits.
  const auto flat = basis.view({J, -1});
  if (coords.scalar_type() == basis.scalar_type() && !is_reduced(basis.scalar_type())) {
    auto out2 = out.view({K, -1});
    at::mm_out(out2, coords, flat);
  } else {
    const auto opmath = at::toOpMathType(basis.scalar_type());
    out.view({K, -1}).copy_(at::mm(coords.to(opmath), flat.to(opmath)));
  }
  return out;
}

at::Tensor combine_cpu(const at::Tensor& parts, const at::Tensor& coords,
                       const std::optional<at::Tensor>& bias) {
  FASTLOSS_CHECK_DIM(parts, 5, "combine: parts [B, G, J, C, S]");
  FASTLOSS_CHECK_DIM(coords, 2, "combine: coords");
  const int64_t B = parts.size(0), G = parts.size(1), J = parts.size(2), C = parts.size(3),
                S = parts.size(4), K = coords.size(0);
  TORCH_CHECK(coords.size(1) == J, "combine: coords is [K, ", coords.size(1), "] but parts has J = ", J);
  const bool with_bias = bias.has_value() && bias->defined();
  TORCH_CHECK(!with_bias || bias->numel() == J * G * C, "combine: bias must have J*G*C = ",
              J * G * C, " elements, got ", bias->numel());
  // The output is K/J times larger than the parts, so the parts (with the bias added) are
  // rearranged to [J, B*G*C*S] and one [K, J] x [J, N] GEMM writes every output once.
  const auto opmath = at::toOpMathType(parts.scalar_type());
  auto basis = parts.to(opmath);
  if (with_bias) basis = basis + bias->to(opmath).reshape({J, G, C}).transpose(0, 1).unsqueeze(0).unsqueeze(-1);
  const auto flat = basis.permute({2, 0, 1, 3, 4}).reshape({J, B * G * C * S});
  auto out = at::empty({K, B, G, C, S}, parts.options());
  if (out.numel() == 0) return out;
  if (opmath == parts.scalar_type()) {
    auto out2 = out.view({K, -1});
    at::mm_out(out2, coords.to(opmath), flat);
  } else {
    out.view({K, -1}).copy_(at::mm(coords.to(opmath), flat));
  }
  return out;
}

TORCH_LIBRARY_IMPL(fastloss, CPU, m) {
  m.impl("synthesize", &synthesize_cpu);
  m.impl("combine", &combine_cpu);
}

}  // namespace fastloss
