// CPU kernel for synthesize; contract in csrc/fastloss.h.
#pragma once

#include "../fastloss.h"

namespace fastloss {

at::Tensor synthesize_cpu(const at::Tensor& basis, const at::Tensor& coords);

}  // namespace fastloss
