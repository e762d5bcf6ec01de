// CPU kernel for `combine`: shared-input outputs y_k = sum_j c_kj (x W_j^T + b_j), formed
// from the J products (contract in csrc/fastloss.h). Like synthesize_cpu.cpp it is one
// [K, J] x [J, N] product, memory-bound and accumulated in opmath (float for bf16/fp16),
// done by the BLAS GEMM, which writes each output once.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "combine_cpu.h"

namespace fastloss {

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

TORCH_LIBRARY_IMPL(fastloss, CPU, m) { m.impl("combine", &combine_cpu); }

}  // namespace fastloss
