// Per-point batch norm on x [K, B, C, S] (S = flattened trailing dims).
// Every point k has its own statistics over (B, S) and its own affine parameters
// gamma_k = coords[k] @ weight, beta_k = coords[k] @ bias, so the K points behave like K
// independent BatchNorm modules. Reductions run per (k, c) in two passes (mean, then
// centred squares) in opmath for accuracy; the elementwise parts run per (k, b) slab.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "pointwise_batch_norm_cpu.h"

namespace fastloss {
namespace {

struct Layout {
  int64_t K, B, C, S;
};

Layout layout_of(const at::Tensor& x, const at::Tensor& coords) {
  TORCH_CHECK(x.dim() >= 3, "pointwise_batch_norm: x must be [K, B, C, ...], got ", x.dim(), " dims");
  TORCH_CHECK(coords.dim() == 2 && coords.size(0) == x.size(0),
              "pointwise_batch_norm: coords must be [K, J] with K = ", x.size(0));
  const int64_t S = x.dim() == 3 ? 1 : x.numel() / (x.size(0) * x.size(1) * x.size(2));
  return {x.size(0), x.size(1), x.size(2), S};
}

// gamma/beta [K, C] in opmath: coords @ param, or the constant when the param is absent.
at::Tensor affine_per_point(const std::optional<at::Tensor>& param, const at::Tensor& coords,
                            int64_t C, at::ScalarType opmath, double fill) {
  if (!param.has_value() || !param->defined()) {
    auto t = at::empty({coords.size(0), C}, coords.options().dtype(opmath));
    return t.fill_(fill);
  }
  TORCH_CHECK(param->dim() == 2 && param->size(0) == coords.size(1) && param->size(1) == C,
              "pointwise_batch_norm: weight/bias must be [J, C] = [", coords.size(1), ", ", C,
              "], got ", param->sizes());
  return at::mm(coords.to(opmath), param->to(opmath)).contiguous();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> pointwise_batch_norm_cpu(
    const at::Tensor& x_in, const std::optional<at::Tensor>& mean_in,
    const std::optional<at::Tensor>& var_in, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& coords, bool training, double eps) {
  const auto L = layout_of(x_in, coords);
  const auto x = x_in.contiguous();
  const auto opmath = at::toOpMathType(x.scalar_type());
  const auto gamma = affine_per_point(weight, coords, L.C, opmath, 1.0);
  const auto beta = affine_per_point(bias, coords, L.C, opmath, 0.0);
  at::Tensor mean, invstd;
  if (training) {
    TORCH_CHECK(L.B * L.S > 1, "pointwise_batch_norm: training needs more than one value per "
                "channel (got B = ", L.B, ", spatial size ", L.S, ")");
    mean = at::empty({L.K, L.C}, x.options().dtype(opmath));
    invstd = at::empty({L.K, L.C}, x.options().dtype(opmath));
  } else {
    TORCH_CHECK(mean_in.has_value() && var_in.has_value(),
                "pointwise_batch_norm: eval mode needs running mean and var [K, C]");
    TORCH_CHECK(mean_in->sizes() == at::IntArrayRef({L.K, L.C}) &&
                    var_in->sizes() == at::IntArrayRef({L.K, L.C}),
                "pointwise_batch_norm: running mean/var must be [K, C] = [", L.K, ", ", L.C, "]");
    mean = mean_in->to(opmath).contiguous();
    invstd = (var_in->to(opmath) + eps).rsqrt().contiguous();
  }
  auto y = at::empty_like(x);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pointwise_batch_norm_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    opmath_t* mp = mean.data_ptr<opmath_t>();
    opmath_t* ip = invstd.data_ptr<opmath_t>();
    const int64_t CS = L.C * L.S;
    if (training && L.S == 1) {
      // [K, N, C] rows (BatchNorm1d, or 2D activations in channels-last): every read is a
      // contiguous row, and one pass gathers sums and sums of squares of x − pivot (the
      // first row, which keeps E[v²] − E[v]² well conditioned), in float over blocks of
      // rows and in double across blocks. The rows are split into fixed ranges, one per
      // task, so the result does not depend on scheduling; partial sums are reduced in order.
      constexpr int64_t kRows = 256, kTile = 64;
      const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), L.B / 64));
      const int64_t span = (L.B + tasks - 1) / tasks;
      std::vector<double> part(2 * tasks * L.C);
      std::vector<opmath_t> pivot(L.C);
      for (int64_t k = 0; k < L.K; ++k) {
        std::fill(part.begin(), part.end(), 0.0);
        const scalar_t* base = xp + k * L.B * L.C;
        for (int64_t c = 0; c < L.C; ++c) pivot[c] = static_cast<opmath_t>(base[c]);
        at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
          for (int64_t t = t0; t < t1; ++t) {
            double* sum = part.data() + 2 * t * L.C;
            double* sq = sum + L.C;
            const int64_t b_end = std::min(L.B, (t + 1) * span);
            for (int64_t c0 = 0; c0 < L.C; c0 += kTile) {
              const int64_t nc = std::min(kTile, L.C - c0);
              const opmath_t* pv = pivot.data() + c0;
              for (int64_t r0 = t * span; r0 < b_end; r0 += kRows) {
                opmath_t s[kTile] = {}, q[kTile] = {};
                for (int64_t b = r0; b < std::min(b_end, r0 + kRows); ++b) {
                  const scalar_t* row = base + b * L.C + c0;
                  for (int64_t c = 0; c < nc; ++c) {
                    const opmath_t v = static_cast<opmath_t>(row[c]) - pv[c];
                    s[c] += v;
                    q[c] += v * v;
                  }
                }
                for (int64_t c = 0; c < nc; ++c) {
                  sum[c0 + c] += s[c];
                  sq[c0 + c] += q[c];
                }
              }
            }
          }
        });
        for (int64_t c = 0; c < L.C; ++c) {
          double sum = 0, sq = 0;
          for (int64_t t = 0; t < tasks; ++t) {
            sum += part[2 * t * L.C + c];
            sq += part[(2 * t + 1) * L.C + c];
          }
          const double shift = sum / L.B, var = std::max(0.0, sq / L.B - shift * shift);
          mp[k * L.C + c] = static_cast<opmath_t>(pivot[c] + shift);
          ip[k * L.C + c] = static_cast<opmath_t>(1.0 / std::sqrt(var + eps));
        }
      }
    } else if (training) {
      at::parallel_for(0, L.K * L.C, 1, [&](int64_t begin, int64_t end) {
        for (int64_t kc = begin; kc < end; ++kc) {
          const int64_t k = kc / L.C, c = kc % L.C;
          const scalar_t* base = xp + k * L.B * CS + c * L.S;
          opmath_t sum = 0;
          for (int64_t b = 0; b < L.B; ++b)
            for (int64_t s = 0; s < L.S; ++s) sum += static_cast<opmath_t>(base[b * CS + s]);
          const opmath_t m = sum / static_cast<opmath_t>(L.B * L.S);
          opmath_t sq = 0;
          for (int64_t b = 0; b < L.B; ++b)
            for (int64_t s = 0; s < L.S; ++s) {
              const opmath_t d = static_cast<opmath_t>(base[b * CS + s]) - m;
              sq += d * d;
            }
          mp[kc] = m;
          ip[kc] = opmath_t(1) / std::sqrt(sq / static_cast<opmath_t>(L.B * L.S) + static_cast<opmath_t>(eps));
        }
      });
    }
    // y = x * scale + shift with scale = invstd * gamma, shift = beta - mean * scale per (k, c).
    std::vector<opmath_t> scale(L.K * L.C), shift(L.K * L.C);
    const opmath_t* gp = gamma.data_ptr<opmath_t>();
    const opmath_t* bp = beta.data_ptr<opmath_t>();
    for (int64_t kc = 0; kc < L.K * L.C; ++kc) {
      scale[kc] = ip[kc] * gp[kc];
      shift[kc] = bp[kc] - mp[kc] * scale[kc];
    }
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, L.K * L.B, L.S == 1 ? 64 : 1, [&](int64_t begin, int64_t end) {
      for (int64_t kb = begin; kb < end; ++kb) {
        const opmath_t* sc = scale.data() + (kb / L.B) * L.C;
        const opmath_t* sh = shift.data() + (kb / L.B) * L.C;
        const scalar_t* src = xp + kb * CS;
        scalar_t* dst = yp + kb * CS;
        if (L.S == 1) {  // a contiguous row of C channels
          for (int64_t c = 0; c < L.C; ++c)
            dst[c] = static_cast<scalar_t>(static_cast<opmath_t>(src[c]) * sc[c] + sh[c]);
          continue;
        }
        for (int64_t c = 0; c < L.C; ++c)
          for (int64_t s = 0; s < L.S; ++s)
            dst[c * L.S + s] = static_cast<scalar_t>(static_cast<opmath_t>(src[c * L.S + s]) * sc[c] + sh[c]);
      }
    });
  });
  return {y, mean, invstd};
}

