// CPU kernels for the two building blocks of every subspace layer:
//   synthesize: per-point weights  W_k = sum_j c_kj W_j
//   combine:    shared-input outputs y_k = sum_j c_kj (x W_j^T + b_j), from the J products
// Both are memory-bound and accumulate in opmath (float for bf16/fp16).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <torch/library.h>

#include <vector>

#include "synthesize_cpu.h"

namespace fastloss {
namespace {

bool is_reduced(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

template <typename opmath_t>
std::vector<opmath_t> coords_as_opmath(const at::Tensor& coords, at::ScalarType data_type) {
  auto c = coords.to(at::toOpMathType(data_type)).contiguous();
  return std::vector<opmath_t>(c.data_ptr<opmath_t>(), c.data_ptr<opmath_t>() + c.numel());
}

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

at::Tensor combine_cpu(const at::Tensor& parts_in, const at::Tensor& coords,
                       const std::optional<at::Tensor>& bias_in) {
  FASTLOSS_CHECK_DIM(parts_in, 5, "combine: parts [B, G, J, C, S]");
  FASTLOSS_CHECK_DIM(coords, 2, "combine: coords");
  const auto parts = parts_in.contiguous();
  const int64_t B = parts.size(0), G = parts.size(1), J = parts.size(2), C = parts.size(3),
                S = parts.size(4), K = coords.size(0);
  TORCH_CHECK(coords.size(1) == J, "combine: coords is [K, ", coords.size(1), "] but parts has J = ", J);
  at::Tensor bias;
  if (bias_in.has_value() && bias_in->defined()) {
    bias = bias_in->contiguous();
    TORCH_CHECK(bias.numel() == J * G * C, "combine: bias must have J*G*C = ", J * G * C,
                " elements, got ", bias.numel());
  }
  auto out = at::empty({K, B, G, C, S}, parts.options());
  if (out.numel() == 0) return out;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, parts.scalar_type(), "combine_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const auto c = coords_as_opmath<opmath_t>(coords, parts.scalar_type());
    // Per-point bias, b_k = sum_j c_kj b_j, for all (g, c).
    std::vector<opmath_t> bias_k(K * G * C, opmath_t(0));
    if (bias.defined()) {
      const scalar_t* b = bias.data_ptr<scalar_t>();
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < J; ++j)
          for (int64_t gc = 0; gc < G * C; ++gc)
            bias_k[k * G * C + gc] += c[k * J + j] * static_cast<opmath_t>(b[j * G * C + gc]);
    }
    const scalar_t* p = parts.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const int64_t CS = C * S;
    // One task = one (k, b, g) slab of C*S outputs; its J input slabs are contiguous.
    at::parallel_for(0, K * B * G, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, CS * J)),
                     [&](int64_t begin, int64_t end) {
      std::vector<opmath_t> acc(CS);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t g = t % G, b = (t / G) % B, k = t / (G * B);
        const opmath_t* bk = bias_k.data() + (k * G + g) * C;
        for (int64_t ch = 0; ch < C; ++ch)
          std::fill(acc.begin() + ch * S, acc.begin() + (ch + 1) * S, bk[ch]);
        const scalar_t* src = p + ((b * G + g) * J) * CS;
        for (int64_t j = 0; j < J; ++j) {
          const opmath_t ckj = c[k * J + j];
          const scalar_t* row = src + j * CS;
          for (int64_t i = 0; i < CS; ++i) acc[i] += ckj * static_cast<opmath_t>(row[i]);
        }
        scalar_t* dst = o + t * CS;
        for (int64_t i = 0; i < CS; ++i) dst[i] = static_cast<scalar_t>(acc[i]);
      }
    });
  });
  return out;
}

TORCH_LIBRARY_IMPL(fastloss, CPU, m) {
  m.impl("synthesize", &synthesize_cpu);
  m.impl("combine", &combine_cpu);
}

}  // namespace fastloss
