// Small device helpers shared by the CUDA kernels.
//
// Reductions here are fixed-order trees (warp shuffles, then one warp over the per-warp
// partials), so every kernel that uses them gives bit-identical results run to run; no
// float atomics anywhere in fastloss.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <limits>

#define FASTLOSS_CHECK_CUDA(t, name) TORCH_CHECK((t).is_cuda(), name " must be a CUDA tensor")

namespace fastloss {
namespace cuda {

constexpr int kWarpSize = 32;
// Cap on gridDim.y / gridDim.z; kernels loop when there is more work than that.
constexpr int64_t kMaxGridYZ = 65535;
// Cap on gridDim.x for grid-stride kernels (plenty to fill any GPU).
constexpr int64_t kMaxGridX = int64_t{1} << 20;

inline __host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Elements of T moved by one 16-byte access, or fewer when the data do not allow it.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

inline bool is_aligned(const void* p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log_(float x) { return logf(x); }
__device__ __forceinline__ double log_(double x) { return log(x); }
__device__ __forceinline__ float sqrt_(float x) { return sqrtf(x); }
__device__ __forceinline__ double sqrt_(double x) { return sqrt(x); }

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

// Sum over the whole block, returned to every thread. Every thread of the block must call
// it; the block size must be a multiple of 32. `scratch` holds at least 32 elements and may
// be reused by the next call (the leading barrier protects it).
template <typename T>
__device__ T block_sum(T v, T* scratch) {
  const int tid = threadIdx.x + threadIdx.y * blockDim.x;
  const int lane = tid % kWarpSize;
  const int warp = tid / kWarpSize;
  const int num_warps = (blockDim.x * blockDim.y) / kWarpSize;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < num_warps ? scratch[lane] : T(0);
    v = warp_sum(v);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  return scratch[0];
}

}  // namespace cuda
}  // namespace fastloss
