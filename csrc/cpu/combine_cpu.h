// CPU kernel for combine; contract in csrc/fastloss.h.
#pragma once

#include "../fastloss.h"

namespace fastloss {

at::Tensor combine_cpu(const at::Tensor& parts, const at::Tensor& coords,
                       const std::optional<at::Tensor>& bias);

}  // namespace fastloss
