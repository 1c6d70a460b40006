// Argument checks shared by the CPU and CUDA kernels of the selection and rewind ops.
// Every check runs before anything is written.
#include "lthgan.h"

namespace lthgan {

namespace {
bool is_float_type(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}
}  // namespace

void check_topk_args(at::TensorList weights, at::TensorList masks, int64_t keep) {
  TORCH_CHECK(weights.size() == masks.size(), "lthgan.global_topk_masks: got ", weights.size(),
              " weights but ", masks.size(), " masks; pass one mask per weight");
  TORCH_CHECK(keep >= 0, "lthgan.global_topk_masks: keep must be >= 0, got ", keep);
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto& w = weights[i];
    const auto& m = masks[i];
    TORCH_CHECK(is_float_type(w.scalar_type()), "lthgan.global_topk_masks: weights[", i,
                "] must be float32/float64/float16/bfloat16, got ", w.scalar_type());
    TORCH_CHECK(m.scalar_type() == at::kBool, "lthgan.global_topk_masks: masks[", i,
                "] must be a bool tensor, got ", m.scalar_type());
    TORCH_CHECK(m.sizes() == w.sizes(), "lthgan.global_topk_masks: masks[", i, "] has shape ",
                m.sizes(), " but weights[", i, "] has shape ", w.sizes());
    TORCH_CHECK(w.device() == weights[0].device() && m.device() == weights[0].device(),
                "lthgan.global_topk_masks: weights[", i, "] (", w.device(), ") and masks[", i,
                "] (", m.device(), ") must be on the same device as weights[0] (",
                weights[0].device(), ")");
  }
}

void check_rewind_args(at::TensorList weights, at::TensorList sources,
                       const c10::List<std::optional<at::Tensor>>& masks) {
  TORCH_CHECK(weights.size() == sources.size() && weights.size() == masks.size(),
              "lthgan.rewind_: got ", weights.size(), " weights, ", sources.size(),
              " sources and ", masks.size(), " masks; the three lists must have the same length");
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto& w = weights[i];
    const auto& s = sources[i];
    TORCH_CHECK(s.sizes() == w.sizes(), "lthgan.rewind_: sources[", i, "] has shape ", s.sizes(),
                " but weights[", i, "] has shape ", w.sizes());
    TORCH_CHECK(s.scalar_type() == w.scalar_type(), "lthgan.rewind_: sources[", i,
                "] has dtype ", s.scalar_type(), " but weights[", i, "] has dtype ",
                w.scalar_type());
    TORCH_CHECK(s.device() == w.device(), "lthgan.rewind_: sources[", i, "] is on ", s.device(),
                " but weights[", i, "] is on ", w.device());
    TORCH_CHECK(w.device() == weights[0].device(), "lthgan.rewind_: weights[", i, "] is on ",
                w.device(), " but weights[0] is on ", weights[0].device(),
                "; all tensors must be on one device");
    const std::optional<at::Tensor> m = masks[i];
    if (m.has_value() && m->defined()) {
      TORCH_CHECK(m->scalar_type() == at::kBool, "lthgan.rewind_: masks[", i,
                  "] must be a bool tensor, got ", m->scalar_type());
      TORCH_CHECK(m->sizes() == w.sizes(), "lthgan.rewind_: masks[", i, "] has shape ",
                  m->sizes(), " but weights[", i, "] has shape ", w.sizes());
      TORCH_CHECK(m->device() == w.device(), "lthgan.rewind_: masks[", i, "] is on ",
                  m->device(), " but weights[", i, "] is on ", w.device());
    }
    TORCH_CHECK(!w.is_inference() || c10::InferenceMode::is_enabled(),
                "lthgan.rewind_: weights[", i, "] is an inference tensor and cannot be updated");
    for (size_t j = 0; j < i; ++j) {
      TORCH_CHECK(!(weights[j].numel() > 0 && weights[j].data_ptr() == w.data_ptr()),
                  "lthgan.rewind_: weights[", j, "] and weights[", i, "] share storage");
    }
  }
}

void check_adam_args(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                     at::TensorList exp_avg_sqs, at::TensorList steps) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && exp_avgs.size() == n && exp_avg_sqs.size() == n &&
                  steps.size() == n,
              "lthgan.adam_step_: got ", n, " params, ", grads.size(), " grads, ",
              exp_avgs.size(), " exp_avgs, ", exp_avg_sqs.size(), " exp_avg_sqs and ",
              steps.size(), " steps; the five lists must have the same length");
  for (size_t i = 0; i < n; ++i) {
    const auto& p = params[i];
    TORCH_CHECK(p.scalar_type() == at::kFloat || p.scalar_type() == at::kDouble,
                "lthgan.adam_step_: params[", i, "] must be float32 or float64, got ",
                p.scalar_type());
    TORCH_CHECK(p.device() == params[0].device(), "lthgan.adam_step_: params[", i, "] is on ",
                p.device(), " but params[0] is on ", params[0].device());
    TORCH_CHECK(steps[i].numel() == 1, "lthgan.adam_step_: steps[", i,
                "] must hold one number, got shape ", steps[i].sizes());
    const at::Tensor* others[] = {&grads[i], &exp_avgs[i], &exp_avg_sqs[i]};
    const char* names[] = {"grads", "exp_avgs", "exp_avg_sqs"};
    for (int k = 0; k < 3; ++k) {
      const auto& t = *others[k];
      TORCH_CHECK(t.scalar_type() == p.scalar_type() && t.sizes() == p.sizes() &&
                      t.device() == p.device(),
                  "lthgan.adam_step_: ", names[k], "[", i, "] (", t.scalar_type(), ", shape ",
                  t.sizes(), ", ", t.device(), ") must match params[", i, "] (",
                  p.scalar_type(), ", shape ", p.sizes(), ", ", p.device(), ")");
      TORCH_CHECK(t.is_contiguous() && !t.is_sparse(), "lthgan.adam_step_: ", names[k], "[", i,
                  "] must be dense and contiguous");
    }
    TORCH_CHECK(p.is_contiguous(), "lthgan.adam_step_: params[", i, "] must be contiguous");
  }
}

}  // namespace lthgan