Grads pointwise_batch_norm_backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                        const at::Tensor& save_mean, const at::Tensor& save_invstd,
                                        const std::optional<at::Tensor>& weight,
                                        const std::optional<at::Tensor>& bias,
                                        const at::Tensor& coords, bool training,
                                        std::array<bool, 4> output_mask) {
  const auto L = layout_of(x_in, coords);
  TORCH_CHECK(grad_out_in.sizes() == x_in.sizes(), "pointwise_batch_norm_backward: grad_out must match x");
  const auto x = x_in.contiguous();
  const auto dy = grad_out_in.contiguous();
  const auto opmath = at::toOpMathType(x.scalar_type());
  const auto mean = save_mean.to(opmath).contiguous();
  const auto invstd = save_invstd.to(opmath).contiguous();
  const auto gamma = affine_per_point(weight, coords, L.C, opmath, 1.0);
  // Per (k, c): sum of dy and sum of dy * xhat, which give every parameter gradient.
  auto sum_dy = at::empty({L.K, L.C}, x.options().dtype(opmath));
  auto sum_dy_xhat = at::empty({L.K, L.C}, x.options().dtype(opmath));
  auto dx = output_mask[0] ? at::empty_like(x) : no_grad_placeholder(x);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pointwise_batch_norm_backward_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = dy.data_ptr<scalar_t>();
    const opmath_t* mp = mean.data_ptr<opmath_t>();
    const opmath_t* ip = invstd.data_ptr<opmath_t>();
    opmath_t* sdy = sum_dy.data_ptr<opmath_t>();
    opmath_t* sdyx = sum_dy_xhat.data_ptr<opmath_t>();
    const int64_t CS = L.C * L.S;
    if (L.S == 1) {  // contiguous rows, as in the forward
      at::parallel_for(0, L.K, 1, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          opmath_t* a = sdy + k * L.C;
          opmath_t* bsum = sdyx + k * L.C;
          std::fill(a, a + L.C, opmath_t(0));
          std::fill(bsum, bsum + L.C, opmath_t(0));
          for (int64_t b = 0; b < L.B; ++b) {
            const int64_t row = (k * L.B + b) * L.C;
            for (int64_t c = 0; c < L.C; ++c) {
              const opmath_t g = static_cast<opmath_t>(gp[row + c]);
              a[c] += g;
              bsum[c] += g * (static_cast<opmath_t>(xp[row + c]) - mp[k * L.C + c]);
            }
          }
          for (int64_t c = 0; c < L.C; ++c) bsum[c] *= ip[k * L.C + c];
        }
      });
    } else {
      at::parallel_for(0, L.K * L.C, 1, [&](int64_t begin, int64_t end) {
        for (int64_t kc = begin; kc < end; ++kc) {
          const int64_t k = kc / L.C, c = kc % L.C;
          const int64_t offset = k * L.B * CS + c * L.S;
          opmath_t a = 0, bsum = 0;
          for (int64_t b = 0; b < L.B; ++b)
            for (int64_t s = 0; s < L.S; ++s) {
              const opmath_t g = static_cast<opmath_t>(gp[offset + b * CS + s]);
              a += g;
              bsum += g * (static_cast<opmath_t>(xp[offset + b * CS + s]) - mp[kc]);
            }
          sdy[kc] = a;
          sdyx[kc] = bsum * ip[kc];
        }
      });
    }
    if (output_mask[0]) {
      // dx = γ·invstd·(dy − Σdy/n − x̂·Σ(dy·x̂)/n) is affine in (dy, x − mean) per (k, c):
      // dx = α·dy + β·(x − mean) + δ, with the coefficients formed once, so the pass over
      // the elements vectorises along contiguous channels (no division per element).
      const opmath_t* gam = gamma.data_ptr<opmath_t>();
      const opmath_t n = static_cast<opmath_t>(L.B * L.S);
      std::vector<opmath_t> alpha(L.K * L.C), beta(L.K * L.C), delta(L.K * L.C);
      for (int64_t kc = 0; kc < L.K * L.C; ++kc) {
        alpha[kc] = gam[kc] * ip[kc];
        beta[kc] = training ? -alpha[kc] * ip[kc] * sdyx[kc] / n : opmath_t(0);
        delta[kc] = training ? -alpha[kc] * sdy[kc] / n : opmath_t(0);
      }
      scalar_t* dxp = dx.data_ptr<scalar_t>();
      at::parallel_for(0, L.K * L.B, L.S == 1 ? 64 : 1, [&](int64_t begin, int64_t end) {
        for (int64_t kb = begin; kb < end; ++kb) {
          const int64_t k0 = (kb / L.B) * L.C;
          const opmath_t* al = alpha.data() + k0;
          const opmath_t* be = beta.data() + k0;
          const opmath_t* de = delta.data() + k0;
          const opmath_t* mu = mp + k0;
          const scalar_t* g = gp + kb * CS;
          const scalar_t* xr = xp + kb * CS;
          scalar_t* out = dxp + kb * CS;
          if (L.S == 1) {
            for (int64_t c = 0; c < L.C; ++c)
              out[c] = static_cast<scalar_t>(al[c] * static_cast<opmath_t>(g[c]) +
                                             be[c] * (static_cast<opmath_t>(xr[c]) - mu[c]) + de[c]);
          } else {
            for (int64_t c = 0; c < L.C; ++c)
              for (int64_t s = c * L.S; s < (c + 1) * L.S; ++s)
                out[s] = static_cast<scalar_t>(al[c] * static_cast<opmath_t>(g[s]) +
                                               be[c] * (static_cast<opmath_t>(xr[s]) - mu[c]) + de[c]);
          }
        }
      });
    }
  });

  // dgamma_k = sum dy*xhat, dbeta_k = sum dy; the basis and coordinate gradients follow.
  const auto c_op = coords.to(opmath);
  at::Tensor dweight = no_grad_placeholder(x), dbias = no_grad_placeholder(x);
  at::Tensor dcoords = no_grad_placeholder(x);
  const bool has_weight = weight.has_value() && weight->defined();
  const bool has_bias = bias.has_value() && bias->defined();
  if (output_mask[1] && has_weight) dweight = at::mm(c_op.t(), sum_dy_xhat).to(weight->scalar_type());
  if (output_mask[2] && has_bias) dbias = at::mm(c_op.t(), sum_dy).to(bias->scalar_type());
  if (output_mask[3]) {
    auto dc = at::zeros({L.K, coords.size(1)}, x.options().dtype(opmath));
    if (has_weight) dc += at::mm(sum_dy_xhat, weight->to(opmath).t());
    if (has_bias) dc += at::mm(sum_dy, bias->to(opmath).t());
    dcoords = dc.to(coords.scalar_type());
  }
  return {dx, dweight, dbias, dcoords};
}

TORCH_LIBRARY_IMPL(fastloss, CPU, m) {
  m.impl("pointwise_batch_norm", &pointwise_batch_norm_cpu);
  m.impl("pointwise_batch_norm_backward", &pointwise_batch_norm_backward_cpu);
}

}  // namespace fastloss
