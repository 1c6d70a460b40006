// Schemas of torch.ops.lthgan.* and their dispatch: CPU, CUDA and autocast kernels.
// Autograd kernels are in csrc/autograd/; fake (meta) kernels and vmap rules are registered
// from Python (lthgan/ops.py).
#include "lthgan.h"

#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

// The extension is a Python module too, so that `from lthgan import _C` loads the library.
#ifdef LTHGAN_PYTHON_MODULE
#include <Python.h>
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
#endif

namespace lthgan {
namespace {

// ---- autocast: cast the input to the autocast dtype; the weight is masked and cast by the
// op itself in its single pass over the weights (no separate cast of the fp32 weight).
template <c10::DeviceType DT>
at::Tensor masked_conv2d_autocast(const at::Tensor& input, const at::Tensor& weight,
                                  const at::Tensor& mask, const std::optional<at::Tensor>& bias,
                                  at::IntArrayRef stride, at::IntArrayRef padding,
                                  at::IntArrayRef dilation, int64_t groups) {
  c10::impl::ExcludeDispatchKeyGuard guard(
      at::autocast::get_autocast_dispatch_key_from_device_type(DT));
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("lthgan::masked_conv2d", "")
                       .typed<decltype(masked_conv2d)>();
  auto dtype = at::autocast::get_autocast_dtype(DT);
  return op.call(at::autocast::cached_cast(dtype, input, DT), weight, mask, bias, stride, padding,
                 dilation, groups);
}

template <c10::DeviceType DT>
at::Tensor masked_conv_transpose2d_autocast(const at::Tensor& input, const at::Tensor& weight,
                                            const at::Tensor& mask,
                                            const std::optional<at::Tensor>& bias,
                                            at::IntArrayRef stride, at::IntArrayRef padding,
                                            at::IntArrayRef output_padding, int64_t groups,
                                            at::IntArrayRef dilation) {
  c10::impl::ExcludeDispatchKeyGuard guard(
      at::autocast::get_autocast_dispatch_key_from_device_type(DT));
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("lthgan::masked_conv_transpose2d", "")
                       .typed<decltype(masked_conv_transpose2d)>();
  auto dtype = at::autocast::get_autocast_dtype(DT);
  return op.call(at::autocast::cached_cast(dtype, input, DT), weight, mask, bias, stride, padding,
                 output_padding, groups, dilation);
}

template <c10::DeviceType DT>
at::Tensor masked_linear_autocast(const at::Tensor& input, const at::Tensor& weight,
                                  const at::Tensor& mask, const std::optional<at::Tensor>& bias) {
  c10::impl::ExcludeDispatchKeyGuard guard(
      at::autocast::get_autocast_dispatch_key_from_device_type(DT));
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("lthgan::masked_linear", "")
                       .typed<decltype(masked_linear)>();
  auto dtype = at::autocast::get_autocast_dtype(DT);
  return op.call(at::autocast::cached_cast(dtype, input, DT), weight, mask, bias);
}

// An op whose only arguments are empty tensor lists has no device to dispatch on; the
// dispatcher sends it to this kernel (backend kernels take precedence whenever there is a
// tensor). Selecting from nothing gives nothing.
std::vector<at::Tensor> global_topk_masks_no_device(at::TensorList weights, at::TensorList masks,
                                                    int64_t keep) {
  check_topk_args(weights, masks, keep);
  TORCH_CHECK(weights.empty(), "lthgan.global_topk_masks: no kernel for device ",
              weights.empty() ? std::string("?") : weights[0].device().str());
  TORCH_CHECK(keep == 0, "lthgan.global_topk_masks: keep must be 0 when there are no weights, "
              "got ", keep);
  return {};
}

}  // namespace

TORCH_LIBRARY(lthgan, m) {
  m.def(
      "masked_conv2d(Tensor input, Tensor weight, Tensor mask, Tensor? bias, int[2] stride, "
      "int[2] padding, int[2] dilation, int groups) -> Tensor");
  m.def(
      "masked_conv_transpose2d(Tensor input, Tensor weight, Tensor mask, Tensor? bias, "
      "int[2] stride, int[2] padding, int[2] output_padding, int groups, int[2] dilation) -> Tensor");
  m.def("masked_linear(Tensor input, Tensor weight, Tensor mask, Tensor? bias) -> Tensor");
  // One backward op per layer family: grad_input, grad_weight (masked: exactly zero at pruned
  // entries) and grad_bias; outputs not asked for in output_mask come back as empty tensors.
  m.def(
      "masked_convolution_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor mask, "
      "bool has_bias, int[2] stride, int[2] padding, int[2] dilation, bool transposed, "
      "int[2] output_padding, int groups, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def(
      "masked_linear_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor mask, "
      "bool has_bias, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def("global_topk_masks(Tensor[] weights, Tensor[] masks, int keep) -> Tensor[]");
  m.def("rewind_(Tensor(a!)[] weights, Tensor[] sources, Tensor?[] masks) -> ()");
  // One Adam (decoupled=False) or AdamW (decoupled=True) step over every tensor of the lists,
  // as torch.optim.Adam(foreach=False); steps[i] (state["step"]) is advanced by one.
  m.def(
      "adam_step_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, "
      "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] steps, float lr, float beta1, float beta2, "
      "float weight_decay, float eps, bool decoupled) -> ()");
}

TORCH_LIBRARY_IMPL(lthgan, CPU, m) {
  m.impl("masked_conv2d", &masked_conv2d);
  m.impl("masked_conv_transpose2d", &masked_conv_transpose2d);
  m.impl("masked_linear", &masked_linear);
  m.impl("masked_convolution_backward", &masked_convolution_backward);
  m.impl("masked_linear_backward", &masked_linear_backward);
  m.impl("global_topk_masks", &global_topk_masks_cpu);
  m.impl("rewind_", &rewind_cpu);
  m.impl("adam_step_", &adam_step_cpu);
}

#ifdef LTHGAN_WITH_CUDA
TORCH_LIBRARY_IMPL(lthgan, CUDA, m) {
  m.impl("masked_conv2d", &masked_conv2d);
  m.impl("masked_conv_transpose2d", &masked_conv_transpose2d);
  m.impl("masked_linear", &masked_linear);
  m.impl("masked_convolution_backward", &masked_convolution_backward);
  m.impl("masked_linear_backward", &masked_linear_backward);
  m.impl("global_topk_masks", &global_topk_masks_cuda);
  m.impl("rewind_", &rewind_cuda);
  m.impl("adam_step_", &adam_step_cuda);
}
#endif

TORCH_LIBRARY_IMPL(lthgan, CompositeExplicitAutograd, m) {
  m.impl("global_topk_masks", &global_topk_masks_no_device);
}

TORCH_LIBRARY_IMPL(lthgan, AutocastCPU, m) {
  m.impl("masked_conv2d", &masked_conv2d_autocast<c10::DeviceType::CPU>);
  m.impl("masked_conv_transpose2d", &masked_conv_transpose2d_autocast<c10::DeviceType::CPU>);
  m.impl("masked_linear", &masked_linear_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(lthgan, AutocastCUDA, m) {
  m.impl("masked_conv2d", &masked_conv2d_autocast<c10::DeviceType::CUDA>);
  m.impl("masked_conv_transpose2d", &masked_conv_transpose2d_autocast<c10::DeviceType::CUDA>);
  m.impl("masked_linear", &masked_linear_autocast<c10::DeviceType::CUDA>);
}

}  // namespace lthgan
