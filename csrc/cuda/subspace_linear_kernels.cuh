// Tiled per-point linear kernels for subspace_linear_cuda.cu (design notes there).
//
// y[k, b, o] = sum_i x[k, b, i] * W_k[o, i] + b_k[o], W_k = sum_j coords[k, j] * W[j]:
// grid.x = (B tile, O tile) pairs, grid.z = points k (looping past 65535). Each block builds
// the W_k tile from the J basis tiles in shared memory, never in global memory.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "cuda_utils.cuh"

namespace fastloss {
namespace linear_kernels {

namespace wmma = nvcuda::wmma;
using cuda::Vec;

// Tile loading, shared by both kernels: each thread owns kPerThread consecutive columns
// of one tile row (x row b, or W row o), so it needs one row pointer and one bounds check,
// and its loads are a few vectors (or scalars) at immediate offsets. For W it accumulates
// sum_j c_kj * W_j[o, i..] over the J basis points in registers before one store.

// ---------------------------------------------------------------- SIMT path
// Square tiles of kTile (B) x kTile (O), 4 x 4 outputs per thread: 64 (256 threads) by
// default, 32 (64 threads, four times the blocks) when 64 would leave SMs idle.
constexpr int kSimtBK = 16;

__host__ __device__ constexpr int simt_threads(int tile) { return (tile / 4) * (tile / 4); }

template <typename scalar_t, typename acc_t, int kTile>
__global__ void __launch_bounds__(simt_threads(kTile))
    linear_simt_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                       const acc_t* __restrict__ bias, const acc_t* __restrict__ coords,
                       scalar_t* __restrict__ y, int64_t K, int64_t B, int64_t O, int64_t I,
                       int64_t J, int64_t o_tiles) {
  constexpr int kThreads = simt_threads(kTile);
  constexpr int kThreadsPerRow = kThreads / kTile;       // 4 (tile 64), 2 (tile 32)
  constexpr int kPerThread = kSimtBK / kThreadsPerRow;  // 4, 8
  static_assert(kThreadsPerRow * kPerThread == kSimtBK, "the loaders cover a tile row");
  // Both tiles stored i-major so the 4x4 micro-kernel reads contiguous runs.
  __shared__ acc_t xs[kSimtBK][kTile + 4];
  __shared__ acc_t ws[kSimtBK][kTile + 4];
  const int tid = threadIdx.x;
  const int64_t b0 = (blockIdx.x / o_tiles) * kTile;
  const int64_t o0 = (blockIdx.x % o_tiles) * kTile;
  const int lrow = tid / kThreadsPerRow, lcol = (tid % kThreadsPerRow) * kPerThread;
  const bool x_row_ok = b0 + lrow < B, w_row_ok = o0 + lrow < O;
  // compute: rows tm*4.., cols tn*4..
  const int tm = tid / (kTile / 4), tn = tid % (kTile / 4);
  for (int64_t k = blockIdx.z; k < K; k += gridDim.z) {
    const scalar_t* x_row = x + (k * B + b0 + lrow) * I;  // dereferenced only if x_row_ok
    const scalar_t* w_row = w + (o0 + lrow) * I;           // dereferenced only if w_row_ok
    const acc_t* ck = coords + k * J;
    acc_t acc[4][4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
#pragma unroll
      for (int p = 0; p < 4; ++p) acc[q][p] = acc_t(0);
    }
    for (int64_t i0 = 0; i0 < I; i0 += kSimtBK) {
      const int64_t ic = i0 + lcol;
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) {
        xs[lcol + e][lrow] =
            (x_row_ok && ic + e < I) ? static_cast<acc_t>(x_row[ic + e]) : acc_t(0);
      }
      acc_t wv[kPerThread];
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) wv[e] = acc_t(0);
      if (w_row_ok) {
#pragma unroll 1
        for (int64_t j = 0; j < J; ++j) {
          const acc_t c = ck[j];
          const scalar_t* p = w_row + j * O * I + ic;
#pragma unroll
          for (int e = 0; e < kPerThread; ++e) {
            if (ic + e < I) wv[e] += c * static_cast<acc_t>(p[e]);
          }
        }
      }
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) ws[lcol + e][lrow] = wv[e];
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kSimtBK; ++kk) {
        acc_t a[4], bw[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          a[q] = xs[kk][tm * 4 + q];
          bw[q] = ws[kk][tn * 4 + q];
        }
#pragma unroll
        for (int q = 0; q < 4; ++q) {
#pragma unroll
          for (int p = 0; p < 4; ++p) acc[q][p] += a[q] * bw[p];
        }
      }
      __syncthreads();  // tiles are overwritten by the next step
    }
    acc_t bv[4];
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      const int64_t o = o0 + tn * 4 + p;
      bv[p] = 0;
      if (bias != nullptr && o < O) {
        for (int64_t j = 0; j < J; ++j) bv[p] += ck[j] * bias[j * O + o];
      }
    }
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t b = b0 + tm * 4 + q;
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        const int64_t o = o0 + tn * 4 + p;
        if (b < B && o < O) y[(k * B + b) * O + o] = static_cast<scalar_t>(acc[q][p] + bv[p]);
      }
    }
  }
}

