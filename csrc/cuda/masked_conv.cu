// CUDA masking kernel: out = where(mask, src, 0) (cast to out's dtype), one fused elementwise
// pass on the current stream.
#include "../lthgan.h"

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

namespace lthgan {
namespace {

constexpr int kThreads = 256;

// Same dtype: select on the bit pattern, 4 elements per thread per step when aligned.
template <typename bits_t>
__global__ void select_bits_kernel(const bits_t* s, const bool* m, bits_t* o, int64_t n) {
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const bits_t keep = static_cast<bits_t>(-static_cast<bits_t>(m[i] ? 1 : 0));
    o[i] = s[i] & keep;
  }
}

// float32 fast path: float4 loads of the weights and uchar4 loads of the mask.
__global__ void select_f32x4_kernel(const uint4* s, const uchar4* m, uint4* o, int64_t n4) {
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n4; i += stride) {
    const uint4 v = s[i];
    const uchar4 k = m[i];
    uint4 r;
    r.x = v.x & (0u - (k.x != 0));
    r.y = v.y & (0u - (k.y != 0));
    r.z = v.z & (0u - (k.z != 0));
    r.w = v.w & (0u - (k.w != 0));
    o[i] = r;
  }
}

template <typename src_t, typename dst_t>
__global__ void select_cast_kernel(const src_t* s, const bool* m, dst_t* o, int64_t n) {
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    using acc_t = std::conditional_t<std::is_same_v<src_t, double> || std::is_same_v<dst_t, double>,
                                     double, float>;
    const acc_t v = static_cast<acc_t>(s[i]);
    o[i] = static_cast<dst_t>(m[i] ? v : acc_t(0));
  }
}

int grid_for(int64_t n) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads,
                                                                  int64_t(sms) * 16)));
}

template <typename bits_t>
void launch_bits(const at::Tensor& src, const at::Tensor& mask, at::Tensor& out,
                 cudaStream_t stream) {
  const int64_t n = src.numel();
  select_bits_kernel<bits_t><<<grid_for(n), kThreads, 0, stream>>>(
      static_cast<const bits_t*>(src.data_ptr()), mask.data_ptr<bool>(),
      static_cast<bits_t*>(out.data_ptr()), n);
}

}  // namespace

void masked_cast_cuda_kernel(const at::Tensor& src, const at::Tensor& mask, at::Tensor& out) {
  TORCH_INTERNAL_ASSERT(src.is_contiguous() && mask.is_contiguous() && out.is_contiguous());
  const at::cuda::CUDAGuard guard(src.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t n = src.numel();
  if (n == 0) return;
  if (src.scalar_type() == out.scalar_type()) {
    const auto sp = reinterpret_cast<uintptr_t>(src.data_ptr());
    const auto op = reinterpret_cast<uintptr_t>(out.data_ptr());
    const auto mp = reinterpret_cast<uintptr_t>(mask.data_ptr());
    if (src.element_size() == 4 && n % 4 == 0 && sp % 16 == 0 && op % 16 == 0 && mp % 4 == 0) {
      const int64_t n4 = n / 4;
      select_f32x4_kernel<<<grid_for(n4), kThreads, 0, stream>>>(
          reinterpret_cast<const uint4*>(sp), reinterpret_cast<const uchar4*>(mp),
          reinterpret_cast<uint4*>(op), n4);
    } else {
      switch (src.element_size()) {
        case 1: launch_bits<uint8_t>(src, mask, out, stream); break;
        case 2: launch_bits<uint16_t>(src, mask, out, stream); break;
        case 4: launch_bits<uint32_t>(src, mask, out, stream); break;
        case 8: launch_bits<uint64_t>(src, mask, out, stream); break;
        default: TORCH_CHECK(false, "lthgan: unsupported element size ", src.element_size());
      }
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "masked_cast_src",
                                  [&] {
    using src_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(),
                                    "masked_cast_dst", [&] {
      using dst_t = scalar_t;
      select_cast_kernel<src_t, dst_t><<<grid_for(n), kThreads, 0, stream>>>(
          src.data_ptr<src_t>(), mask.data_ptr<bool>(), out.data_ptr<dst_t>(), n);
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace lthgan
