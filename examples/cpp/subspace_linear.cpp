// Calls fastloss::subspace_linear from C++ through the dispatcher and checks it against the
// same layer computed point by point with plain libtorch. Exit code 0 means it matched.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <iostream>

int main() {
  torch::manual_seed(0);
  const int64_t K = 5, J = 3, B = 8, I = 16, O = 4;
  const auto x = torch::randn({B, I});
  const auto weight = torch::randn({J, O, I});
  const auto bias = torch::randn({J, O});
  const auto coords = torch::randn({K, J});

  const auto op = c10::Dispatcher::singleton()
                      .findSchemaOrThrow("fastloss::subspace_linear", "")
                      .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                        const std::optional<at::Tensor>&, const at::Tensor&)>();
  const auto y = op.call(x, weight, bias, coords);

  // Reference: materialise each point's weight and run an ordinary linear layer.
  std::vector<at::Tensor> rows;
  for (int64_t k = 0; k < K; ++k) {
    const auto w_k = torch::tensordot(coords[k], weight, {0}, {0});
    const auto b_k = torch::matmul(coords[k], bias);
    rows.push_back(torch::nn::functional::linear(x, w_k, b_k));
  }
  const auto error = (y - torch::stack(rows)).abs().max().item<double>();
  std::cout << "fastloss::subspace_linear from C++: output " << y.sizes() << ", max |error| vs libtorch "
            << error << std::endl;
  return error < 1e-4 ? 0 : 1;
}
