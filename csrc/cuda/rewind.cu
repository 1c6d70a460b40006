// CUDA rewind_: every tensor of the list in one multi-tensor launch, in place:
// weights[i] = where(masks[i], sources[i], 0), or a plain copy where masks[i] is None.
// Works on bit patterns, so one kernel serves every dtype; it allocates nothing on the device
// beyond the small table of tensors.
#include "../lthgan.h"
#include "multi_tensor.cuh"

#include <c10/cuda/CUDAException.h>

namespace lthgan {
namespace {

constexpr int kThreads = 256;
// table layout per tensor: dst, src, mask (0 when none), numel, element size
constexpr int kSegWords = 5;

template <typename bits_t>
__device__ __forceinline__ void rewind_range(const int64_t* seg, int64_t lo, int64_t hi) {
  bits_t* d = reinterpret_cast<bits_t*>(seg[0]);
  const bits_t* s = reinterpret_cast<const bits_t*>(seg[1]);
  const bool* m = reinterpret_cast<const bool*>(seg[2]);
  if (m == nullptr) {
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) d[i] = s[i];
  } else {
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
      d[i] = s[i] & static_cast<bits_t>(-static_cast<bits_t>(m[i] ? 1 : 0));
    }
  }
}

__global__ void rewind_kernel(const int64_t* segs, const int64_t* chunks, int64_t nchunks) {
  for (int64_t c = blockIdx.x; c < nchunks; c += gridDim.x) {
    const int64_t* seg = segs + chunks[2 * c] * kSegWords;
    const int64_t lo = chunks[2 * c + 1];
    const int64_t hi = min(lo + lthgan::cuda::kChunk, seg[3]);
    switch (seg[4]) {
      case 1: rewind_range<uint8_t>(seg, lo, hi); break;
      case 2: rewind_range<uint16_t>(seg, lo, hi); break;
      case 4: rewind_range<uint32_t>(seg, lo, hi); break;
      case 8: rewind_range<uint64_t>(seg, lo, hi); break;
      default: break;
    }
  }
}

}  // namespace

void rewind_cuda(at::TensorList weights, at::TensorList sources,
                 const c10::List<std::optional<at::Tensor>>& masks) {
  check_rewind_args(weights, sources, masks);
  if (weights.empty()) return;
  at::NoGradGuard no_grad;
  const at::cuda::CUDAGuard guard(weights[0].device());
  std::vector<int64_t> segs, chunks;
  std::vector<at::Tensor> keep_alive;  // contiguous copies of odd-layout sources/masks
  int64_t nseg = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    at::Tensor w = weights[i];
    const std::optional<at::Tensor> m = masks[i];
    const bool has_mask = m.has_value() && m->defined();
    if (w.numel() == 0) continue;
    const int64_t esize = w.element_size();
    if (!w.is_contiguous() || !(esize == 1 || esize == 2 || esize == 4 || esize == 8)) {
      // rare: non-contiguous parameters; handled by ATen on the same stream
      if (has_mask) {
        w.copy_(at::where(*m, sources[i], at::zeros({}, w.options())));
      } else {
        w.copy_(sources[i]);
      }
      continue;
    }
    at::Tensor s = sources[i].contiguous();
    keep_alive.push_back(s);
    int64_t mp = 0;
    if (has_mask) {
      at::Tensor mc = m->contiguous();
      keep_alive.push_back(mc);
      mp = reinterpret_cast<int64_t>(mc.data_ptr());
    }
    segs.insert(segs.end(), {reinterpret_cast<int64_t>(w.data_ptr()),
                             reinterpret_cast<int64_t>(s.data_ptr()), mp, w.numel(), esize});
    for (int64_t lo = 0; lo < w.numel(); lo += lthgan::cuda::kChunk) {
      chunks.push_back(nseg);
      chunks.push_back(lo);
    }
    ++nseg;
  }
  if (nseg == 0) return;
  const int64_t nchunks = static_cast<int64_t>(chunks.size() / 2);
  const int64_t seg_words = static_cast<int64_t>(segs.size());
  segs.insert(segs.end(), chunks.begin(), chunks.end());
  auto table = lthgan::cuda::upload_words(segs, weights[0].device());
  const int64_t* t = table.data_ptr<int64_t>();
  auto stream = at::cuda::getCurrentCUDAStream();
  rewind_kernel<<<lthgan::cuda::num_blocks_for(nchunks), kThreads, 0, stream>>>(
      t, t + seg_words, nchunks);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  // keep_alive's tensors are freed through the caching allocator, which is stream-ordered.
}

}  // namespace lthgan
