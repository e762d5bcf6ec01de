// The J-contraction that both CUDA kernels `synthesize` (synthesize_cuda.cu) and `combine`
// (combine_cuda.cu) run; their contracts are in csrc/fastloss.h.
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
//
// Everything here has internal linkage (an unnamed namespace): each of the two .cu files
// that include this header compiles its own copy, so their device images never share a
// kernel symbol.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <optional>

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
    contract_kernel(const scalar_t* __restrict__ parts, const acc_t* __restrict__ coords,
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
void launch_contract(const scalar_t* parts, const acc_t* coords, const acc_t* bias,
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
    contract_kernel<scalar_t, acc_t, VEC, true>
        <<<grid, block, 0, stream>>>(parts, coords, bias, out, K, R, J, L, G, C, S);
  } else {
    contract_kernel<scalar_t, acc_t, VEC, false>
        <<<grid, block, 0, stream>>>(parts, coords, bias, out, K, R, J, L, G, C, S);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// parts [R, J, L] contiguous, out [K, R, L] freshly allocated.
void run_contract(const at::Tensor& parts, const at::Tensor& coords_acc,
                  const std::optional<at::Tensor>& bias_acc, at::Tensor& out, int64_t R,
                  int64_t J, int64_t L, int64_t G, int64_t C, int64_t S) {
  const int64_t K = coords_acc.size(0);
  if (out.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, parts.scalar_type(), "contract", [&] {
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
      if (vec == 8) return launch_contract<scalar_t, acc_t, 8>(p, c, b, o, K, R, J, L, G, C, S);
    }
    if constexpr (kMaxVec >= 4) {
      if (vec == 4) return launch_contract<scalar_t, acc_t, 4>(p, c, b, o, K, R, J, L, G, C, S);
    }
    if (vec == 2) return launch_contract<scalar_t, acc_t, 2>(p, c, b, o, K, R, J, L, G, C, S);
    launch_contract<scalar_t, acc_t, 1>(p, c, b, o, K, R, J, L, G, C, S);
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

}  // namespace
}  // namespace fastloss