// ---------------------------------------------------------------- tensor-core path
constexpr int kMmaBM = 64, kMmaBN = 64, kMmaBK = 32, kMmaThreads = 128;  // 4 warps, 32x32 each

template <typename scalar_t>
struct MmaConfig;
template <>
struct MmaConfig<c10::Half> {
  using smem_t = __half;
  using frag_t = __half;
  static constexpr int kStep = 16, kPad = 8;
  static __device__ __forceinline__ smem_t from_float(float v) { return __float2half_rn(v); }
};
template <>
struct MmaConfig<c10::BFloat16> {
  using smem_t = __nv_bfloat16;
  using frag_t = __nv_bfloat16;
  static constexpr int kStep = 16, kPad = 8;
  static __device__ __forceinline__ smem_t from_float(float v) { return __float2bfloat16_rn(v); }
};
template <>
struct MmaConfig<float> {
  using smem_t = float;
  using frag_t = wmma::precision::tf32;
  static constexpr int kStep = 8, kPad = 4;
  static __device__ __forceinline__ smem_t from_float(float v) { return v; }
};

// V elements per global access: 16 bytes when I % V == 0 and x, W are 16-byte aligned
// (then a vector is wholly inside or wholly outside [0, I)), else 1. The smem row pitch
// kMmaBK + kPad is a multiple of 16 bytes (wmma ldm rule) and staggers rows across banks;
// every fragment pointer is a multiple of 16 rows / 8 or 16 columns from a 128-byte aligned
// base, which keeps the 32-byte alignment wmma::load/store_matrix_sync require.
template <typename scalar_t, int V>
__global__ void __launch_bounds__(kMmaThreads)
    linear_mma_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                      const float* __restrict__ bias, const float* __restrict__ coords,
                      scalar_t* __restrict__ y, int64_t K, int64_t B, int64_t O, int64_t I,
                      int64_t J, int64_t o_tiles) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using Cfg = MmaConfig<scalar_t>;
  using smem_t = typename Cfg::smem_t;
  using frag_t = typename Cfg::frag_t;
  using XV = Vec<scalar_t, V>;
  using SV = Vec<smem_t, V>;
  constexpr int kStep = Cfg::kStep;
  constexpr int LD = kMmaBK + Cfg::kPad;
  constexpr int LDC = kMmaBN + 4;
  constexpr int kTileBytes = (kMmaBM + kMmaBN) * LD * static_cast<int>(sizeof(smem_t));
  constexpr int kOutBytes = kMmaBM * LDC * static_cast<int>(sizeof(float));
  constexpr int kThreadsPerRow = kMmaThreads / kMmaBM;  // 2
  constexpr int kPerThread = kMmaBK / kThreadsPerRow;   // 16
  static_assert(sizeof(smem_t) == sizeof(scalar_t), "x tile is copied bit for bit");
  static_assert(kMmaBM == kMmaBN && kPerThread % V == 0, "one loader mapping for both tiles");

  // x tile [BM][LD], W_k tile [BN][LD] (= W_k^T as a col-major B operand); after the main
  // loop the same bytes hold the fp32 output tile [BM][LDC].
  __shared__ __align__(128) unsigned char smem[kTileBytes > kOutBytes ? kTileBytes : kOutBytes];
  smem_t* xs = reinterpret_cast<smem_t*>(smem);
  smem_t* ws = xs + kMmaBM * LD;
  float* cs = reinterpret_cast<float*>(smem);

  const int tid = threadIdx.x, warp = tid / 32;
  const int wm = warp / 2, wn = warp % 2;  // this warp's 32x32 block of the output tile
  const int64_t b0 = (blockIdx.x / o_tiles) * kMmaBM;
  const int64_t o0 = (blockIdx.x % o_tiles) * kMmaBN;
  const int lrow = tid / kThreadsPerRow, lcol = (tid % kThreadsPerRow) * kPerThread;
  const bool x_row_ok = b0 + lrow < B, w_row_ok = o0 + lrow < O;

  for (int64_t k = blockIdx.z; k < K; k += gridDim.z) {
    const scalar_t* x_row = x + (k * B + b0 + lrow) * I;  // dereferenced only if x_row_ok
    const scalar_t* w_row = w + (o0 + lrow) * I;           // dereferenced only if w_row_ok
    const float* ck = coords + k * J;
    wmma::fragment<wmma::accumulator, 16, 16, kStep, float> acc[2][2];
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
      for (int ni = 0; ni < 2; ++ni) wmma::fill_fragment(acc[mi][ni], 0.0f);
    }
    for (int64_t i0 = 0; i0 < I; i0 += kMmaBK) {
      const int64_t ic = i0 + lcol;
#pragma unroll
      for (int e = 0; e < kPerThread; e += V) {
        XV xv;
        if (x_row_ok && ic + e < I) {
          xv = *reinterpret_cast<const XV*>(x_row + ic + e);
        } else {
#pragma unroll
          for (int t = 0; t < V; ++t) xv.v[t] = scalar_t(0);
        }
        *reinterpret_cast<XV*>(xs + lrow * LD + lcol + e) = xv;
      }
      float wacc[kPerThread];
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) wacc[e] = 0.0f;
      if (w_row_ok) {
#pragma unroll 1
        for (int64_t j = 0; j < J; ++j) {
          const float c = ck[j];
          const scalar_t* p = w_row + j * O * I + ic;
#pragma unroll
          for (int e = 0; e < kPerThread; e += V) {
            if (ic + e < I) {
              const XV wv = *reinterpret_cast<const XV*>(p + e);
#pragma unroll
              for (int t = 0; t < V; ++t) wacc[e + t] += c * static_cast<float>(wv.v[t]);
            }
          }
        }
      }
