// CUDA global_topk_masks: exact global top-k by |w| through radix selection on the bit patterns
// of |w|. Every pass covers all tensors in one multi-tensor launch; the digit choice between
// passes runs on the device, so the whole selection makes a single host round trip (at the end,
// to report NaN or a bad `keep`). Ties at the threshold are kept in (tensor, flat index) order.
#include "../lthgan.h"
#include "multi_tensor.cuh"

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace lthgan {
namespace {

constexpr int kDigitBits = 11;
constexpr int kBins = 1 << kDigitBits;
constexpr int kThreads = 512;
constexpr int kSelectThreads = 1024;  // kBins / kSelectThreads bins per thread
// table layout per tensor: weight, mask, out, numel, dtype code
constexpr int kSegWords = 5;

// device state words
enum : int {
  S_PREFIX = 0,   // threshold bits decided so far
  S_PMASK,        // which bits are decided
  S_K,            // entries still to select among those matching the prefix
  S_DONE,         // 1: rule is (key & pmask) >= prefix, every tie kept
  S_TOTAL,        // candidates (entries set in the masks)
  S_NAN,          // NaN seen
  S_RANK,         // 1: keep the first S_NEED ties at the exact threshold, in global order
  S_NEED,
  S_BAD_KEEP,     // keep > candidates
  S_NONE,         // keep == 0
  S_WORDS
};

template <typename KeyT>
__device__ __forceinline__ KeyT key_at(const void* w, int dt, int64_t i) {
  float f;
  switch (dt) {
    case 0: f = static_cast<const float*>(w)[i]; break;
    case 1: f = __half2float(static_cast<const __half*>(w)[i]); break;
    case 2: f = __bfloat162float(static_cast<const __nv_bfloat16*>(w)[i]); break;
    default: {
      const double d = fabs(static_cast<const double*>(w)[i]);
      if constexpr (sizeof(KeyT) == 8) {
        return static_cast<KeyT>(__double_as_longlong(d));
      } else {
        return static_cast<KeyT>(__float_as_uint(static_cast<float>(d)));
      }
    }
  }
  if constexpr (sizeof(KeyT) == 8) {
    return static_cast<KeyT>(__double_as_longlong(fabs(static_cast<double>(f))));
  } else {
    return static_cast<KeyT>(__float_as_uint(fabsf(f)));
  }
}

template <typename KeyT>
__device__ __forceinline__ KeyT inf_key() {
  if constexpr (sizeof(KeyT) == 8) {
    return static_cast<KeyT>(0x7ff0000000000000ull);
  } else {
    return static_cast<KeyT>(0x7f800000u);
  }
}

template <typename KeyT>
__global__ void hist_kernel(const int64_t* segs, const int64_t* chunks, int64_t nchunks,
                            int64_t* state, unsigned long long* hist, int shift, int width,
                            bool first) {
  __shared__ unsigned int sh[kBins];
  __shared__ int nan_flag;
  if (state[S_DONE] || state[S_NONE] || state[S_BAD_KEEP]) return;
  for (int b = threadIdx.x; b < kBins; b += blockDim.x) sh[b] = 0;
  if (threadIdx.x == 0) nan_flag = 0;
  __syncthreads();
  const KeyT prefix = static_cast<KeyT>(state[S_PREFIX]);
  const KeyT pmask = static_cast<KeyT>(state[S_PMASK]);
  const KeyT dmask = static_cast<KeyT>((KeyT(1) << width) - 1);
  bool nan = false;
  for (int64_t c = blockIdx.x; c < nchunks; c += gridDim.x) {
    const int64_t* seg = segs + chunks[2 * c] * kSegWords;
    const void* w = reinterpret_cast<const void*>(seg[0]);
    const bool* m = reinterpret_cast<const bool*>(seg[1]);
    const int dt = static_cast<int>(seg[4]);
    const int64_t lo = chunks[2 * c + 1];
    const int64_t hi = min(lo + lthgan::cuda::kChunk, seg[3]);
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
      const KeyT key = key_at<KeyT>(w, dt, i);
      if (first) nan |= key > inf_key<KeyT>();
      if (m[i] && (key & pmask) == prefix) {
        atomicAdd(&sh[static_cast<int>((key >> shift) & dmask)], 1u);
      }
    }
  }
  if (nan) nan_flag = 1;
  __syncthreads();
  for (int b = threadIdx.x; b < kBins; b += blockDim.x) {
    if (sh[b]) atomicAdd(&hist[b], static_cast<unsigned long long>(sh[b]));
  }
  if (threadIdx.x == 0 && nan_flag) atomicExch(reinterpret_cast<unsigned long long*>(&state[S_NAN]), 1ull);
}

// One block: pick the digit of the k-th largest key, update the state.
template <typename KeyT>
__global__ void select_kernel(int64_t* state, const unsigned long long* hist, int shift,
                              int width, int64_t keep, bool first, bool last) {
  using Scan = cub::BlockScan<long long, kSelectThreads>;
  __shared__ typename Scan::TempStorage tmp;
  __shared__ long long total_sh;
  if (state[S_DONE] || state[S_NONE] || state[S_BAD_KEEP]) return;
  constexpr int per = kBins / kSelectThreads;
  const int nb = 1 << width;
  // thread t owns bins in descending order: t = 0 has the highest bins
  const int base = nb - (threadIdx.x + 1) * per;
  long long local[per];
  long long sum = 0;
#pragma unroll
  for (int j = 0; j < per; ++j) {
    const int b = base + per - 1 - j;  // descending
    local[j] = (b >= 0) ? static_cast<long long>(hist[b]) : 0;
    sum += local[j];
  }
  long long incl;
  Scan(tmp).InclusiveSum(sum, incl);
  if (threadIdx.x == kSelectThreads - 1) total_sh = incl;
  __syncthreads();
  long long k;
  if (first) {
    const long long total = total_sh;
    if (threadIdx.x == 0) state[S_TOTAL] = total;
    if (keep > total) {
      if (threadIdx.x == 0) state[S_BAD_KEEP] = 1;
      return;
    }
    if (keep == 0) {
      if (threadIdx.x == 0) state[S_NONE] = 1;
      return;
    }
    k = keep;
  } else {
    k = state[S_K];
  }
  const long long excl = incl - sum;
  if (excl < k && k <= incl) {
    long long above = excl;
    int chosen = -1;
    long long count = 0;
#pragma unroll
    for (int j = 0; j < per; ++j) {
      const int b = base + per - 1 - j;
      if (chosen < 0 && b >= 0) {
        if (above + local[j] >= k) {
          chosen = b;
          count = local[j];
        } else {
          above += local[j];
        }
      }
    }
    k -= above;
    const KeyT dmask = static_cast<KeyT>((KeyT(1) << width) - 1);
    state[S_PREFIX] = static_cast<int64_t>(static_cast<KeyT>(state[S_PREFIX]) |
                                           (static_cast<KeyT>(chosen) << shift));
    state[S_PMASK] = static_cast<int64_t>(static_cast<KeyT>(state[S_PMASK]) | (dmask << shift));
    state[S_K] = k;
    if (count == k) {
      state[S_DONE] = 1;
    } else if (last) {
      state[S_RANK] = 1;
      state[S_NEED] = k;
    }
  }
}

template <typename KeyT>
__global__ void count_ties_kernel(const int64_t* segs, const int64_t* chunks, int64_t nchunks,
                                  const int64_t* state, long long* tie_counts) {
  using Reduce = cub::BlockReduce<long long, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  if (!state[S_RANK] || state[S_NONE] || state[S_BAD_KEEP]) return;
  const KeyT thr = static_cast<KeyT>(state[S_PREFIX]);
  for (int64_t c = blockIdx.x; c < nchunks; c += gridDim.x) {
    const int64_t* seg = segs + chunks[2 * c] * kSegWords;
    const void* w = reinterpret_cast<const void*>(seg[0]);
    const bool* m = reinterpret_cast<const bool*>(seg[1]);
    const int dt = static_cast<int>(seg[4]);
    const int64_t lo = chunks[2 * c + 1];
    const int64_t hi = min(lo + lthgan::cuda::kChunk, seg[3]);
    long long cnt = 0;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
      cnt += (m[i] && key_at<KeyT>(w, dt, i) == thr) ? 1 : 0;
    }
    const long long tot = Reduce(tmp).Sum(cnt);
    if (threadIdx.x == 0) tie_counts[c] = tot;
    __syncthreads();
  }
}

