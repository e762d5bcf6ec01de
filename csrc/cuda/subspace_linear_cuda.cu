// CUDA override of `subspace_linear` (contract in csrc/fastloss.h).
//
// Shared input x [B, I]: the device-generic path (J GEMMs plus combine) already does O(J)
// work, so it is reused as is. Per-point input x [K, B, I]: y_k = x_k W_k^T + b_k with
// W_k = sum_j c_kj W_j. Materialising all W_k would cost K * O * I memory traffic and
// storage; instead each block (a B tile, an O tile, one point k) builds its W_k tile in
// shared memory from the J basis tiles while loading it, accumulating in fp32 (fp64 for
// double), and never writes W_k to global memory. The J-fold extra reads of W hit L2,
// since every block of every point reads the same basis. b_k is formed in the epilogue.
//
// Three inner products on the same tiling idea:
//   - bf16 / fp16: tensor cores through nvcuda::wmma m16n16k16, fp32 accumulators; the
//     synthesised W_k tile is rounded to the input dtype, as the reference rounds W_k.
//   - fp32 with TF32 allowed for cuBLAS matmuls: wmma m16n16k8 tf32, the same choice the
//     reference F.linear makes under that flag.
//   - fp32 otherwise, fp64, and any dtype on a GPU/build without sm_80 code: a SIMT
//     register-blocked kernel (64x64 tile, 4x4 outputs per thread), exact FFMA. A small fit
//     (few points, small B and O) makes fewer 64x64 tiles than two per SM and leaves most of
//     the GPU idle; then the SIMT kernel runs on 32x32 tiles, four times as many blocks.
// The tensor-core kernel body only exists for __CUDA_ARCH__ >= 800; the host asks the
// runtime which PTX version the loaded kernel was built from (cudaFuncGetAttributes), so
// a build or JIT image without sm_80 code falls back to SIMT instead of running an empty
// kernel. Tiles are single-buffered (no cp.async): correctness first; several blocks per
// SM hide the load latency.
#include <ATen/Context.h>
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
#include <optional>
#include <type_traits>

#include "cuda_utils.cuh"
#include "subspace_linear_kernels.cuh"
#include "fastloss.h"

namespace fastloss {
namespace {

using cuda::ceil_div;
using linear_kernels::kMmaBM;
using linear_kernels::kMmaBN;
using linear_kernels::kMmaThreads;
using linear_kernels::linear_mma_kernel;
using linear_kernels::linear_simt_kernel;
using linear_kernels::simt_threads;

// True if `kernel` was compiled from sm_80+ code for the current device.
template <typename Kernel>
bool has_sm80_image(Kernel kernel) {
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, kernel) != cudaSuccess) {
    (void)cudaGetLastError();  // clear it; the SIMT launch reports any real problem
    return false;
  }
  int major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor,
                                        c10::cuda::current_device()));
  return attr.ptxVersion >= 80 && major >= 8;
}

// Launches the tensor-core kernel when the dtype, the TF32 setting and the loaded image
// allow it; false means the caller runs the SIMT kernel.
template <typename scalar_t, typename acc_t>
bool try_launch_mma(const scalar_t* xp, const scalar_t* wp, const acc_t* bp, const acc_t* cp,
                    scalar_t* yp, int64_t K, int64_t B, int64_t O, int64_t I, int64_t J,
                    int64_t o_tiles, dim3 grid) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    return false;
  } else {
    if (std::is_same_v<scalar_t, float> && !at::globalContext().allowTF32CuBLAS()) return false;
    constexpr int kV = 16 / sizeof(scalar_t);
    const bool vec = I % kV == 0 && cuda::is_aligned(xp, 16) && cuda::is_aligned(wp, 16);
    auto kernel = vec ? linear_mma_kernel<scalar_t, kV> : linear_mma_kernel<scalar_t, 1>;
    if (!has_sm80_image(kernel)) return false;
    kernel<<<grid, kMmaThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(xp, wp, bp, cp, yp, K, B,
                                                                       O, I, J, o_tiles);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return true;
  }
}

