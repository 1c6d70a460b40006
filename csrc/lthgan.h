// lthgan: shared declarations of the compiled core.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

namespace lthgan {

// ---- masking primitives (one fused pass over the weights) -----------------
// out = where(mask, src, 0) cast to `dtype`; src and mask must have the same shape.
at::Tensor masked_cast(const at::Tensor& src, const at::Tensor& mask, at::ScalarType dtype);
// t = where(mask, t, 0), in place.
void mask_inplace_(at::Tensor& t, const at::Tensor& mask);

// Device kernels. Both take contiguous tensors of equal numel.
void masked_cast_cpu_kernel(const at::Tensor& src, const at::Tensor& mask, at::Tensor& out);
#ifdef LTHGAN_WITH_CUDA
void masked_cast_cuda_kernel(const at::Tensor& src, const at::Tensor& mask, at::Tensor& out);
#endif

// ---- masked layers (csrc/masked_conv.cpp) ---------------------------------
at::Tensor masked_conv2d(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);
at::Tensor masked_conv_transpose2d(const at::Tensor& input, const at::Tensor& weight,
                                   const at::Tensor& mask, const std::optional<at::Tensor>& bias,
                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef output_padding, int64_t groups,
                                   at::IntArrayRef dilation);
std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_convolution_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& mask, bool has_bias, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, bool transposed, at::IntArrayRef output_padding, int64_t groups,
    std::array<bool, 3> output_mask);
at::Tensor masked_linear(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
                         const std::optional<at::Tensor>& bias);
std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_linear_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& mask, bool has_bias, std::array<bool, 3> output_mask);

// ---- selection and rewinding ----------------------------------------------
std::vector<at::Tensor> global_topk_masks_cpu(at::TensorList weights, at::TensorList masks,
                                              int64_t keep);
void rewind_cpu(at::TensorList weights, at::TensorList sources,
                const c10::List<std::optional<at::Tensor>>& masks);
#ifdef LTHGAN_WITH_CUDA
std::vector<at::Tensor> global_topk_masks_cuda(at::TensorList weights, at::TensorList masks,
                                               int64_t keep);
void rewind_cuda(at::TensorList weights, at::TensorList sources,
                 const c10::List<std::optional<at::Tensor>>& masks);
#endif

// ---- fused Adam / AdamW step (csrc/cpu/adam.cpp, csrc/cuda/adam.cu) ------------------------
struct AdamHyper {
  double lr, beta1, beta2, weight_decay, eps;
  bool decoupled;  // AdamW: decay the weight, not the gradient
};
void adam_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                   at::TensorList exp_avg_sqs, at::TensorList steps, double lr, double beta1,
                   double beta2, double weight_decay, double eps, bool decoupled);
// steps[i] += 1; returns the new step count.
double adam_advance_step(at::Tensor& step);
#ifdef LTHGAN_WITH_CUDA
void adam_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                    at::TensorList exp_avg_sqs, at::TensorList steps, double lr, double beta1,
                    double beta2, double weight_decay, double eps, bool decoupled);
#endif

// Shared argument checks (csrc/checks.cpp).
void check_topk_args(at::TensorList weights, at::TensorList masks, int64_t keep);
void check_rewind_args(at::TensorList weights, at::TensorList sources,
                       const c10::List<std::optional<at::Tensor>>& masks);
void check_adam_args(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                     at::TensorList exp_avg_sqs, at::TensorList steps);

}  // namespace lthgan
