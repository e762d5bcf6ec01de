// CUDA kernel for `synthesize` (contract in csrc/fastloss.h): out[k] = sum_j coords[k, j] *
// basis[j], the contraction of contract_cuda.cuh with one row (R = 1) and no bias.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "contract_cuda.cuh"
#include "cuda_utils.cuh"
#include "fastloss.h"

namespace fastloss {
namespace {

at::Tensor synthesize_cuda(const at::Tensor& basis, const at::Tensor& coords) {
  FASTLOSS_CHECK_CUDA(basis, "synthesize: basis");
  TORCH_CHECK(basis.dim() >= 1, "synthesize: basis must be [J, *S]");
  TORCH_CHECK(at::isFloatingType(basis.scalar_type()),
              "synthesize: basis must be floating point, got ",
              basis.scalar_type());
  const int64_t J = basis.size(0);
  check_coords(coords, basis, J, "synthesize");
  c10::cuda::CUDAGuard guard(basis.device());

  const at::Tensor basis_c = basis.contiguous();
  const at::Tensor coords_acc = coords.to(opmath_dtype(basis.scalar_type())).contiguous();
  const int64_t K = coords.size(0);
  std::vector<int64_t> out_shape{K};
  for (int64_t d = 1; d < basis.dim(); ++d) out_shape.push_back(basis.size(d));
  at::Tensor out = at::empty(out_shape, basis.options());
  const int64_t L = J > 0 ? basis_c.numel() / J : out.numel() / std::max<int64_t>(K, 1);
  run_contract(basis_c, coords_acc, std::nullopt, out, /*R=*/1, J, L, /*G=*/1, /*C=*/1,
               /*S=*/std::max<int64_t>(L, 1));
  return out;
}

}  // namespace
}  // namespace fastloss

TORCH_LIBRARY_IMPL(fastloss, CUDA, m) { m.impl("synthesize", &fastloss::synthesize_cuda); }
