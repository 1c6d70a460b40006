// Masked convolution, transposed convolution and linear: forward and one fused backward.
// The convolution itself goes through ATen (oneDNN on CPU, cuDNN on CUDA); lthgan's own work
// is the single masking pass over the weights (fused with the autocast cast) and the in-place
// masking of the weight gradient.
#include "lthgan.h"

#include <ATen/TensorUtils.h>

namespace lthgan {

namespace {

bool is_float_type(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

void check_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref) {
  TORCH_CHECK(t.device() == ref.device(), "lthgan.", op, ": ", name, " is on ", t.device(),
              " but input is on ", ref.device(), "; all tensors must be on the same device");
}

void check_weight_mask(const char* op, const at::Tensor& input, const at::Tensor& weight,
                       const at::Tensor& mask, const std::optional<at::Tensor>& bias,
                       int64_t weight_dim) {
  TORCH_CHECK(mask.scalar_type() == at::kBool, "lthgan.", op,
              ": mask must be a bool tensor, got dtype ", mask.scalar_type(),
              " (convert with mask.bool())");
  TORCH_CHECK(mask.sizes() == weight.sizes(), "lthgan.", op, ": mask has shape ", mask.sizes(),
              " but weight has shape ", weight.sizes(), "; they must match");
  TORCH_CHECK(weight.dim() == weight_dim, "lthgan.", op, ": weight must be ", weight_dim,
              "-D, got shape ", weight.sizes());
  TORCH_CHECK(is_float_type(input.scalar_type()), "lthgan.", op,
              ": input must be a floating-point tensor (float32/float64/float16/bfloat16), got ",
              input.scalar_type());
  TORCH_CHECK(is_float_type(weight.scalar_type()), "lthgan.", op,
              ": weight must be a floating-point tensor, got ", weight.scalar_type());
  check_device(op, "weight", weight, input);
  check_device(op, "mask", mask, input);
  if (bias.has_value() && bias->defined()) {
    check_device(op, "bias", *bias, input);
    TORCH_CHECK(is_float_type(bias->scalar_type()), "lthgan.", op,
                ": bias must be a floating-point tensor, got ", bias->scalar_type());
  }
}

std::optional<at::Tensor> cast_bias(const std::optional<at::Tensor>& bias, at::ScalarType dtype) {
  if (!bias.has_value() || !bias->defined()) return std::nullopt;
  return bias->scalar_type() == dtype ? *bias : bias->to(dtype);
}

at::Tensor placeholder(const at::Tensor& like) { return at::empty({0}, like.options()); }

}  // namespace

at::Tensor masked_cast(const at::Tensor& src, const at::Tensor& mask, at::ScalarType dtype) {
  TORCH_CHECK(mask.scalar_type() == at::kBool, "lthgan: mask must be bool, got ",
              mask.scalar_type());
  TORCH_CHECK(src.sizes() == mask.sizes(), "lthgan: mask shape ", mask.sizes(),
              " does not match tensor shape ", src.sizes());
  auto s = src.contiguous();
  auto m = mask.contiguous();
  auto out = at::empty(s.sizes(), s.options().dtype(dtype));
  if (s.numel() == 0) return out;
#ifdef LTHGAN_WITH_CUDA
  if (s.is_cuda()) {
    masked_cast_cuda_kernel(s, m, out);
    return out;
  }
#endif
  TORCH_CHECK(s.is_cpu(), "lthgan: unsupported device ", s.device());
  masked_cast_cpu_kernel(s, m, out);
  return out;
}

void mask_inplace_(at::Tensor& t, const at::Tensor& mask) {
  if (t.numel() == 0) return;
  if (t.is_contiguous() && mask.is_contiguous()) {
#ifdef LTHGAN_WITH_CUDA
    if (t.is_cuda()) {
      masked_cast_cuda_kernel(t, mask, t);
      return;
    }
#endif
    masked_cast_cpu_kernel(t, mask, t);
    return;
  }
  // Rare layouts (e.g. a channels_last gradient): same result through ATen.
  t.copy_(at::where(mask, t, at::zeros({}, t.options())));
}

at::Tensor masked_conv2d(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_weight_mask("masked_conv2d", input, weight, mask, bias, 4);
  TORCH_CHECK(input.dim() == 3 || input.dim() == 4,
              "lthgan.masked_conv2d: input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape ",
              input.sizes());
  auto w = masked_cast(weight, mask, input.scalar_type());
  return at::conv2d(input, w, cast_bias(bias, input.scalar_type()), stride, padding, dilation,
                    groups);
}

at::Tensor masked_conv_transpose2d(const at::Tensor& input, const at::Tensor& weight,
                                   const at::Tensor& mask, const std::optional<at::Tensor>& bias,
                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef output_padding, int64_t groups,
                                   at::IntArrayRef dilation) {
  check_weight_mask("masked_conv_transpose2d", input, weight, mask, bias, 4);
  TORCH_CHECK(input.dim() == 3 || input.dim() == 4,
              "lthgan.masked_conv_transpose2d: input must be 3-D (C, H, W) or 4-D (N, C, H, W), "
              "got shape ",
              input.sizes());
  auto w = masked_cast(weight, mask, input.scalar_type());
  return at::conv_transpose2d(input, w, cast_bias(bias, input.scalar_type()), stride, padding,
                              output_padding, groups, dilation);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_convolution_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& mask, bool has_bias, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, bool transposed, at::IntArrayRef output_padding, int64_t groups,
    std::array<bool, 3> output_mask) {
  check_weight_mask("masked_convolution_backward", input, weight, mask, std::nullopt, 4);
  const bool unbatched = input.dim() == 3;
  auto x = unbatched ? input.unsqueeze(0) : input;
  auto go = unbatched ? grad_output.unsqueeze(0) : grad_output;
  if (go.scalar_type() != x.scalar_type()) go = go.to(x.scalar_type());
  // Recompute the masked weight (one pass) rather than keep a second copy alive between
  // forward and backward.
  auto w = masked_cast(weight, mask, x.scalar_type());
  std::optional<at::IntArrayRef> bias_sizes;
  std::vector<int64_t> bsz;
  if (has_bias) {
    bsz.push_back(transposed ? weight.size(1) * groups : weight.size(0));
    bias_sizes = at::IntArrayRef(bsz);
  }
  auto [gi, gw, gb] = at::convolution_backward(
      go, x, w, bias_sizes, stride, padding, dilation, transposed, output_padding, groups,
      {output_mask[0], output_mask[1], output_mask[2] && has_bias});
  at::Tensor grad_input = output_mask[0] ? (unbatched ? gi.squeeze(0) : gi) : placeholder(input);
  at::Tensor grad_weight;
  if (output_mask[1]) {
    if (gw.scalar_type() == weight.scalar_type()) {
      mask_inplace_(gw, mask);  // in place: no unmasked gradient outlives this op
      grad_weight = gw;
    } else {
      grad_weight = masked_cast(gw, mask, weight.scalar_type());  // mask + cast back, one pass
    }
  } else {
    grad_weight = placeholder(weight);
  }
  at::Tensor grad_bias = (output_mask[2] && has_bias) ? gb.to(weight.scalar_type())
                                                      : placeholder(weight);
  return {grad_input, grad_weight, grad_bias};
}

at::Tensor masked_linear(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
                         const std::optional<at::Tensor>& bias) {
  check_weight_mask("masked_linear", input, weight, mask, bias, 2);
  TORCH_CHECK(input.dim() >= 1 && input.size(-1) == weight.size(1),
              "lthgan.masked_linear: input's last dimension must equal weight.size(1) = ",
              weight.size(1), ", got input shape ", input.sizes());
  auto w = masked_cast(weight, mask, input.scalar_type());
  return at::linear(input, w, cast_bias(bias, input.scalar_type()));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_linear_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& mask, bool has_bias, std::array<bool, 3> output_mask) {
  check_weight_mask("masked_linear_backward", input, weight, mask, std::nullopt, 2);
  auto go = grad_output.scalar_type() == input.scalar_type() ? grad_output
                                                             : grad_output.to(input.scalar_type());
  const int64_t out_f = weight.size(0), in_f = weight.size(1);
  at::Tensor grad_input, grad_weight, grad_bias;
  if (output_mask[0]) {
    auto w = masked_cast(weight, mask, input.scalar_type());
    grad_input = at::matmul(go, w);
  } else {
    grad_input = placeholder(input);
  }
  auto go2 = go.reshape({-1, out_f});
  if (output_mask[1]) {
    auto gw = at::mm(go2.t(), input.reshape({-1, in_f}));
    if (gw.scalar_type() == weight.scalar_type()) {
      mask_inplace_(gw, mask);
      grad_weight = gw;
    } else {
      grad_weight = masked_cast(gw, mask, weight.scalar_type());
    }
  } else {
    grad_weight = placeholder(weight);
  }
  grad_bias = (output_mask[2] && has_bias) ? go2.sum(0).to(weight.scalar_type())
                                           : placeholder(weight);
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace lthgan
