// CPU masking kernel: out = where(mask, src, 0) (cast to out's dtype), one parallel pass.
#include "../lthgan.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <type_traits>

namespace lthgan {
namespace {

constexpr int64_t kGrain = 1 << 15;

template <typename bits_t>
void select_bits(const bits_t* __restrict__ s, const bool* __restrict__ m, bits_t* __restrict__ o,
                 int64_t n) {
  // Branch-free select on the bit pattern: pruned entries become +0 exactly (never -0, never
  // NaN from inf * 0). The compiler vectorises this loop.
  const uint8_t* mb = reinterpret_cast<const uint8_t*>(m);
  for (int64_t i = 0; i < n; ++i) {
    o[i] = s[i] & static_cast<bits_t>(-static_cast<bits_t>(mb[i] != 0));
  }
}

// In-place variant (o == s): no __restrict__ on aliasing pointers.
template <typename bits_t>
void select_bits_inplace(bits_t* o, const bool* __restrict__ m, int64_t n) {
  const uint8_t* mb = reinterpret_cast<const uint8_t*>(m);
  for (int64_t i = 0; i < n; ++i) {
    o[i] = o[i] & static_cast<bits_t>(-static_cast<bits_t>(mb[i] != 0));
  }
}

template <typename src_t, typename dst_t>
void select_cast(const src_t* __restrict__ s, const bool* __restrict__ m, dst_t* __restrict__ o,
                 int64_t n) {
  // Accumulate through double only when one side is double, so rounding is a single step.
  using acc_t = std::conditional_t<std::is_same_v<src_t, double> || std::is_same_v<dst_t, double>,
                                   double, float>;
  const uint8_t* mb = reinterpret_cast<const uint8_t*>(m);
  for (int64_t i = 0; i < n; ++i) {
    const acc_t v = static_cast<acc_t>(s[i]);
    o[i] = static_cast<dst_t>(mb[i] ? v : acc_t(0));
  }
}

template <typename bits_t>
void run_same_dtype(const at::Tensor& src, const at::Tensor& mask, at::Tensor& out) {
  const bool* m = mask.data_ptr<bool>();
  const int64_t n = src.numel();
  if (src.data_ptr() == out.data_ptr()) {
    bits_t* o = static_cast<bits_t*>(out.data_ptr());
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      select_bits_inplace<bits_t>(o + b, m + b, e - b);
    });
  } else {
    const bits_t* s = static_cast<const bits_t*>(src.data_ptr());
    bits_t* o = static_cast<bits_t*>(out.data_ptr());
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      select_bits<bits_t>(s + b, m + b, o + b, e - b);
    });
  }
}

}  // namespace

void masked_cast_cpu_kernel(const at::Tensor& src, const at::Tensor& mask, at::Tensor& out) {
  TORCH_INTERNAL_ASSERT(src.is_contiguous() && mask.is_contiguous() && out.is_contiguous());
  TORCH_INTERNAL_ASSERT(src.numel() == mask.numel() && src.numel() == out.numel());
  if (src.scalar_type() == out.scalar_type()) {
    switch (src.element_size()) {
      case 1: run_same_dtype<uint8_t>(src, mask, out); return;
      case 2: run_same_dtype<uint16_t>(src, mask, out); return;
      case 4: run_same_dtype<uint32_t>(src, mask, out); return;
      case 8: run_same_dtype<uint64_t>(src, mask, out); return;
      default: TORCH_CHECK(false, "lthgan: unsupported element size ", src.element_size());
    }
  }
  TORCH_CHECK(src.data_ptr() != out.data_ptr(), "lthgan: in-place masking cannot change dtype");
  const bool* m = mask.data_ptr<bool>();
  const int64_t n = src.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "masked_cast_src",
                                  [&] {
    using src_t = scalar_t;
    const src_t* s = src.data_ptr<src_t>();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(),
                                    "masked_cast_dst", [&] {
      using dst_t = scalar_t;
      dst_t* o = out.data_ptr<dst_t>();
      at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
        select_cast<src_t, dst_t>(s + b, m + b, o + b, e - b);
      });
    });
  });
}

}  // namespace lthgan
