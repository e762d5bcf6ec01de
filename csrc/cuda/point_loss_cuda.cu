// CUDA kernel for `point_loss` (contract in csrc/fastloss.h).
//
// Evaluation streams [K, B, C] logits once: a group of W lanes (W = 4..32, the smallest
// power of two >= C, so ten-class problems do not leave most of a warp idle) owns one
// (k, b) row and keeps an online log-sum-exp (running max and rescaled sum) plus the
// running argmax while striding over the classes. The W partial states are merged with
// xor-shuffles, so no softmax is ever written. Per-row losses and hits go to a [K, B]
// buffer that a second kernel sums per point in a fixed order: results are deterministic
// (no float atomics) and the sum over B is a tree, which keeps float32 error small.
//
// argmax follows torch.argmax (NaN counts as the maximum, the first maximum wins), but a row
// holding a NaN is never counted correct, as in the CPU kernel: its loss is NaN anyway.
// An out-of-range target trips a device assert, as in torch's own cross-entropy.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>

#include "cuda_utils.cuh"
#include "fastloss.h"

namespace fastloss {
namespace {

using cuda::ceil_div;

constexpr int kThreads = 256;

// True if (v, i) should replace (best, best_i) as the argmax: NaN beats numbers, a larger
// value beats a smaller one, and among equals (or two NaNs) the smaller index wins.
template <typename T>
__device__ __forceinline__ bool argmax_better(T v, int i, T best, int best_i) {
  const bool v_nan = v != v, best_nan = best != best;
  if (v_nan != best_nan) return v_nan;
  if (v_nan || v == best) return i < best_i;
  return v > best;
}

template <typename scalar_t, typename acc_t, int W>
__global__ void __launch_bounds__(kThreads)
    point_loss_rows_kernel(const scalar_t* __restrict__ logits,
                           const int64_t* __restrict__ target, acc_t* __restrict__ row_loss,
                           int32_t* __restrict__ row_correct, int64_t rows, int64_t B, int C) {
  constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
  const int lane = threadIdx.x % W;
  const int64_t rows_per_block = kThreads / W;
  // The loop bound is uniform over the block, so every lane of a warp reaches the
  // shuffles; lanes whose row is past the end just carry the neutral state.
  for (int64_t base = blockIdx.x * rows_per_block; base < rows;
       base += static_cast<int64_t>(gridDim.x) * rows_per_block) {
    const int64_t row = base + threadIdx.x / W;
    const bool valid = row < rows;
    const scalar_t* x = logits + (valid ? row : 0) * C;

    acc_t m = kNegInf;  // running max
    acc_t s = 0;        // sum of exp(x - m)
    acc_t best = kNegInf;
    int best_i = std::numeric_limits<int>::max();
    for (int c = lane; valid && c < C; c += W) {
      const acc_t v = static_cast<acc_t>(x[c]);
      if (argmax_better(v, c, best, best_i)) {
        best = v;
        best_i = c;
      }
      if (v > m) {
        s = s * cuda::exp_(m - v) + acc_t(1);
        m = v;
      } else if (v != kNegInf) {  // exp(-inf) adds nothing; avoids -inf - -inf; NaN goes through
        s += cuda::exp_(v - m);
      }
    }
#pragma unroll
    for (int offset = W / 2; offset > 0; offset >>= 1) {
      const acc_t m2 = __shfl_xor_sync(0xffffffffu, m, offset);
      const acc_t s2 = __shfl_xor_sync(0xffffffffu, s, offset);
      const acc_t b2 = __shfl_xor_sync(0xffffffffu, best, offset);
      const int i2 = __shfl_xor_sync(0xffffffffu, best_i, offset);
      const acc_t mm = m > m2 ? m : m2;
      // A side already at the max is not rescaled (avoids inf - inf when mm = +-inf).
      const acc_t s_self = m == mm ? s : s * cuda::exp_(m - mm);
      const acc_t s_other = m2 == mm ? s2 : s2 * cuda::exp_(m2 - mm);
      s = s_self + s_other;
      m = mm;
      if (argmax_better(b2, i2, best, best_i)) {
        best = b2;
        best_i = i2;
      }
    }
    if (valid && lane == 0) {
      const int64_t t = target[row % B];
      CUDA_KERNEL_ASSERT(t >= 0 && t < C && "point_loss: target out of range");
      const bool in_range = t >= 0 && t < C;
      const acc_t xt = in_range ? static_cast<acc_t>(x[t])
                                : std::numeric_limits<acc_t>::quiet_NaN();
      row_loss[row] = -(xt - m - cuda::log_(s));
      // NaN beats every number in argmax_better, so best is NaN exactly when the row has one.
      row_correct[row] = in_range && best_i == t && best == best ? 1 : 0;
    }
  }
}

// One block per point: fixed-order sums over the B rows of that point.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    point_loss_sum_kernel(const acc_t* __restrict__ row_loss,
                          const int32_t* __restrict__ row_correct, acc_t* __restrict__ loss_sum,
                          int64_t* __restrict__ correct, int64_t K, int64_t B) {
  __shared__ acc_t scratch_loss[cuda::kWarpSize];
  __shared__ int64_t scratch_correct[cuda::kWarpSize];
  for (int64_t k = blockIdx.x; k < K; k += gridDim.x) {
    acc_t loss = 0;
    int64_t hits = 0;
    for (int64_t b = threadIdx.x; b < B; b += blockDim.x) {
      loss += row_loss[k * B + b];
      hits += row_correct[k * B + b];
    }
    loss = cuda::block_sum(loss, scratch_loss);
    hits = cuda::block_sum(hits, scratch_correct);
    if (threadIdx.x == 0) {
      loss_sum[k] = loss;
      correct[k] = hits;
    }
  }
}

template <typename scalar_t, typename acc_t, int W>
void launch_rows(const scalar_t* logits, const int64_t* target, acc_t* row_loss,
                 int32_t* row_correct, int64_t rows, int64_t B, int C) {
  const int64_t blocks = std::min(ceil_div(rows, kThreads / W), cuda::kMaxGridX);
  point_loss_rows_kernel<scalar_t, acc_t, W>
      <<<static_cast<unsigned>(blocks), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          logits, target, row_loss, row_correct, rows, B, C);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> point_loss_cuda(const at::Tensor& logits,
                                                   const at::Tensor& target) {
  FASTLOSS_CHECK_CUDA(logits, "point_loss: logits");
  FASTLOSS_CHECK_CUDA(target, "point_loss: target");
  FASTLOSS_CHECK_SAME_DEVICE(logits, target, "point_loss: logits", "target");
  FASTLOSS_CHECK_DIM(logits, 3, "point_loss: logits");
  FASTLOSS_CHECK_DIM(target, 1, "point_loss: target");
  TORCH_CHECK(at::isFloatingType(logits.scalar_type()),
              "point_loss: logits must be floating point, got ",
              logits.scalar_type());
  TORCH_CHECK(target.scalar_type() == at::kLong, "point_loss: target must be int64, got ",
              target.scalar_type());
  const int64_t K = logits.size(0), B = logits.size(1), C = logits.size(2);
  TORCH_CHECK(target.size(0) == B, "point_loss: target must be [B] with B = ", B, ", got ",
              target.sizes());
  TORCH_CHECK(C > 0 || B == 0, "point_loss needs at least one class");
  TORCH_CHECK(C <= std::numeric_limits<int>::max(), "point_loss: too many classes");
  c10::cuda::CUDAGuard guard(logits.device());

  const at::Tensor logits_c = logits.contiguous();
  const at::Tensor target_c = target.contiguous();
  const bool reduced = logits.scalar_type() == at::kHalf || logits.scalar_type() == at::kBFloat16;
  const at::ScalarType acc_dtype = reduced ? at::kFloat : logits.scalar_type();
  at::Tensor loss_sum = at::empty({K}, logits.options().dtype(acc_dtype));
  at::Tensor correct = at::empty({K}, logits.options().dtype(at::kLong));
  if (K == 0) return {loss_sum, correct};
  const int64_t rows = K * B;
  at::Tensor row_loss = at::empty({std::max<int64_t>(rows, 1)}, logits.options().dtype(acc_dtype));
  at::Tensor row_correct =
      at::empty({std::max<int64_t>(rows, 1)}, logits.options().dtype(at::kInt));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "point_loss",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = logits_c.const_data_ptr<scalar_t>();
    const int64_t* t = target_c.const_data_ptr<int64_t>();
    acc_t* rl = row_loss.mutable_data_ptr<acc_t>();
    int32_t* rc = row_correct.mutable_data_ptr<int32_t>();
    if (rows > 0) {
      const int c = static_cast<int>(C);
      if (C <= 4) {
        launch_rows<scalar_t, acc_t, 4>(x, t, rl, rc, rows, B, c);
      } else if (C <= 8) {
        launch_rows<scalar_t, acc_t, 8>(x, t, rl, rc, rows, B, c);
      } else if (C <= 16) {
        launch_rows<scalar_t, acc_t, 16>(x, t, rl, rc, rows, B, c);
      } else {
        launch_rows<scalar_t, acc_t, 32>(x, t, rl, rc, rows, B, c);
      }
    }
    const int64_t blocks = std::min(K, cuda::kMaxGridX);
    point_loss_sum_kernel<acc_t><<<static_cast<unsigned>(blocks), kThreads, 0,
                                   c10::cuda::getCurrentCUDAStream()>>>(
        rl, rc, loss_sum.mutable_data_ptr<acc_t>(), correct.mutable_data_ptr<int64_t>(), K, B);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {loss_sum, correct};
}

}  // namespace
}  // namespace fastloss

TORCH_LIBRARY_IMPL(fastloss, CUDA, m) { m.impl("point_loss", &fastloss::point_loss_cuda); }
