// Trains a small masked model in C++ through lthgan's C++ autograd, as a libtorch program
// would: masked conv -> relu -> masked linear, mean squared error, lthgan::adam_step_ as the
// optimizer (and a plain SGD run). Checks that the loss goes down, that no gradient reaches a
// pruned weight, and that pruned weights stay exactly zero. Exit code 0 on success.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>

#include <iostream>
#include <optional>

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  std::cout << (ok ? "ok   " : "FAIL ") << what << "\n";
  if (!ok) ++failures;
}

using ConvFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                          const std::optional<at::Tensor>&, at::IntArrayRef, at::IntArrayRef,
                          at::IntArrayRef, int64_t);
using LinearFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const std::optional<at::Tensor>&);
using AdamFn = void(at::TensorList, at::TensorList, at::TensorList, at::TensorList,
                    at::TensorList, double, double, double, double, double, bool);

struct Model {
  at::Tensor w1, m1, w2, m2, b2;
};

Model make_model() {
  Model md;
  md.m1 = at::rand({8, 3, 3, 3}) > 0.74;
  md.m2 = at::rand({4, 8 * 6 * 6}) > 0.74;
  md.w1 = (at::randn({8, 3, 3, 3}) * md.m1).set_requires_grad(true);
  md.w2 = (at::randn({4, 8 * 6 * 6}) * 0.05 * md.m2).set_requires_grad(true);
  md.b2 = at::zeros({4}).set_requires_grad(true);
  return md;
}

bool all_zero_where_pruned(const at::Tensor& t, const at::Tensor& m) {
  return at::equal(at::where(m, at::zeros({}, t.options()), t), at::zeros_like(t));
}

void train(const char* name, bool adam) {
  auto& d = c10::Dispatcher::singleton();
  static auto conv = d.findSchemaOrThrow("lthgan::masked_conv2d", "").typed<ConvFn>();
  static auto linear = d.findSchemaOrThrow("lthgan::masked_linear", "").typed<LinearFn>();
  static auto adam_step = d.findSchemaOrThrow("lthgan::adam_step_", "").typed<AdamFn>();

  Model md = make_model();
  std::vector<at::Tensor> params = {md.w1, md.w2, md.b2};
  std::vector<at::Tensor> masks = {md.m1, md.m2, at::Tensor()};
  std::vector<at::Tensor> m, v, steps;
  for (auto& p : params) {
    m.push_back(at::zeros_like(p));
    v.push_back(at::zeros_like(p));
    steps.push_back(at::zeros({}));
  }
  auto x = at::randn({16, 3, 6, 6});
  auto y = at::randn({16, 4});
  double first = 0, last = 0;
  bool grads_masked = true;
  for (int it = 0; it < 30; ++it) {
    for (auto& p : params) p.mutable_grad() = at::Tensor();
    auto h = at::relu(conv.call(x, md.w1, md.m1, std::nullopt, {1, 1}, {1, 1}, {1, 1}, 1));
    auto out = linear.call(h.flatten(1), md.w2, md.m2, md.b2);
    auto loss = (out - y).pow(2).mean();
    loss.backward();
    grads_masked = grads_masked && all_zero_where_pruned(md.w1.grad(), md.m1) &&
                   all_zero_where_pruned(md.w2.grad(), md.m2);
    if (it == 0) first = loss.item<double>();
    last = loss.item<double>();
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> grads;
    for (auto& p : params) grads.push_back(p.grad());
    if (adam) {
      adam_step.call(params, grads, m, v, steps, 0.01, 0.9, 0.999, 0.0, 1e-8, false);
    } else {
      for (auto& p : params) p.sub_(p.grad(), 0.05);
    }
  }
  const std::string tag = std::string(name) + ": ";
  expect(last < 0.7 * first, tag + "loss goes down (" + std::to_string(first) + " -> " +
                                 std::to_string(last) + ")");
  expect(grads_masked, tag + "no gradient reaches a pruned weight");
  expect(all_zero_where_pruned(md.w1, md.m1) && all_zero_where_pruned(md.w2, md.m2),
         tag + "pruned weights stay exactly zero");
  expect(!all_zero_where_pruned(md.w1, ~md.m1), tag + "kept weights are non-zero");
}

}  // namespace

int main() {
  at::manual_seed(7);
  train("adam", true);
  train("sgd", false);
  return failures == 0 ? 0 : 1;
}
