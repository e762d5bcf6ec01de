// CUDA kernels for `pointwise_batch_norm` and its backward (contracts in csrc/fastloss.h).
//
// x is [K, B, C, S] (S = product of the trailing dims). Every (k, c) pair is an independent
// batch norm over B * S values, so one block owns one (k, c) slice and does everything for
// it: reduce, then normalise or back-propagate. The slice is small enough to stay in L2
// between passes, which is why statistics use two passes (mean, then sum of squared
// deviations) instead of Welford: simpler and at least as accurate. Reductions are the
// fixed-order block_sum, so results are deterministic. The block is 2-D: threadIdx.x walks
// the contiguous S axis (coalesced for conv maps), threadIdx.y walks B.
//
// Rows, S = 1 ([K, B, C]: BatchNorm1d, or conv maps in channels-last): one (k, c) slice is
// B values C apart, so a block per slice would read one value per 32-byte sector. There a
// block owns one point and 32 channels instead: threadIdx.x walks the channels (a warp reads
// 32 consecutive values of a row), threadIdx.y every 8th row, and each channel's 8 partial
// sums are added in a fixed order (column_sum), so the result is still deterministic. That
// makes 32 times fewer blocks: a fit with fewer than two of them per SM keeps the block per
// slice, whose many blocks hide the strided reads better than a few idle SMs would.
//
// gamma_k / beta_k = coords[k] @ weight / bias are formed inside the kernel from the [J, C]
// basis (J is tiny), in the accumulation type. The [K, C] x [J, C] contractions of the
// backward (grad_weight, grad_bias, grad_coords) are done with at::mm on the per-point
// dgamma / dbeta the kernel writes.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <optional>
#include <tuple>

#include "cuda_utils.cuh"
#include "fastloss.h"

