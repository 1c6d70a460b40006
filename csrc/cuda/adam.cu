// CUDA fused Adam / AdamW step: one kernel per tensor, one pass per element, the arithmetic of
// csrc/cpu/adam.cpp (torch.optim.Adam(foreach=False) order). Entries whose grad, exp_avg and
// exp_avg_sq are all zero have an exact update of zero and are not written (AdamW still
// applies its decay).
#include "../lthgan.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>

namespace lthgan {
namespace {

template <typename T>
struct Consts {
  T step_size, bc2_sqrt, eps, w1, beta2, w2, wd, decay;
  bool adam_wd, adamw_wd;
};

template <typename T>
__global__ void adam_kernel(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m,
                            T* __restrict__ v, int64_t n, Consts<T> c) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    T gi = g[i];
    const T m0 = m[i];
    const T v0 = v[i];
    T pi = p[i];
    if (c.adamw_wd) pi = pi * c.decay;
    if (gi == T(0) && m0 == T(0) && v0 == T(0)) {
      if (c.adamw_wd) p[i] = pi;
      continue;
    }
    if (c.adam_wd) gi = gi + c.wd * pi;
    const T mi = m0 + c.w1 * (gi - m0);
    const T vi = v0 * c.beta2 + c.w2 * gi * gi;
    const T denom = std::sqrt(vi) / c.bc2_sqrt + c.eps;
    p[i] = pi + (-c.step_size) * (mi / denom);
    m[i] = mi;
    v[i] = vi;
  }
}

template <typename T>
Consts<T> consts(const AdamHyper& h, double step) {
  const double bc1 = 1.0 - std::pow(h.beta1, step);
  const double bc2 = 1.0 - std::pow(h.beta2, step);
  return Consts<T>{static_cast<T>(h.lr / bc1), static_cast<T>(std::sqrt(bc2)),
                   static_cast<T>(h.eps), static_cast<T>(1.0 - h.beta1),
                   static_cast<T>(h.beta2), static_cast<T>(1.0 - h.beta2),
                   static_cast<T>(h.weight_decay), static_cast<T>(1.0 - h.lr * h.weight_decay),
                   h.weight_decay != 0.0 && !h.decoupled, h.weight_decay != 0.0 && h.decoupled};
}

}  // namespace

void adam_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                    at::TensorList exp_avg_sqs, at::TensorList steps, double lr, double beta1,
                    double beta2, double weight_decay, double eps, bool decoupled) {
  check_adam_args(params, grads, exp_avgs, exp_avg_sqs, steps);
  if (params.empty()) return;
  const AdamHyper h{lr, beta1, beta2, weight_decay, eps, decoupled};
  c10::cuda::CUDAGuard guard(params[0].device());
  auto stream = at::cuda::getCurrentCUDAStream();
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  constexpr int kThreads = 256;
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor s = steps[i];
    const double step = adam_advance_step(s);
    const int64_t n = params[i].numel();
    if (n == 0) continue;
    const int blocks = static_cast<int>(
        std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(sms) * 16));
    if (params[i].scalar_type() == at::kDouble) {
      adam_kernel<double><<<blocks, kThreads, 0, stream>>>(
          params[i].data_ptr<double>(), grads[i].data_ptr<double>(),
          exp_avgs[i].data_ptr<double>(), exp_avg_sqs[i].data_ptr<double>(), n,
          consts<double>(h, step));
    } else {
      adam_kernel<float><<<blocks, kThreads, 0, stream>>>(
          params[i].data_ptr<float>(), grads[i].data_ptr<float>(), exp_avgs[i].data_ptr<float>(),
          exp_avg_sqs[i].data_ptr<float>(), n, consts<float>(h, step));
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace lthgan
