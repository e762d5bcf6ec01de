// CPU kernels for pointwise_batch_norm and its backward; contracts in csrc/fastloss.h.
#pragma once

#include "../fastloss.h"

namespace fastloss {

std::tuple<at::Tensor, at::Tensor, at::Tensor> pointwise_batch_norm_cpu(
    const at::Tensor& x, const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& var,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& coords, bool training, double eps);

Grads pointwise_batch_norm_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                        const at::Tensor& save_mean, const at::Tensor& save_invstd,
                                        const std::optional<at::Tensor>& weight,
                                        const std::optional<at::Tensor>& bias,
                                        const at::Tensor& coords, bool training,
                                        std::array<bool, 4> output_mask);

}  // namespace fastloss