namespace fastloss {
namespace {

constexpr int kThreads = 256;

// Visits the B * S elements of slice (k, c) owned by this thread.
template <typename F>
__device__ __forceinline__ void for_slice(int64_t k, int64_t c, int64_t B, int64_t C,
                                          int64_t S, F f) {
  for (int64_t b = threadIdx.y; b < B; b += blockDim.y) {
    const int64_t row = ((k * B + b) * C + c) * S;
    for (int64_t s = threadIdx.x; s < S; s += blockDim.x) f(row + s);
  }
}

// sum_j coords[k, j] * basis[j, c], or `fallback` without a basis.
template <typename acc_t>
__device__ __forceinline__ acc_t point_affine(const acc_t* basis, const acc_t* coords,
                                              int64_t k, int64_t c, int64_t C, int64_t J,
                                              acc_t fallback) {
  if (basis == nullptr) return fallback;
  acc_t v = 0;
  for (int64_t j = 0; j < J; ++j) v += coords[k * J + j] * basis[j * C + c];
  return v;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    bn_forward_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ mean_in,
                      const acc_t* __restrict__ var_in, const acc_t* __restrict__ weight,
                      const acc_t* __restrict__ bias, const acc_t* __restrict__ coords,
                      scalar_t* __restrict__ y, acc_t* __restrict__ save_mean,
                      acc_t* __restrict__ save_invstd, int64_t K, int64_t B, int64_t C,
                      int64_t S, int64_t J, bool training, acc_t eps) {
  __shared__ acc_t scratch[cuda::kWarpSize];
  const bool leader = threadIdx.x == 0 && threadIdx.y == 0;
  for (int64_t kc = blockIdx.x; kc < K * C; kc += gridDim.x) {
    const int64_t k = kc / C, c = kc % C;
    acc_t mean, invstd;
    if (training) {
      const acc_t n = static_cast<acc_t>(B * S);
      acc_t sum = 0;
      for_slice(k, c, B, C, S, [&](int64_t i) { sum += static_cast<acc_t>(x[i]); });
      mean = cuda::block_sum(sum, scratch) / n;
      acc_t sq = 0;
      for_slice(k, c, B, C, S, [&](int64_t i) {
        const acc_t d = static_cast<acc_t>(x[i]) - mean;
        sq += d * d;
      });
      const acc_t var = cuda::block_sum(sq, scratch) / n;  // biased, as batch norm uses
      invstd = acc_t(1) / cuda::sqrt_(var + eps);
    } else {
      mean = mean_in[kc];
      invstd = acc_t(1) / cuda::sqrt_(var_in[kc] + eps);
    }
    if (leader) {
      save_mean[kc] = mean;
      save_invstd[kc] = invstd;
    }
    const acc_t scale = point_affine(weight, coords, k, c, C, J, acc_t(1)) * invstd;
    const acc_t shift = point_affine(bias, coords, k, c, C, J, acc_t(0));
    for_slice(k, c, B, C, S, [&](int64_t i) {
      y[i] = static_cast<scalar_t>((static_cast<acc_t>(x[i]) - mean) * scale + shift);
    });
  }
}

// dgamma / dbeta non-null: write sum(dy * xhat) and sum(dy) per (k, c) (also needed for
// the training-mode dx). dx non-null: write grad_x.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    bn_backward_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                       const acc_t* __restrict__ save_mean,
                       const acc_t* __restrict__ save_invstd, const acc_t* __restrict__ weight,
                       const acc_t* __restrict__ coords, scalar_t* __restrict__ dx,
                       acc_t* __restrict__ dgamma, acc_t* __restrict__ dbeta, int64_t K,
                       int64_t B, int64_t C, int64_t S, int64_t J, bool training) {
  __shared__ acc_t scratch[cuda::kWarpSize];
  const bool leader = threadIdx.x == 0 && threadIdx.y == 0;
  for (int64_t kc = blockIdx.x; kc < K * C; kc += gridDim.x) {
    const int64_t k = kc / C, c = kc % C;
    const acc_t mean = save_mean[kc], invstd = save_invstd[kc];
    acc_t sum_dy = 0, sum_dy_xmu = 0;
    if (dgamma != nullptr) {  // uniform over the block
      for_slice(k, c, B, C, S, [&](int64_t i) {
        const acc_t g = static_cast<acc_t>(dy[i]);
        sum_dy += g;
        sum_dy_xmu += g * (static_cast<acc_t>(x[i]) - mean);
      });
      sum_dy = cuda::block_sum(sum_dy, scratch);
      sum_dy_xmu = cuda::block_sum(sum_dy_xmu, scratch);
      if (leader) {
        dgamma[kc] = sum_dy_xmu * invstd;
        dbeta[kc] = sum_dy;
      }
    }
    if (dx != nullptr) {
      const acc_t scale = point_affine(weight, coords, k, c, C, J, acc_t(1)) * invstd;
      if (training) {
        const acc_t n = static_cast<acc_t>(B * S);
        const acc_t mean_dy = sum_dy / n;
        const acc_t proj = sum_dy_xmu * invstd * invstd / n;
        for_slice(k, c, B, C, S, [&](int64_t i) {
          const acc_t xmu = static_cast<acc_t>(x[i]) - mean;
          dx[i] = static_cast<scalar_t>(scale * (static_cast<acc_t>(dy[i]) - mean_dy - xmu * proj));
        });
      } else {
        for_slice(k, c, B, C, S, [&](int64_t i) {
          dx[i] = static_cast<scalar_t>(scale * static_cast<acc_t>(dy[i]));
        });
      }
    }
  }
}

// ---- rows (S = 1) ----------------------------------------------------------------------------

constexpr int kRowsX = 32, kRowsY = kThreads / kRowsX;  // 32 channels x 8 row groups

// Sum of v over threadIdx.y for each threadIdx.x, returned to every thread of the column.
// Every thread of the block must call it; the leading barrier lets the next call reuse
// `scratch` once every thread has read the previous one.
template <typename T>
__device__ __forceinline__ T column_sum(T v, T (*scratch)[kRowsX]) {
  __syncthreads();
  scratch[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  T sum = 0;
#pragma unroll
  for (int r = 0; r < kRowsY; ++r) sum += scratch[r][threadIdx.x];
  return sum;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    bn_rows_forward_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ mean_in,
                           const acc_t* __restrict__ var_in, const acc_t* __restrict__ weight,
                           const acc_t* __restrict__ bias, const acc_t* __restrict__ coords,
                           scalar_t* __restrict__ y, acc_t* __restrict__ save_mean,
                           acc_t* __restrict__ save_invstd, int64_t K, int64_t B, int64_t C,
                           int64_t J, bool training, acc_t eps) {
  __shared__ acc_t scratch[kRowsY][kRowsX];
  const int64_t c_tiles = cuda::ceil_div(C, kRowsX);
  // The loop bound is uniform over the block, so every thread reaches each column_sum.
  for (int64_t tile = blockIdx.x; tile < K * c_tiles; tile += gridDim.x) {
    const int64_t k = tile / c_tiles;
    const int64_t c = (tile % c_tiles) * kRowsX + threadIdx.x;
    const bool active = c < C;
    const int64_t kc = k * C + c;
    const scalar_t* xk = x + k * B * C + c;  // dereferenced only if active
    acc_t mean = 0, invstd = 0;
    if (training) {
      const acc_t n = static_cast<acc_t>(B);
      acc_t sum = 0;
      for (int64_t b = threadIdx.y; active && b < B; b += kRowsY) {
        sum += static_cast<acc_t>(xk[b * C]);
      }
      mean = column_sum(sum, scratch) / n;
      acc_t sq = 0;
      for (int64_t b = threadIdx.y; active && b < B; b += kRowsY) {
        const acc_t d = static_cast<acc_t>(xk[b * C]) - mean;
        sq += d * d;
      }
      invstd = acc_t(1) / cuda::sqrt_(column_sum(sq, scratch) / n + eps);  // biased variance
    } else if (active) {
      mean = mean_in[kc];
      invstd = acc_t(1) / cuda::sqrt_(var_in[kc] + eps);
    }
    if (!active) continue;  // no barrier below
    if (threadIdx.y == 0) {
      save_mean[kc] = mean;
      save_invstd[kc] = invstd;
    }
    const acc_t scale = point_affine(weight, coords, k, c, C, J, acc_t(1)) * invstd;
    const acc_t shift = point_affine(bias, coords, k, c, C, J, acc_t(0));
    scalar_t* yk = y + k * B * C + c;
    for (int64_t b = threadIdx.y; b < B; b += kRowsY) {
      yk[b * C] = static_cast<scalar_t>((static_cast<acc_t>(xk[b * C]) - mean) * scale + shift);
    }
  }
}

// bn_backward_kernel for rows: the same outputs, the same arithmetic.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    bn_rows_backward_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                            const acc_t* __restrict__ save_mean,
                            const acc_t* __restrict__ save_invstd,
                            const acc_t* __restrict__ weight, const acc_t* __restrict__ coords,
                            scalar_t* __restrict__ dx, acc_t* __restrict__ dgamma,
                            acc_t* __restrict__ dbeta, int64_t K, int64_t B, int64_t C,
                            int64_t J, bool training) {
  __shared__ acc_t scratch[kRowsY][kRowsX];
  const int64_t c_tiles = cuda::ceil_div(C, kRowsX);
  for (int64_t tile = blockIdx.x; tile < K * c_tiles; tile += gridDim.x) {
    const int64_t k = tile / c_tiles;
    const int64_t c = (tile % c_tiles) * kRowsX + threadIdx.x;
    const bool active = c < C;
    const int64_t kc = k * C + c;
    const int64_t offset = k * B * C + c;  // of x, dy and dx; used only if active
    const acc_t mean = active ? save_mean[kc] : acc_t(0);
    const acc_t invstd = active ? save_invstd[kc] : acc_t(0);
    acc_t sum_dy = 0, sum_dy_xmu = 0;
    if (dgamma != nullptr) {  // uniform over the block
      for (int64_t b = threadIdx.y; active && b < B; b += kRowsY) {
        const acc_t g = static_cast<acc_t>(dy[offset + b * C]);
        sum_dy += g;
        sum_dy_xmu += g * (static_cast<acc_t>(x[offset + b * C]) - mean);
      }
      sum_dy = column_sum(sum_dy, scratch);
      sum_dy_xmu = column_sum(sum_dy_xmu, scratch);
      if (active && threadIdx.y == 0) {
        dgamma[kc] = sum_dy_xmu * invstd;
        dbeta[kc] = sum_dy;
      }
    }
    if (dx == nullptr || !active) continue;  // no barrier below
    const acc_t scale = point_affine(weight, coords, k, c, C, J, acc_t(1)) * invstd;
    if (training) {
      const acc_t n = static_cast<acc_t>(B);
      const acc_t mean_dy = sum_dy / n;
      const acc_t proj = sum_dy_xmu * invstd * invstd / n;
      for (int64_t b = threadIdx.y; b < B; b += kRowsY) {
        const int64_t i = offset + b * C;
        const acc_t xmu = static_cast<acc_t>(x[i]) - mean;
        dx[i] = static_cast<scalar_t>(scale * (static_cast<acc_t>(dy[i]) - mean_dy - xmu * proj));
      }
    } else {
      for (int64_t b = threadIdx.y; b < B; b += kRowsY) {
        const int64_t i = offset + b * C;
        dx[i] = static_cast<scalar_t>(scale * static_cast<acc_t>(dy[i]));
      }
    }
  }
}

// Blocks for the rows kernels: one per (point, 32 channels), looping past the cap.
unsigned rows_blocks(int64_t K, int64_t C) {
  return static_cast<unsigned>(std::min(K * cuda::ceil_div(C, kRowsX), cuda::kMaxGridX));
}

// The rows kernels for S = 1 when they make at least two blocks per SM.
bool use_rows_kernels(int64_t K, int64_t C, int64_t S, const at::Tensor& x) {
  if (S != 1) return false;
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, x.get_device()));
  return K * cuda::ceil_div(C, kRowsX) >= 2 * static_cast<int64_t>(sms);
}