#pragma unroll
      for (int e = 0; e < kPerThread; e += V) {
        SV sv;
#pragma unroll
        for (int t = 0; t < V; ++t) sv.v[t] = Cfg::from_float(wacc[e + t]);
        *reinterpret_cast<SV*>(ws + lrow * LD + lcol + e) = sv;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kMmaBK; kk += kStep) {
        wmma::fragment<wmma::matrix_a, 16, 16, kStep, frag_t, wmma::row_major> fa[2];
        wmma::fragment<wmma::matrix_b, 16, 16, kStep, frag_t, wmma::col_major> fb[2];
#pragma unroll
        for (int t = 0; t < 2; ++t) {
          wmma::load_matrix_sync(fa[t], xs + (wm * 32 + t * 16) * LD + kk, LD);
          wmma::load_matrix_sync(fb[t], ws + (wn * 32 + t * 16) * LD + kk, LD);
          if constexpr (std::is_same_v<scalar_t, float>) {
#pragma unroll
            for (int e = 0; e < fa[t].num_elements; ++e) {
              fa[t].x[e] = wmma::__float_to_tf32(fa[t].x[e]);
            }
#pragma unroll
            for (int e = 0; e < fb[t].num_elements; ++e) {
              fb[t].x[e] = wmma::__float_to_tf32(fb[t].x[e]);
            }
          }
        }
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
          for (int ni = 0; ni < 2; ++ni) wmma::mma_sync(acc[mi][ni], fa[mi], fb[ni], acc[mi][ni]);
        }
      }
      __syncthreads();  // tiles are overwritten by the next step (or by the output tile)
    }
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
      for (int ni = 0; ni < 2; ++ni) {
        wmma::store_matrix_sync(cs + (wm * 32 + mi * 16) * LDC + wn * 32 + ni * 16, acc[mi][ni],
                                LDC, wmma::mem_row_major);
      }
    }
    __syncthreads();
    const int col = tid % kMmaBN;
    const int64_t o = o0 + col;
    float bv = 0.0f;
    if (bias != nullptr && o < O) {
      for (int64_t j = 0; j < J; ++j) bv += ck[j] * bias[j * O + o];
    }
    for (int row = tid / kMmaBN; row < kMmaBM; row += kMmaThreads / kMmaBN) {
      const int64_t b = b0 + row;
      if (b < B && o < O) y[(k * B + b) * O + o] = static_cast<scalar_t>(cs[row * LDC + col] + bv);
    }
    __syncthreads();  // the output tile aliases the next point's input tiles
  }
#endif
}

}  // namespace linear_kernels
}  // namespace fastloss
