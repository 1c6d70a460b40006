// CPU rewind_: weights[i] = where(masks[i], sources[i], 0) in place (or a plain copy), one pass.
#include "../lthgan.h"

namespace lthgan {

void rewind_cpu(at::TensorList weights, at::TensorList sources,
                const c10::List<std::optional<at::Tensor>>& masks) {
  check_rewind_args(weights, sources, masks);
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < weights.size(); ++i) {
    at::Tensor w = weights[i];
    const std::optional<at::Tensor> m = masks[i];
    if (!m.has_value() || !m->defined()) {
      w.copy_(sources[i]);
      continue;
    }
    if (w.numel() == 0) continue;
    if (w.is_contiguous()) {
      auto s = sources[i].contiguous();
      auto mc = m->contiguous();
      masked_cast_cpu_kernel(s, mc, w);  // writes straight into w's storage
    } else {
      w.copy_(at::where(*m, sources[i], at::zeros({}, w.options())));
    }
  }
}

}  // namespace lthgan
