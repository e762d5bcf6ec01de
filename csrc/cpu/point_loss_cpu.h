// CPU kernel for point_loss; contract in csrc/fastloss.h.
#pragma once

#include "../fastloss.h"

namespace fastloss {

std::tuple<at::Tensor, at::Tensor> point_loss_cpu(const at::Tensor& logits, const at::Tensor& target);

}  // namespace fastloss
