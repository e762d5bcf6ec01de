// Fused per-point cross-entropy and accuracy: one pass over each logit row computes
// its log-sum-exp and argmax, so no [K, B, C] softmax is ever written. Row losses go
// to a [K, B] buffer and are summed per point in a fixed order (deterministic).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "point_loss_cpu.h"

namespace fastloss {

std::tuple<at::Tensor, at::Tensor> point_loss_cpu(const at::Tensor& logits_in,
                                                  const at::Tensor& target_in) {
  FASTLOSS_CHECK_DIM(logits_in, 3, "point_loss: logits [K, B, C]");
  FASTLOSS_CHECK_DIM(target_in, 1, "point_loss: target [B]");
  TORCH_CHECK(target_in.scalar_type() == at::kLong, "point_loss: target must be int64, got ",
              target_in.scalar_type());
  TORCH_CHECK(target_in.size(0) == logits_in.size(1), "point_loss: target has ", target_in.size(0),
              " samples but logits has B = ", logits_in.size(1));
  const auto logits = logits_in.contiguous();
  const auto target = target_in.contiguous();
  const int64_t K = logits.size(0), B = logits.size(1), C = logits.size(2);
  TORCH_CHECK(C > 0 || B == 0, "point_loss: logits must have at least one class");
  const auto loss_dtype = at::toOpMathType(logits.scalar_type());
  auto loss = at::empty({K}, logits.options().dtype(loss_dtype));
  auto correct = at::empty({K}, logits.options().dtype(at::kLong));

  const int64_t* t = target.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(t[b] >= 0 && t[b] < C, "point_loss: target[", b, "] = ", t[b],
                " is not a class index in [0, ", C, ")");

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "point_loss_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* z = logits.data_ptr<scalar_t>();
    std::vector<opmath_t> row_loss(K * B);
    std::vector<uint8_t> row_hit(K * B);
    at::parallel_for(0, K * B, std::max<int64_t>(1, 4096 / std::max<int64_t>(C, 1)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* row = z + r * C;
        opmath_t best = static_cast<opmath_t>(row[0]);
        int64_t arg = 0;
        bool has_nan = std::isnan(best);
        for (int64_t c = 1; c < C; ++c) {
          const opmath_t v = static_cast<opmath_t>(row[c]);
          has_nan |= std::isnan(v);
          if (v > best) best = v, arg = c;
        }
        opmath_t sum = 0;
        for (int64_t c = 0; c < C; ++c) sum += std::exp(static_cast<opmath_t>(row[c]) - best);
        const int64_t y = t[r % B];
        row_loss[r] = has_nan ? std::numeric_limits<opmath_t>::quiet_NaN()
                              : best + std::log(sum) - static_cast<opmath_t>(row[y]);
        row_hit[r] = !has_nan && arg == y;
      }
    });
    opmath_t* l = loss.data_ptr<opmath_t>();
    int64_t* hits = correct.data_ptr<int64_t>();
    for (int64_t k = 0; k < K; ++k) {
      opmath_t s = 0;
      int64_t h = 0;
      for (int64_t b = 0; b < B; ++b) s += row_loss[k * B + b], h += row_hit[k * B + b];
      l[k] = s;
      hits[k] = h;
    }
  });
  return {loss, correct};
}

TORCH_LIBRARY_IMPL(fastloss, CPU, m) { m.impl("point_loss", &point_loss_cpu); }

}  // namespace fastloss
