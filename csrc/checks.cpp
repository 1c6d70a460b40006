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

}  // namespace lthgan
