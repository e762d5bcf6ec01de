// Op schemas for the `fastloss` namespace.
//
// The pybind11 module with build information is in python_module.cpp, so that this file and
// the kernels also build as a plain C++ library against libtorch (CMakeLists.txt).
// Backend kernels live in csrc/cpu/*_cpu.cpp and csrc/cuda/*_cuda.cu (one
// TORCH_LIBRARY_IMPL per backend); the device-generic orchestration of the
// subspace layers lives in csrc/subspace_ops.cpp. Shapes and contracts are
// documented in csrc/fastloss.h.
#include <torch/library.h>

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

  // Subspace layers: device-generic (subspace_ops.cpp), CUDA overrides the linear forward.
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
