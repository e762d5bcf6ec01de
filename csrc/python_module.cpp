// pybind11 module fastloss._C: build information for `fastloss info` and the load-time
// check that the extension matches the installed torch. The ops themselves are registered
// with the dispatcher (fastloss.cpp) and reached through torch.ops.fastloss.
#include <torch/extension.h>

namespace {

bool built_with_cuda() {
#ifdef FASTLOSS_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string cuda_arch_list() {
#ifdef FASTLOSS_CUDA_ARCH_LIST
  return FASTLOSS_CUDA_ARCH_LIST;
#else
  return "";
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "fastloss compiled kernels: build information (ops are in torch.ops.fastloss)";
  module.def("built_with_cuda", &built_with_cuda, "True if the CUDA kernels were compiled in.");
  module.def("cuda_arch_list", &cuda_arch_list, "TORCH_CUDA_ARCH_LIST the CUDA kernels were built for.");
  module.def("torch_version", []() { return std::string(FASTLOSS_TORCH_VERSION); },
             "torch version the extension was compiled against.");
  module.def("cuda_version", []() {
#ifdef FASTLOSS_CUDA_VERSION
    return std::string(FASTLOSS_CUDA_VERSION);
#else
    return std::string("");
#endif
  }, "CUDA version the extension was compiled with (empty without CUDA).");
}
