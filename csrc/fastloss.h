// Shared declarations, argument checks and the op contracts.
//
// Notation: J basis points, K evaluation points, B samples per point.
// The weight of point k is W_k = sum_j coords[k, j] * W_j.
//
// synthesize(basis [J, *S], coords [K, J]) -> [K, *S]
//     out[k] = sum_j coords[k, j] * basis[j], accumulated in float (opmath), written in
//     basis.dtype. coords may be float32 when basis is bf16/fp16.
// combine(parts [B, G, J, C, S], coords [K, J], bias [J, G, C]?) -> [K, B, G, C, S]
//     out[k, b, g, c, s] = sum_j coords[k, j] * (parts[b, g, j, c, s] + bias[j, g, c]).
//     Used for the shared-input path: parts are the J products of one input with
//     every basis weight (G = conv groups, C = channels per group, S = spatial size).
// pointwise_batch_norm(x [K, B, C, *], mean [K, C]?, var [K, C]?, weight [J, C]?,
//                      bias [J, C]?, coords [K, J], training, eps)
//     -> (y [K, B, C, *], save_mean [K, C], save_invstd [K, C])
//     training: per-point batch statistics over B and the trailing dims (biased var);
//     eval: mean/var given (required). gamma_k = coords[k] @ weight, beta_k likewise.
//     save_* are float32 for reduced-precision x, else x.dtype.
// pointwise_batch_norm_backward(grad_out, x, save_mean, save_invstd, weight?, bias?,
//                               coords, training, output_mask[4])
//     -> (grad_x, grad_weight [J, C], grad_bias [J, C], grad_coords [K, J])
// point_loss(logits [K, B, C], target [B] int64) -> (loss_sum [K], correct [K] int64)
//     Cross-entropy summed over B and the number of argmax == target (first maximum
//     wins ties; a row with a NaN logit is never correct); loss_sum is float32 for
//     reduced-precision logits.
// subspace_linear(x [B, I] | [K, B, I], weight [J, O, I], bias [J, O]?, coords [K, J])
//     -> [K, B, O]
// subspace_conv(x [B, Ci, *sp] | [K, B, Ci, *sp], weight [J, Co, Ci/g, *k], bias [J, Co]?,
//               coords [K, J], stride, padding, dilation, groups) -> [K, B, Co, *out_sp]
//     1D and 2D (len(stride) == number of spatial dims).
// *_backward(..., output_mask[4]) -> (grad_x, grad_weight, grad_bias, grad_coords)
//     A gradient whose mask entry is false is returned as an empty tensor of shape [0].
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#define FASTLOSS_CHECK_DIM(t, d, name) \
  TORCH_CHECK((t).dim() == (d), name " must have ", d, " dimensions, got ", (t).dim())
#define FASTLOSS_CHECK_SAME_DEVICE(a, b, name_a, name_b)                                   \
  TORCH_CHECK((a).device() == (b).device(), name_a " is on ", (a).device(), " but " name_b \
              " is on ", (b).device())

namespace fastloss {

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Helpers for the kernels, defined in fastloss.cpp.
// Empty placeholder for a gradient that was not requested.
at::Tensor no_grad_placeholder(const at::Tensor& like);
// Calls through the dispatcher, so each device gets its own kernel.
at::Tensor call_synthesize(const at::Tensor& basis, const at::Tensor& coords);
at::Tensor call_combine(const at::Tensor& parts, const at::Tensor& coords,
                        const std::optional<at::Tensor>& bias);
// Rows of points per chunk so that a chunk of synthesised weights stays near `budget_bytes`.
int64_t points_per_chunk(int64_t K, int64_t weight_numel, int64_t element_size,
                         int64_t budget_bytes);

// Device-generic implementations (subspace_linear.cpp); the CUDA backend reuses them for
// the paths it does not specialise.
at::Tensor subspace_linear_generic(const at::Tensor& x, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias,
                                   const at::Tensor& coords);
void check_subspace_linear_args(const at::Tensor& x, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, const at::Tensor& coords);

}  // namespace fastloss