// One block: exclusive prefix sum of the per-chunk tie counts, in place.
__global__ void scan_ties_kernel(const int64_t* state, long long* tie_counts, int64_t nchunks) {
  using Scan = cub::BlockScan<long long, kSelectThreads>;
  __shared__ typename Scan::TempStorage tmp;
  __shared__ long long carry;
  if (!state[S_RANK] || state[S_NONE] || state[S_BAD_KEEP]) return;
  if (threadIdx.x == 0) carry = 0;
  __syncthreads();
  for (int64_t base = 0; base < nchunks; base += kSelectThreads) {
    const int64_t i = base + threadIdx.x;
    const long long v = i < nchunks ? tie_counts[i] : 0;
    long long excl, total;
    Scan(tmp).ExclusiveSum(v, excl, total);
    if (i < nchunks) tie_counts[i] = carry + excl;
    __syncthreads();
    if (threadIdx.x == 0) carry += total;
    __syncthreads();
  }
}

template <typename KeyT>
__global__ void write_kernel(const int64_t* segs, const int64_t* chunks, int64_t nchunks,
                             const int64_t* state, const long long* tie_offsets) {
  using Scan = cub::BlockScan<long long, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  const bool none = state[S_NONE] || state[S_BAD_KEEP];
  const bool rank_mode = state[S_RANK];
  const KeyT prefix = static_cast<KeyT>(state[S_PREFIX]);
  const KeyT pmask = static_cast<KeyT>(state[S_PMASK]);
  const long long need = state[S_NEED];
  for (int64_t c = blockIdx.x; c < nchunks; c += gridDim.x) {
    const int64_t* seg = segs + chunks[2 * c] * kSegWords;
    const void* w = reinterpret_cast<const void*>(seg[0]);
    const bool* m = reinterpret_cast<const bool*>(seg[1]);
    bool* out = reinterpret_cast<bool*>(seg[2]);
    const int dt = static_cast<int>(seg[4]);
    const int64_t lo = chunks[2 * c + 1];
    const int64_t hi = min(lo + lthgan::cuda::kChunk, seg[3]);
    if (none) {
      for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) out[i] = false;
    } else if (!rank_mode) {
      for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        out[i] = m[i] && ((key_at<KeyT>(w, dt, i) & pmask) >= prefix);
      }
    } else {
      // tiles of blockDim elements in order; ranks of ties through a block-wide scan
      long long running = tie_offsets[c];
      for (int64_t t0 = lo; t0 < hi; t0 += blockDim.x) {
        const int64_t i = t0 + threadIdx.x;
        bool cand = false;
        KeyT key = 0;
        if (i < hi) {
          cand = m[i];
          key = key_at<KeyT>(w, dt, i);
        }
        const long long tie = (i < hi && cand && key == prefix) ? 1 : 0;
        long long excl, total;
        Scan(tmp).ExclusiveSum(tie, excl, total);
        if (i < hi) {
          out[i] = cand && (key > prefix || (tie && running + excl < need));
        }
        running += total;
        __syncthreads();
      }
    }
  }
}

