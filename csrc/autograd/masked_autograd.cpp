// Autograd of the masked layers, in C++ (registered at the Autograd key), so that C++ programs
// on libtorch get trainable masked layers and Python pays no per-call autograd cost.
//
// output = op(x, w * m, b). The backward has two paths:
// - first order (grad mode off during backward, the usual .backward()): ONE fused op,
//   masked_convolution_backward / masked_linear_backward, which returns grad_weight already
//   masked (exactly zero at pruned entries);
// - higher order (create_graph=True, torch.func.grad, gradient penalties): the same gradients
//   built from differentiable ATen ops (convolution_backward has a derivative in torch), with
//   the mask applied by at::where, so second and third derivatives are those of
//   op(x, w * m, b).
// Under torch.func transforms (grad, vjp, jacrev, ... which refuse C++ autograd Functions) the
// op is computed as its plain ATen composition, conv(x, where(m, w, 0), b), whose derivatives
// and batching rules are torch's own.
#include "../lthgan.h"

#include <array>

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/autograd.h>

namespace lthgan {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::vector<int64_t> vec(at::IntArrayRef a) { return a.vec(); }

at::Tensor masked_weight_differentiable(const at::Tensor& weight, const at::Tensor& mask,
                                        at::ScalarType dtype) {
  auto w = at::where(mask, weight, at::zeros({}, weight.options()));
  return w.scalar_type() == dtype ? w : w.to(dtype);
}

at::Tensor to_dtype(const at::Tensor& t, at::ScalarType dtype) {
  return (!t.defined() || t.scalar_type() == dtype) ? t : t.to(dtype);
}

// functorch includes its dynamic-layer keys in the thread's dispatch key set while any
// transform is active (ATen/functorch/DynamicLayer.h is not usable from an extension).
bool under_functorch() {
  const auto included = c10::impl::tls_local_dispatch_key_set().included_;
  return included.has(c10::DispatchKey::FuncTorchDynamicLayerFrontMode) ||
         included.has(c10::DispatchKey::FuncTorchDynamicLayerBackMode);
}

std::optional<at::Tensor> bias_as(const std::optional<at::Tensor>& bias, at::ScalarType dtype) {
  if (!bias.has_value() || !bias->defined()) return std::nullopt;
  return to_dtype(*bias, dtype);
}

// What every layer's backward needs: the inputs, and whether and in which dtype a bias was given.
void save_common(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                 const at::Tensor& mask, const std::optional<at::Tensor>& bias) {
  const bool has_bias = bias.has_value() && bias->defined();
  ctx->save_for_backward({input, weight, mask});
  ctx->saved_data["has_bias"] = has_bias;
  ctx->saved_data["bias_dtype"] = has_bias ? bias->scalar_type() : weight.scalar_type();
}

struct Saved {
  at::Tensor input, weight, mask;
  bool has_bias;
  at::ScalarType bias_dtype;
  std::array<bool, 3> need;  // grads wanted: input, weight, bias (arguments 0, 1 and 3)
};

Saved load_common(AutogradContext* ctx) {
  auto saved = ctx->get_saved_variables();
  const bool has_bias = ctx->saved_data["has_bias"].toBool();
  return {saved[0], saved[1], saved[2], has_bias, ctx->saved_data["bias_dtype"].toScalarType(),
          {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
           has_bias && ctx->needs_input_grad(3)}};
}

// The differentiable weight gradient: exactly zero at pruned entries, in the weight's dtype.
at::Tensor masked_grad_differentiable(const at::Tensor& gw, const at::Tensor& mask,
                                      at::ScalarType dtype) {
  return to_dtype(at::where(mask, gw, at::zeros({}, gw.options())), dtype);
}

// ---- convolution and transposed convolution ----------------------------------------------

class MaskedConvFunction : public torch::autograd::Function<MaskedConvFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight, const at::Tensor& mask,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, bool transposed,
                            at::IntArrayRef output_padding, int64_t groups) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out;
    if (transposed) {
      static auto op = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("lthgan::masked_conv_transpose2d", "")
                           .typed<decltype(masked_conv_transpose2d)>();
      out = op.call(input, weight, mask, bias, stride, padding, output_padding, groups, dilation);
    } else {
      static auto op = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("lthgan::masked_conv2d", "")
                           .typed<decltype(masked_conv2d)>();
      out = op.call(input, weight, mask, bias, stride, padding, dilation, groups);
    }
    save_common(ctx, input, weight, mask, bias);
    ctx->saved_data["stride"] = vec(stride);
    ctx->saved_data["padding"] = vec(padding);
    ctx->saved_data["dilation"] = vec(dilation);
    ctx->saved_data["transposed"] = transposed;
    ctx->saved_data["output_padding"] = vec(output_padding);
    ctx->saved_data["groups"] = groups;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const Saved sv = load_common(ctx);
    const auto& [input, weight, mask, has_bias, bias_dtype, need] = sv;
    const auto stride = ctx->saved_data["stride"].toIntVector();
    const auto padding = ctx->saved_data["padding"].toIntVector();
    const auto dilation = ctx->saved_data["dilation"].toIntVector();
    const bool transposed = ctx->saved_data["transposed"].toBool();
    const auto output_padding = ctx->saved_data["output_padding"].toIntVector();
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const auto& go = grad_outputs[0];

    at::Tensor gi, gw, gb;
    if (at::GradMode::is_enabled()) {
      // Differentiable path (create_graph=True): every step is an ATen op with a derivative.
      const bool unbatched = input.dim() == 3;
      auto x = unbatched ? input.unsqueeze(0) : input;
      auto g = unbatched ? go.unsqueeze(0) : go;
      g = to_dtype(g, x.scalar_type());
      auto w = masked_weight_differentiable(weight, mask, x.scalar_type());
      std::vector<int64_t> bsz;
      if (has_bias) bsz.push_back(transposed ? weight.size(1) * groups : weight.size(0));
      std::optional<at::IntArrayRef> bias_sizes;
      if (has_bias) bias_sizes = at::IntArrayRef(bsz);
      auto r = at::convolution_backward(g, x, w, bias_sizes, stride, padding, dilation,
                                        transposed, output_padding, groups, need);
      gi = std::get<0>(r);
      if (gi.defined() && unbatched) gi = gi.squeeze(0);
      gw = std::get<1>(r);
      if (gw.defined()) gw = masked_grad_differentiable(gw, mask, weight.scalar_type());
      gb = std::get<2>(r);
    } else {
      // First order: one fused op, called below autograd (it has no autograd of its own).
      at::AutoDispatchBelowADInplaceOrView guard;
      static auto op = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("lthgan::masked_convolution_backward", "")
                           .typed<decltype(masked_convolution_backward)>();
      std::tie(gi, gw, gb) = op.call(go, input, weight, mask, has_bias, stride, padding, dilation,
                                     transposed, output_padding, groups, need);
    }
    return {need[0] ? gi : at::Tensor(),
            need[1] ? gw : at::Tensor(),
            at::Tensor(),
            need[2] ? to_dtype(gb, bias_dtype) : at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor masked_conv2d_autograd(const at::Tensor& input, const at::Tensor& weight,
                                  const at::Tensor& mask, const std::optional<at::Tensor>& bias,
                                  at::IntArrayRef stride, at::IntArrayRef padding,
                                  at::IntArrayRef dilation, int64_t groups) {
  if (under_functorch()) {
    const auto dt = input.scalar_type();
    return at::conv2d(input, masked_weight_differentiable(weight, mask, dt), bias_as(bias, dt),
                      stride, padding, dilation, groups);
  }
  return MaskedConvFunction::apply(input, weight, mask, bias, stride, padding, dilation, false,
                                   at::IntArrayRef({0, 0}), groups);
}

at::Tensor masked_conv_transpose2d_autograd(const at::Tensor& input, const at::Tensor& weight,
                                            const at::Tensor& mask,
                                            const std::optional<at::Tensor>& bias,
                                            at::IntArrayRef stride, at::IntArrayRef padding,
                                            at::IntArrayRef output_padding, int64_t groups,
                                            at::IntArrayRef dilation) {
  if (under_functorch()) {
    const auto dt = input.scalar_type();
    return at::conv_transpose2d(input, masked_weight_differentiable(weight, mask, dt),
                                bias_as(bias, dt), stride, padding, output_padding, groups,
                                dilation);
  }
  return MaskedConvFunction::apply(input, weight, mask, bias, stride, padding, dilation, true,
                                   output_padding, groups);
}

// ---- linear ------------------------------------------------------------------------------

class MaskedLinearFunction : public torch::autograd::Function<MaskedLinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight, const at::Tensor& mask,
                            const std::optional<at::Tensor>& bias) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("lthgan::masked_linear", "")
                         .typed<decltype(masked_linear)>();
    auto out = op.call(input, weight, mask, bias);
    save_common(ctx, input, weight, mask, bias);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const Saved sv = load_common(ctx);
    const auto& [input, weight, mask, has_bias, bias_dtype, need] = sv;
    const auto& go = grad_outputs[0];
    at::Tensor gi, gw, gb;
    if (at::GradMode::is_enabled()) {
      auto g = to_dtype(go, input.scalar_type());
      const int64_t out_f = weight.size(0), in_f = weight.size(1);
      if (need[0]) gi = at::matmul(g, masked_weight_differentiable(weight, mask, input.scalar_type()));
      auto g2 = g.reshape({-1, out_f});
      if (need[1]) {
        gw = masked_grad_differentiable(at::mm(g2.t(), input.reshape({-1, in_f})), mask,
                                        weight.scalar_type());
      }
      if (need[2]) gb = g2.sum(0);
    } else {
      at::AutoDispatchBelowADInplaceOrView guard;
      static auto op = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("lthgan::masked_linear_backward", "")
                           .typed<decltype(masked_linear_backward)>();
      std::tie(gi, gw, gb) = op.call(go, input, weight, mask, has_bias, need);
    }
    return {need[0] ? gi : at::Tensor(), need[1] ? gw : at::Tensor(), at::Tensor(),
            need[2] ? to_dtype(gb, bias_dtype) : at::Tensor()};
  }
};

at::Tensor masked_linear_autograd(const at::Tensor& input, const at::Tensor& weight,
                                  const at::Tensor& mask, const std::optional<at::Tensor>& bias) {
  if (under_functorch()) {
    const auto dt = input.scalar_type();
    return at::linear(input, masked_weight_differentiable(weight, mask, dt), bias_as(bias, dt));
  }
  return MaskedLinearFunction::apply(input, weight, mask, bias);
}

}  // namespace

TORCH_LIBRARY_IMPL(lthgan, Autograd, m) {
  m.impl("masked_conv2d", &masked_conv2d_autograd);
  m.impl("masked_conv_transpose2d", &masked_conv_transpose2d_autograd);
  m.impl("masked_linear", &masked_linear_autograd);
}

}  // namespace lthgan
