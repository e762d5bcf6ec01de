// CUDA kernels for `synthesize` and `combine` (contracts in csrc/fastloss.h).
//
// Both are the same memory-bound contraction over a short axis J:
//     out[k, r, l] = sum_j coords[k, j] * (parts[r, j, l] + bias[j, g(r), c(l)])
// with synthesize the special case r = 1, no bias. One kernel serves both. Each thread
// owns VEC consecutive elements along the contiguous axis l (16-byte loads when the size
// and the pointers allow it) and kPointsPerThread points k: every element of `parts` read
// from memory is reused for several points, and J stays a short loop in registers. The
// small operands (coords, bias) are converted to the accumulation type on the host, so the
// kernel reads them without conversions and the math is the reference's
// `coords.to(opmath) @ basis.to(opmath)` in a fixed j order (deterministic).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "cuda_utils.cuh"
#include "fastloss.h"

namespace fastloss {
namespace {

using cuda::ceil_div;
using cuda::Vec;

constexpr int kThreads = 256;
constexpr int kPointsPerThread = 4;

// out [K, R, L] from parts [R, J, L], coords [K, J], bias [J, G, C] (L = C * S, g = r % G).
template <typename scalar_t, typename acc_t, int VEC, bool HAS_BIAS>
__global__ void __launch_bounds__(kThreads)
    combine_kernel(const scalar_t* __restrict__ parts, const acc_t* __restrict__ coords,
                   const acc_t* __restrict__ bias, scalar_t* __restrict__ out, int64_t K,
                   int64_t R, int64_t J, int64_t L, int64_t G, int64_t C, int64_t S) {
  using V = Vec<scalar_t, VEC>;
  const int64_t l = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * VEC;
  if (l >= L) return;  // L % VEC == 0, so [l, l + VEC) is in range; no barriers below
  const int64_t k_groups = ceil_div(K, kPointsPerThread);
  const int64_t work = R * k_groups;
  for (int64_t w = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; w < work;
       w += static_cast<int64_t>(gridDim.y) * blockDim.y) {
    const int64_t r = w / k_groups;
    const int64_t k0 = (w % k_groups) * kPointsPerThread;
    // Rows past K repeat the last point: they are computed but never stored.
    int64_t kidx[kPointsPerThread];
#pragma unroll
    for (int p = 0; p < kPointsPerThread; ++p) kidx[p] = std::min(k0 + p, K - 1);

    acc_t acc[kPointsPerThread][VEC];
#pragma unroll
    for (int p = 0; p < kPointsPerThread; ++p) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[p][e] = acc_t(0);
    }
    for (int64_t j = 0; j < J; ++j) {
      const V in = *reinterpret_cast<const V*>(parts + (r * J + j) * L + l);
      acc_t val[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e) val[e] = static_cast<acc_t>(in.v[e]);
      if constexpr (HAS_BIAS) {
        const acc_t* bias_jg = bias + (j * G + r % G) * C;
#pragma unroll
        for (int e = 0; e < VEC; ++e) val[e] += bias_jg[(l + e) / S];
      }
#pragma unroll
      for (int p = 0; p < kPointsPerThread; ++p) {
        const acc_t c = coords[kidx[p] * J + j];
#pragma unroll
        for (int e = 0; e < VEC; ++e) acc[p][e] += c * val[e];
      }
    }
#pragma unroll
    for (int p = 0; p < kPointsPerThread; ++p) {
      if (k0 + p < K) {
        V o;
#pragma unroll
        for (int e = 0; e < VEC; ++e) o.v[e] = static_cast<scalar_t>(acc[p][e]);
        *reinterpret_cast<V*>(out + ((k0 + p) * R + r) * L + l) = o;
      }
    }
  }
}

template <typename scalar_t, typename acc_t, int VEC>
void launch_combine(const scalar_t* parts, const acc_t* coords, const acc_t* bias,
                    scalar_t* out, int64_t K, int64_t R, int64_t J, int64_t L, int64_t G,
                    int64_t C, int64_t S) {
  // Threads along l first (coalesced); when a row is short the rest of the block takes
  // further (r, k-group) work items instead of idling.
  const int64_t vecs = L / VEC;
  const int tx = static_cast<int>(std::min<int64_t>(kThreads, ceil_div(vecs, 32) * 32));
  const int ty = kThreads / tx;
  const int64_t work = R * ceil_div(K, kPointsPerThread);
  const dim3 block(tx, ty);
  const dim3 grid(static_cast<unsigned>(ceil_div(vecs, tx)),
                  static_cast<unsigned>(std::min(ceil_div(work, ty), cuda::kMaxGridYZ)));
  auto stream = c10::cuda::getCurrentCUDAStream();
  if (bias != nullptr) {
    combine_kernel<scalar_t, acc_t, VEC, true>
        <<<grid, block, 0, stream>>>(parts, coords, bias, out, K, R, J, L, G, C, S);
  } else {
    combine_kernel<scalar_t, acc_t, VEC, false>
        <<<grid, block, 0, stream>>>(parts, coords, bias, out, K, R, J, L, G, C, S);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// parts [R, J, L] contiguous, out [K, R, L] freshly allocated.
void run_combine(const at::Tensor& parts, const at::Tensor& coords_acc,
                 const std::optional<at::Tensor>& bias_acc, at::Tensor& out, int64_t R,
                 int64_t J, int64_t L, int64_t G, int64_t C, int64_t S) {
  const int64_t K = coords_acc.size(0);
  if (out.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, parts.scalar_type(), "combine", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* p = parts.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const acc_t* c = coords_acc.const_data_ptr<acc_t>();
    const acc_t* b = bias_acc ? bias_acc->const_data_ptr<acc_t>() : nullptr;
    // Widest access that divides the row length and that both pointers are aligned for.
    constexpr int kMaxVec = 16 / sizeof(scalar_t);
    int vec = kMaxVec;
    while (vec > 1 && (L % vec != 0 || !cuda::is_aligned(p, vec * sizeof(scalar_t)) ||
                       !cuda::is_aligned(o, vec * sizeof(scalar_t)))) {
      vec /= 2;
    }
    if constexpr (kMaxVec >= 8) {
      if (vec == 8) return launch_combine<scalar_t, acc_t, 8>(p, c, b, o, K, R, J, L, G, C, S);
    }
    if constexpr (kMaxVec >= 4) {
      if (vec == 4) return launch_combine<scalar_t, acc_t, 4>(p, c, b, o, K, R, J, L, G, C, S);
    }
    if (vec == 2) return launch_combine<scalar_t, acc_t, 2>(p, c, b, o, K, R, J, L, G, C, S);
    launch_combine<scalar_t, acc_t, 1>(p, c, b, o, K, R, J, L, G, C, S);
  });
}

at::ScalarType opmath_dtype(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

void check_coords(const at::Tensor& coords, const at::Tensor& like, int64_t J, const char* op) {
  TORCH_CHECK(coords.is_cuda() && coords.device() == like.device(), op, ": coords must be on ",
              like.device(), ", got ", coords.device());
  TORCH_CHECK(coords.dim() == 2 && coords.size(1) == J, op, ": coords must be [K, J] with J = ", J,
              ", got ", coords.sizes());
  TORCH_CHECK(at::isFloatingType(coords.scalar_type()), op, ": coords must be floating point, got ",
              coords.scalar_type());
}

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
  run_combine(basis_c, coords_acc, std::nullopt, out, /*R=*/1, J, L, /*G=*/1, /*C=*/1,
              /*S=*/std::max<int64_t>(L, 1));
  return out;
}

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
  run_combine(parts_c, coords_acc, bias_acc, out, /*R=*/B * G, J, /*L=*/C * S, G, C,
              std::max<int64_t>(S, 1));
  return out;
}

}  // namespace
}  // namespace fastloss

TORCH_LIBRARY_IMPL(fastloss, CUDA, m) {
  m.impl("synthesize", &fastloss::synthesize_cuda);
  m.impl("combine", &fastloss::combine_cuda);
}
