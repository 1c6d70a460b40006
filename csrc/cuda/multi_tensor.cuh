// Multi-tensor launch helpers: a table of tensors and of fixed-size chunks over them, uploaded
// once (pinned host memory, async copy on the current stream), so that one kernel launch covers
// every tensor of a list.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <vector>

namespace lthgan {
namespace cuda {

constexpr int64_t kChunk = 1 << 14;  // elements per chunk; one block works on one chunk at a time

// Copies a host vector of int64 words to the device on the current stream (pinned staging
// buffer; the caching host allocator keeps it alive until the copy has run).
inline at::Tensor upload_words(const std::vector<int64_t>& words, const at::Device& device) {
  auto host = at::empty({static_cast<int64_t>(words.size())},
                        at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  std::memcpy(host.data_ptr<int64_t>(), words.data(), words.size() * sizeof(int64_t));
  return host.to(device, /*non_blocking=*/true);
}

inline int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return 0;
    case at::kHalf: return 1;
    case at::kBFloat16: return 2;
    case at::kDouble: return 3;
    default: return -1;
  }
}

inline int num_blocks_for(int64_t nchunks) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nchunks, int64_t(sms) * 8)));
}

}  // namespace cuda
}  // namespace lthgan
