// Op schemas for the `fastloss` namespace, and the helpers fastloss.h declares for the
// kernels (dispatcher calls, gradient placeholders, chunk sizes).
//
// The pybind11 module with build information is in python_module.cpp, so that this file and
// the kernels also build as a plain C++ library against libtorch (CMakeLists.txt).
// Kernel files are named for the op they hold: backend kernels live in csrc/cpu/<op>_cpu.cpp
// and csrc/cuda/<op>_cuda.cu (each with its own TORCH_LIBRARY_IMPL), the device-generic
// subspace layers in csrc/subspace_linear.cpp and csrc/subspace_conv.cpp. The list of
// sources is csrc/sources.txt. Shapes and contracts are documented in csrc/fastloss.h.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>

#include "fastloss.h"

TORCH_LIBRARY(fastloss, m) {
  // Building blocks with one kernel per backend.
  m.def("synthesize(Tensor basis, Tensor coords) -> Tensor");
  m.def("combine(Tensor parts, Tensor coords, Tensor? bias) -> Tensor");
  m.def(
      "pointwise_batch_norm(Tensor x, Tensor? mean, Tensor? var, Tensor? weight, "
      "Tensor? bias, Tensor coords, bool training, float eps) -> (Tensor, Tensor, Tensor)");
  m.def(
      "pointwise_batch_norm_backward(Tensor grad_out, Tensor x, Tensor save_mean, "
      "Tensor save_invstd, Tensor? weight, Tensor? bias, Tensor coords, bool training, "
      "bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("point_loss(Tensor logits, Tensor target) -> (Tensor, Tensor)");

  // Subspace layers: device-generic (subspace_linear.cpp, subspace_conv.cpp), CUDA overrides
  // the linear forward (cuda/subspace_linear_cuda.cu).
  m.def("subspace_linear(Tensor x, Tensor weight, Tensor? bias, Tensor coords) -> Tensor");
  m.def(
      "subspace_linear_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor? bias, "
      "Tensor coords, bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "subspace_conv(Tensor x, Tensor weight, Tensor? bias, Tensor coords, int[] stride, "
      "int[] padding, int[] dilation, int groups) -> Tensor");
  m.def(
      "subspace_conv_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor? bias, "
      "Tensor coords, int[] stride, int[] padding, int[] dilation, int groups, "
      "bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");
}

namespace fastloss {

at::Tensor no_grad_placeholder(const at::Tensor& like) { return at::empty({0}, like.options()); }

at::Tensor call_synthesize(const at::Tensor& basis, const at::Tensor& coords) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastloss::synthesize", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op.call(basis, coords);
}

at::Tensor call_combine(const at::Tensor& parts, const at::Tensor& coords,
                        const std::optional<at::Tensor>& bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastloss::combine", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                         const std::optional<at::Tensor>&)>();
  return op.call(parts, coords, bias);
}

int64_t points_per_chunk(int64_t K, int64_t weight_numel, int64_t element_size, int64_t budget_bytes) {
  const int64_t per_point = std::max<int64_t>(1, weight_numel * element_size);
  return std::max<int64_t>(1, std::min<int64_t>(K, budget_bytes / per_point));
}

}  // namespace fastloss
