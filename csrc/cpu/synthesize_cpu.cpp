// CPU kernel for `synthesize`: per-point weights W_k = sum_j c_kj W_j (contract in
// csrc/fastloss.h). combine_cpu.cpp runs the same [K, J] x [J, N] product for the
// shared-input outputs.
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

TORCH_LIBRARY_IMPL(fastloss, CPU, m) { m.impl("synthesize", &synthesize_cpu); }

}  // namespace fastloss