template <typename KeyT>
void run_select(const at::Tensor& table, int64_t seg_words, int64_t nchunks, int64_t keep,
                at::Tensor& state, const at::Device& device) {
  constexpr int bits = sizeof(KeyT) * 8;
  constexpr int npasses = (bits + kDigitBits - 1) / kDigitBits;
  auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t* segs = table.data_ptr<int64_t>();
  const int64_t* chunks = segs + seg_words;
  int64_t* st = state.data_ptr<int64_t>();
  auto hist = at::empty({kBins}, at::TensorOptions().dtype(at::kLong).device(device));
  auto* h = reinterpret_cast<unsigned long long*>(hist.data_ptr<int64_t>());
  const int blocks = lthgan::cuda::num_blocks_for(nchunks);
  for (int p = 0; p < npasses; ++p) {
    const int hi_bit = bits - p * kDigitBits;
    const int shift = std::max(0, hi_bit - kDigitBits);
    const int width = hi_bit - shift;
    C10_CUDA_CHECK(cudaMemsetAsync(h, 0, kBins * sizeof(unsigned long long), stream));
    hist_kernel<KeyT><<<blocks, kThreads, 0, stream>>>(segs, chunks, nchunks, st, h, shift,
                                                       width, p == 0);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    select_kernel<KeyT><<<1, kSelectThreads, 0, stream>>>(st, h, shift, width, keep, p == 0,
                                                          p == npasses - 1);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  auto ties = at::empty({nchunks}, at::TensorOptions().dtype(at::kLong).device(device));
  auto* tc = reinterpret_cast<long long*>(ties.data_ptr<int64_t>());
  count_ties_kernel<KeyT><<<blocks, kThreads, 0, stream>>>(segs, chunks, nchunks, st, tc);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  scan_ties_kernel<<<1, kSelectThreads, 0, stream>>>(st, tc, nchunks);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  write_kernel<KeyT><<<blocks, kThreads, 0, stream>>>(segs, chunks, nchunks, st, tc);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

std::vector<at::Tensor> global_topk_masks_cuda(at::TensorList weights, at::TensorList masks,
                                               int64_t keep) {
  check_topk_args(weights, masks, keep);
  std::vector<at::Tensor> outs;
  outs.reserve(weights.size());
  if (weights.empty()) {
    TORCH_CHECK(keep == 0, "lthgan.global_topk_masks: keep=", keep,
                " but no weights were given; expected keep=0");
    return outs;
  }
  const at::Device device = weights[0].device();
  const at::cuda::CUDAGuard guard(device);
  std::vector<at::Tensor> ws, ms;
  std::vector<int64_t> segs, chunks;
  bool wide = false;
  int64_t nseg = 0, total = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    ws.push_back(weights[i].contiguous());
    ms.push_back(masks[i].contiguous());
    outs.push_back(at::empty(weights[i].sizes(), masks[i].options()));
    wide |= weights[i].scalar_type() == at::kDouble;
    const int64_t n = ws.back().numel();
    if (n == 0) continue;
    segs.insert(segs.end(), {reinterpret_cast<int64_t>(ws.back().data_ptr()),
                             reinterpret_cast<int64_t>(ms.back().data_ptr()),
                             reinterpret_cast<int64_t>(outs.back().data_ptr()), n,
                             lthgan::cuda::dtype_code(ws.back().scalar_type())});
    for (int64_t lo = 0; lo < n; lo += lthgan::cuda::kChunk) {
      chunks.push_back(nseg);
      chunks.push_back(lo);
    }
    ++nseg;
    total += n;
  }
  if (total == 0) {
    TORCH_CHECK(keep == 0, "lthgan.global_topk_masks: keep=", keep,
                " but the weights hold no entries; expected keep=0");
    return outs;
  }
  const int64_t nchunks = static_cast<int64_t>(chunks.size() / 2);
  const int64_t seg_words = static_cast<int64_t>(segs.size());
  segs.insert(segs.end(), chunks.begin(), chunks.end());
  auto table = lthgan::cuda::upload_words(segs, device);
  auto state = at::zeros({S_WORDS}, at::TensorOptions().dtype(at::kLong).device(device));
  if (wide) {
    run_select<uint64_t>(table, seg_words, nchunks, keep, state, device);
  } else {
    run_select<uint32_t>(table, seg_words, nchunks, keep, state, device);
  }
  // The one host round trip: read back the flags.
  auto flags = state.cpu();
  const int64_t* f = flags.data_ptr<int64_t>();
  TORCH_CHECK(!f[S_NAN], "lthgan.global_topk_masks: the weights contain NaN; magnitude pruning "
              "needs finite or infinite values");
  TORCH_CHECK(!f[S_BAD_KEEP], "lthgan.global_topk_masks: keep=", keep, " is more than the ",
              f[S_TOTAL], " entries still set in the masks; expected 0 <= keep <= ", f[S_TOTAL]);
  return outs;
}

}  // namespace lthgan
