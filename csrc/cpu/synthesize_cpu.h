// CPU kernels for synthesize and combine; contracts in csrc/fastloss.h.
#pragma once

#include "../fastloss.h"

namespace fastloss {

at::Tensor synthesize_cpu(const at::Tensor& basis, const at::Tensor& coords);
at::Tensor combine_cpu(const at::Tensor& parts, const at::Tensor& coords,
                       const std::optional<at::Tensor>& bias);

}  // namespace fastloss
