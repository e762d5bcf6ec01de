// CUDA kernel for `combine` (contract in csrc/fastloss.h): out[k, b, g, c, s] =
// sum_j coords[k, j] * (parts[b, g, j, c, s] + bias[j, g, c]), the contraction of
// contract_cuda.cuh with rows r = (b, g) and the bias added to every part.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "contract_cuda.cuh"
#include "cuda_utils.cuh"
#include "fastloss.h"

namespace fastloss {
namespace {

at::Tensor combine_cuda(const at::Tensor& parts, const at::Tensor& coords,
                        const std::optional<at::Tensor>& bias) {
  FASTLOSS_CHECK_CUDA(parts, "combine: parts");
  FASTLOSS_CHECK_DIM(parts, 5, "combine: parts");
  TORCH_CHECK(at::isFloatingType(parts.scalar_type()),
              "combine: parts must be floating point, got ",
              parts.scalar_type());
  const int64_t B = parts.size(0), G = parts.size(1), J = parts.size(2), C = parts.size(3),
                S = parts.size(4);
  check_coords(coords, parts, J, "combine");
  const at::ScalarType acc = opmath_dtype(parts.scalar_type());
  std::optional<at::Tensor> bias_acc;
  if (bias.has_value() && bias->defined()) {
    FASTLOSS_CHECK_CUDA(*bias, "combine: bias");
    FASTLOSS_CHECK_SAME_DEVICE(*bias, parts, "combine: bias", "parts");
    FASTLOSS_CHECK_DIM(*bias, 3, "combine: bias");
    TORCH_CHECK(bias->size(0) == J && bias->size(1) == G && bias->size(2) == C,
                "combine: bias must be [J, G, C] = [", J, ", ", G, ", ", C, "], got ",
                bias->sizes());
    bias_acc = bias->to(acc).contiguous();
  }
  c10::cuda::CUDAGuard guard(parts.device());

  const at::Tensor parts_c = parts.contiguous();
  const at::Tensor coords_acc = coords.to(acc).contiguous();
  const int64_t K = coords.size(0);
  at::Tensor out = at::empty({K, B, G, C, S}, parts.options());
  run_contract(parts_c, coords_acc, bias_acc, out, /*R=*/B * G, J, /*L=*/C * S, G, C,
               std::max<int64_t>(S, 1));
  return out;
}

}  // namespace
}  // namespace fastloss

TORCH_LIBRARY_IMPL(fastloss, CUDA, m) { m.impl("combine", &fastloss::combine_cuda); }