// 2-D block: x along the contiguous S axis, y along B; 256 threads in all.
dim3 slice_block(int64_t S) {
  int tx = 1;
  while (tx < 32 && tx < S) tx *= 2;
  return dim3(tx, kThreads / tx);
}

at::ScalarType opmath_dtype(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

// Optional [J, C] basis (or [K, C] state) checked and converted to the accumulation type.
std::optional<at::Tensor> small_operand(const std::optional<at::Tensor>& t, const at::Tensor& x,
                                        int64_t rows, int64_t C, at::ScalarType acc,
                                        const char* name) {
  if (!t.has_value() || !t->defined()) return std::nullopt;
  TORCH_CHECK(t->is_cuda() && t->device() == x.device(), name, " must be on ", x.device());
  TORCH_CHECK(at::isFloatingType(t->scalar_type()), name, " must be floating point");
  TORCH_CHECK(t->numel() == rows * C, name, " must have ", rows, " x ", C, " elements, got ",
              t->sizes());
  return t->to(acc).contiguous().view({rows, C});
}

template <typename T>
const T* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t ? t->const_data_ptr<T>() : nullptr;
}

struct Dims {
  int64_t K, B, C, S, J;
};

Dims check_common(const at::Tensor& x, const at::Tensor& coords, const char* op) {
  TORCH_CHECK(x.is_cuda() && coords.is_cuda() && x.device() == coords.device(), op,
              ": x and coords must be on one CUDA device, got ", x.device(), " and ",
              coords.device());
  TORCH_CHECK(x.dim() >= 3, op, ": x must be [K, B, C, *], got ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": x must be floating point");
  TORCH_CHECK(coords.dim() == 2 && coords.size(0) == x.size(0), op,
              ": coords must be [K, J] with K = x.size(0) = ", x.size(0), ", got ", coords.sizes());
  TORCH_CHECK(at::isFloatingType(coords.scalar_type()), op, ": coords must be floating point");
  Dims d{x.size(0), x.size(1), x.size(2), 1, coords.size(1)};
  for (int64_t i = 3; i < x.dim(); ++i) d.S *= x.size(i);
  return d;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pointwise_batch_norm_cuda(
    const at::Tensor& x, const std::optional<at::Tensor>& mean,
    const std::optional<at::Tensor>& var, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& coords, bool training,
    double eps) {
  const Dims d = check_common(x, coords, "pointwise_batch_norm");
  TORCH_CHECK(!training || d.B * d.S > 1,
              "pointwise_batch_norm: training needs more than one value per channel, got x ",
              x.sizes());
  const at::ScalarType acc = opmath_dtype(x.scalar_type());
  c10::cuda::CUDAGuard guard(x.device());
  const auto w = small_operand(weight, x, d.J, d.C, acc, "pointwise_batch_norm: weight");
  const auto b = small_operand(bias, x, d.J, d.C, acc, "pointwise_batch_norm: bias");
  std::optional<at::Tensor> m, v;
  if (!training) {
    TORCH_CHECK(mean.has_value() && var.has_value() && mean->defined() && var->defined(),
                "pointwise_batch_norm: eval mode needs the running mean and var");
    m = small_operand(mean, x, d.K, d.C, acc, "pointwise_batch_norm: mean");
    v = small_operand(var, x, d.K, d.C, acc, "pointwise_batch_norm: var");
  }
  const at::Tensor x_c = x.contiguous();
  const at::Tensor c_acc = coords.to(acc).contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options());
  at::Tensor save_mean = at::empty({d.K, d.C}, x.options().dtype(acc));
  at::Tensor save_invstd = at::empty({d.K, d.C}, x.options().dtype(acc));
  if (d.K * d.C == 0) return {y, save_mean, save_invstd};

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pointwise_batch_norm",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto stream = c10::cuda::getCurrentCUDAStream();
    if (use_rows_kernels(d.K, d.C, d.S, x)) {
      bn_rows_forward_kernel<scalar_t, acc_t>
          <<<rows_blocks(d.K, d.C), dim3(kRowsX, kRowsY), 0, stream>>>(
              x_c.const_data_ptr<scalar_t>(), ptr_or_null<acc_t>(m), ptr_or_null<acc_t>(v),
              ptr_or_null<acc_t>(w), ptr_or_null<acc_t>(b), c_acc.const_data_ptr<acc_t>(),
              y.mutable_data_ptr<scalar_t>(), save_mean.mutable_data_ptr<acc_t>(),
              save_invstd.mutable_data_ptr<acc_t>(), d.K, d.B, d.C, d.J, training,
              static_cast<acc_t>(eps));
    } else {
      const unsigned blocks = static_cast<unsigned>(std::min(d.K * d.C, cuda::kMaxGridX));
      bn_forward_kernel<scalar_t, acc_t><<<blocks, slice_block(d.S), 0, stream>>>(
          x_c.const_data_ptr<scalar_t>(), ptr_or_null<acc_t>(m), ptr_or_null<acc_t>(v),
          ptr_or_null<acc_t>(w), ptr_or_null<acc_t>(b), c_acc.const_data_ptr<acc_t>(),
          y.mutable_data_ptr<scalar_t>(), save_mean.mutable_data_ptr<acc_t>(),
          save_invstd.mutable_data_ptr<acc_t>(), d.K, d.B, d.C, d.S, d.J, training,
          static_cast<acc_t>(eps));
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, save_mean, save_invstd};
}

Grads pointwise_batch_norm_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& save_mean,
    const at::Tensor& save_invstd, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& coords, bool training,
    std::array<bool, 4> output_mask) {
  const Dims d = check_common(x, coords, "pointwise_batch_norm_backward");
  FASTLOSS_CHECK_SAME_DEVICE(grad_out, x, "pointwise_batch_norm_backward: grad_out", "x");
  TORCH_CHECK(grad_out.sizes() == x.sizes(),
              "pointwise_batch_norm_backward: grad_out must have the shape of x ", x.sizes(),
              ", got ", grad_out.sizes());
  const at::ScalarType acc = opmath_dtype(x.scalar_type());
  c10::cuda::CUDAGuard guard(x.device());
  const auto w = small_operand(weight, x, d.J, d.C, acc, "pointwise_batch_norm: weight");
  const auto b = small_operand(bias, x, d.J, d.C, acc, "pointwise_batch_norm: bias");
  const at::Tensor sm =
      *small_operand(save_mean, x, d.K, d.C, acc, "pointwise_batch_norm_backward: save_mean");
  const at::Tensor si =
      *small_operand(save_invstd, x, d.K, d.C, acc, "pointwise_batch_norm_backward: save_invstd");
  const at::Tensor x_c = x.contiguous();
  const at::Tensor dy_c = grad_out.to(x.scalar_type()).contiguous();
  const at::Tensor c_acc = coords.to(acc).contiguous();

  const bool need_dx = output_mask[0];
  const bool need_dw = output_mask[1] && w.has_value();
  const bool need_db = output_mask[2] && b.has_value();
  const bool need_dc = output_mask[3];
  const bool need_stats =
      (need_dx && training) || need_dw || need_db || (need_dc && (w || b));
  at::Tensor dx = need_dx ? at::empty(x.sizes(), x.options()) : at::Tensor();
  at::Tensor dgamma, dbeta;
  if (need_stats) {
    dgamma = at::empty({d.K, d.C}, x.options().dtype(acc));
    dbeta = at::empty({d.K, d.C}, x.options().dtype(acc));
  }
  if (d.K * d.C > 0 && (need_dx || need_stats)) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                    "pointwise_batch_norm_backward", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      auto stream = c10::cuda::getCurrentCUDAStream();
      const scalar_t* dyp = dy_c.const_data_ptr<scalar_t>();
      const scalar_t* xp = x_c.const_data_ptr<scalar_t>();
      scalar_t* dxp = need_dx ? dx.mutable_data_ptr<scalar_t>() : nullptr;
      acc_t* dgp = need_stats ? dgamma.mutable_data_ptr<acc_t>() : nullptr;
      acc_t* dbp = need_stats ? dbeta.mutable_data_ptr<acc_t>() : nullptr;
      if (use_rows_kernels(d.K, d.C, d.S, x)) {
        bn_rows_backward_kernel<scalar_t, acc_t>
            <<<rows_blocks(d.K, d.C), dim3(kRowsX, kRowsY), 0, stream>>>(
                dyp, xp, sm.const_data_ptr<acc_t>(), si.const_data_ptr<acc_t>(),
                ptr_or_null<acc_t>(w), c_acc.const_data_ptr<acc_t>(), dxp, dgp, dbp, d.K, d.B,
                d.C, d.J, training);
      } else {
        const unsigned blocks = static_cast<unsigned>(std::min(d.K * d.C, cuda::kMaxGridX));
        bn_backward_kernel<scalar_t, acc_t><<<blocks, slice_block(d.S), 0, stream>>>(
            dyp, xp, sm.const_data_ptr<acc_t>(), si.const_data_ptr<acc_t>(),
            ptr_or_null<acc_t>(w), c_acc.const_data_ptr<acc_t>(), dxp, dgp, dbp, d.K, d.B, d.C,
            d.S, d.J, training);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  const auto none = [&] { return at::empty({0}, x.options()); };
  at::Tensor grad_x = need_dx ? dx : none();
  at::Tensor grad_w = need_dw ? at::mm(c_acc.t(), dgamma).to(weight->scalar_type()) : none();
  at::Tensor grad_b = need_db ? at::mm(c_acc.t(), dbeta).to(bias->scalar_type()) : none();
  at::Tensor grad_c = none();
  if (need_dc) {
    // grad_coords[k, j] = sum_c dgamma[k, c] * weight[j, c] + dbeta[k, c] * bias[j, c]
    at::Tensor gc;
    if (w) gc = at::mm(dgamma, w->t());
    if (b) gc = gc.defined() ? at::addmm(gc, dbeta, b->t()) : at::mm(dbeta, b->t());
    grad_c = gc.defined() ? gc.to(coords.scalar_type()) : at::zeros({d.K, d.J}, coords.options());
  }
  return {grad_x, grad_w, grad_b, grad_c};
}

}  // namespace
}  // namespace fastloss

TORCH_LIBRARY_IMPL(fastloss, CUDA, m) {
  m.impl("pointwise_batch_norm", &fastloss::pointwise_batch_norm_cuda);
  m.impl("pointwise_batch_norm_backward", &fastloss::pointwise_batch_norm_backward_cuda);
}