at::Tensor subspace_linear_cuda(const at::Tensor& x, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, const at::Tensor& coords) {
  check_subspace_linear_args(x, weight, bias, coords);
  if (x.dim() == 2) return subspace_linear_generic(x, weight, bias, coords);

  FASTLOSS_CHECK_CUDA(x, "x");
  FASTLOSS_CHECK_CUDA(weight, "weight");
  FASTLOSS_CHECK_CUDA(coords, "coords");
  FASTLOSS_CHECK_DIM(x, 3, "x");
  FASTLOSS_CHECK_DIM(weight, 3, "weight");
  FASTLOSS_CHECK_DIM(coords, 2, "coords");
  const int64_t K = x.size(0), B = x.size(1), I = x.size(2);
  const int64_t J = weight.size(0), O = weight.size(1);
  TORCH_CHECK(coords.size(0) == K && coords.size(1) == J, "coords must be [", K, ", ", J,
              "], got ", coords.sizes());
  TORCH_CHECK(weight.size(2) == I, "weight must be [J, O, ", I, "], got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "x and weight must have one dtype, got ",
              x.scalar_type(), " and ", weight.scalar_type());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "x must be floating point");
  FASTLOSS_CHECK_SAME_DEVICE(weight, x, "weight", "x");
  FASTLOSS_CHECK_SAME_DEVICE(coords, x, "coords", "x");
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) {
    FASTLOSS_CHECK_SAME_DEVICE(*bias, x, "bias", "x");
    TORCH_CHECK(bias->numel() == J * O, "bias must be [J, O] = [", J, ", ", O, "], got ",
                bias->sizes());
  }
  c10::cuda::CUDAGuard guard(x.device());

  const at::ScalarType acc = (x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16)
                                 ? at::kFloat
                                 : x.scalar_type();
  const at::Tensor x_c = x.contiguous();
  const at::Tensor w_c = weight.contiguous();
  const at::Tensor c_acc = coords.to(acc).contiguous();
  const at::Tensor b_acc = has_bias ? bias->to(acc).contiguous() : at::Tensor();
  at::Tensor y = at::empty({K, B, O}, x.options());
  if (y.numel() == 0) return y;

  static_assert(kMmaBM == 64 && kMmaBN == 64, "the 64x64 SIMT kernel shares this grid");
  const int64_t b_tiles = ceil_div(B, kMmaBM), o_tiles = ceil_div(O, kMmaBN);
  TORCH_CHECK(b_tiles * o_tiles <= std::numeric_limits<int32_t>::max(),
              "subspace_linear: B x O too large for one launch");
  const int64_t points = std::min(K, cuda::kMaxGridYZ);
  const dim3 grid(static_cast<unsigned>(b_tiles * o_tiles), 1, static_cast<unsigned>(points));
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, x.get_device()));
  const bool small_tiles = b_tiles * o_tiles * points < 2 * static_cast<int64_t>(sms);
  auto stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "subspace_linear",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x_c.const_data_ptr<scalar_t>();
    const scalar_t* wp = w_c.const_data_ptr<scalar_t>();
    const acc_t* cp = c_acc.const_data_ptr<acc_t>();
    const acc_t* bp = has_bias ? b_acc.const_data_ptr<acc_t>() : nullptr;
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    if (try_launch_mma<scalar_t>(xp, wp, bp, cp, yp, K, B, O, I, J, o_tiles, grid)) return;
    if (small_tiles) {
      constexpr int kTile = 32;
      const int64_t o_small = ceil_div(O, kTile);
      const dim3 small_grid(static_cast<unsigned>(ceil_div(B, kTile) * o_small), 1, grid.z);
      linear_simt_kernel<scalar_t, acc_t, kTile><<<small_grid, simt_threads(kTile), 0, stream>>>(
          xp, wp, bp, cp, yp, K, B, O, I, J, o_small);
    } else {
      linear_simt_kernel<scalar_t, acc_t, 64>
          <<<grid, simt_threads(64), 0, stream>>>(xp, wp, bp, cp, yp, K, B, O, I, J, o_tiles);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

}  // namespace
}  // namespace fastloss

TORCH_LIBRARY_IMPL(fastloss, CUDA, m) {
  m.impl("subspace_linear", &fastloss::subspace_linear_cuda);
}
