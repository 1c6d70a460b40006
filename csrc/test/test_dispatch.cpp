// Calls lthgan's ops through the dispatcher, as any C++ program linking the library would, and
// checks the results against plain ATen references. Exit code 0 on success.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <iostream>

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  std::cout << (ok ? "ok   " : "FAIL ") << what << "\n";
  if (!ok) ++failures;
}

}  // namespace

int main() {
  at::manual_seed(1234);
  auto& dispatcher = c10::Dispatcher::singleton();

  // masked_conv2d == conv2d(input, weight * mask)
  auto conv = dispatcher.findSchemaOrThrow("lthgan::masked_conv2d", "")
                  .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const std::optional<at::Tensor>&, at::IntArrayRef,
                                    at::IntArrayRef, at::IntArrayRef, int64_t)>();
  auto x = at::randn({2, 4, 9, 9});
  auto w = at::randn({6, 4, 3, 3});
  auto b = at::randn({6});
  auto m = at::rand({6, 4, 3, 3}) > 0.5;
  auto out = conv.call(x, w, m, b, {2, 2}, {1, 1}, {1, 1}, 1);
  auto ref = at::conv2d(x, w * m, b, {2, 2}, {1, 1}, {1, 1}, 1);
  expect(at::allclose(out, ref, 1e-4, 1e-5), "masked_conv2d matches conv2d(weight * mask)");

  // the fused backward masks grad_weight exactly
  auto bwd = dispatcher.findSchemaOrThrow("lthgan::masked_convolution_backward", "")
                 .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                     const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                     bool, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool,
                     at::IntArrayRef, int64_t, std::array<bool, 3>)>();
  auto go = at::randn(out.sizes());
  auto [gi, gw, gb] = bwd.call(go, x, w, m, true, {2, 2}, {1, 1}, {1, 1}, false, {0, 0}, 1,
                               {true, true, true});
  auto [rgi, rgw, rgb] = at::convolution_backward(go, x, w * m, std::vector<int64_t>{6}, {2, 2},
                                                  {1, 1}, {1, 1}, false, {0, 0}, 1,
                                                  {true, true, true});
  expect(at::allclose(gi, rgi, 1e-4, 1e-5), "grad_input matches");
  expect(at::allclose(gw, rgw * m, 1e-4, 1e-5), "grad_weight matches masked reference");
  expect(gw.masked_select(m.logical_not()).abs().max().item<float>() == 0.0f,
         "grad_weight is exactly zero at pruned entries");
  expect(at::allclose(gb, rgb, 1e-4, 1e-5), "grad_bias matches");

  // global_topk_masks keeps exactly `keep` entries, the largest |w|
  auto topk = dispatcher.findSchemaOrThrow("lthgan::global_topk_masks", "")
                  .typed<std::vector<at::Tensor>(at::TensorList, at::TensorList, int64_t)>();
  std::vector<at::Tensor> ws = {at::randn({100, 30}), at::randn({1000})};
  std::vector<at::Tensor> ms = {at::ones({100, 30}, at::kBool), at::ones({1000}, at::kBool)};
  auto masks = topk.call(ws, ms, 500);
  const int64_t kept = masks[0].sum().item<int64_t>() + masks[1].sum().item<int64_t>();
  expect(kept == 500, "global_topk_masks keeps exactly keep entries");
  auto all = at::cat({ws[0].flatten().abs(), ws[1].abs()});
  auto thr = std::get<0>(all.topk(500)).min().item<float>();
  auto kept_min = at::cat({ws[0].abs().masked_select(masks[0]), ws[1].abs().masked_select(masks[1])})
                      .min()
                      .item<float>();
  expect(kept_min == thr, "kept entries are the top-|w| ones");

  // rewind_ writes in place
  auto rewind = dispatcher.findSchemaOrThrow("lthgan::rewind_", "")
                    .typed<void(at::TensorList, at::TensorList,
                                const c10::List<std::optional<at::Tensor>>&)>();
  auto target = at::randn({50});
  auto src = at::randn({50});
  auto rm = at::rand({50}) > 0.5;
  void* ptr = target.data_ptr();
  c10::List<std::optional<at::Tensor>> rms;
  rms.push_back(rm);
  rewind.call({target}, {src}, rms);
  expect(target.data_ptr() == ptr, "rewind_ keeps storage");
  expect(at::equal(target, at::where(rm, src, at::zeros({}))), "rewind_ values");

  // a bad mask gives a clear error
  bool threw = false;
  try {
    conv.call(x, w, at::ones({6, 4, 3, 3}), b, {1, 1}, {1, 1}, {1, 1}, 1);
  } catch (const c10::Error& e) {
    threw = std::string(e.what()).find("mask must be a bool tensor") != std::string::npos;
  }
  expect(threw, "float mask raises a clear error");

  std::cout << (failures == 0 ? "all passed" : "FAILED") << "\n";
  return failures == 0 ? 0 : 1;
}
