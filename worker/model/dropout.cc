#include "worker/model/dropout.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <mutex>

#include "common/cpu_dispatch.h"
#include "worker/model/generator.h"

namespace ftune::model {
namespace {

// splitmix64's output function: a bijective 64-bit mixer whose outputs for consecutive
// counters pass BigCrush; two 32-bit decisions come from each.
inline uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Writes `keep` or `drop` (raw bit patterns of the mask's dtype) for pairs [begin, end).
template <typename Bits>
inline __attribute__((always_inline)) void FillMask(Bits* __restrict out, int64_t n,
                                                    int64_t begin, int64_t end, uint64_t base,
                                                    uint64_t threshold, Bits keep, Bits drop) {
  for (int64_t j = begin; j < end; ++j) {
    const uint64_t h = Mix(base + static_cast<uint64_t>(j) * 0x9E3779B97F4A7C15ULL);
    const int64_t i = 2 * j;
    out[i] = (h & 0xFFFFFFFFULL) < threshold ? drop : keep;
    if (i + 1 < n) out[i + 1] = (h >> 32) < threshold ? drop : keep;
  }
}

FTUNE_CPU_DISPATCH
void FillMask16(uint16_t* out, int64_t n, int64_t begin, int64_t end, uint64_t base,
                uint64_t threshold, uint16_t keep, uint16_t drop) {
  FillMask(out, n, begin, end, base, threshold, keep, drop);
}

FTUNE_CPU_DISPATCH
void FillMask32(uint32_t* out, int64_t n, int64_t begin, int64_t end, uint64_t base,
                uint64_t threshold, uint32_t keep, uint32_t drop) {
  FillMask(out, n, begin, end, base, threshold, keep, drop);
}

FTUNE_CPU_DISPATCH
void FillMask64(uint64_t* out, int64_t n, int64_t begin, int64_t end, uint64_t base,
                uint64_t threshold, uint64_t keep, uint64_t drop) {
  FillMask(out, n, begin, end, base, threshold, keep, drop);
}

template <typename Bits, typename T>
Bits BitsOf(T value) {
  static_assert(sizeof(value) == sizeof(Bits));
  Bits bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

uint64_t NextSeed() {
  at::Generator gen = CurrentGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return at::check_generator<at::CPUGeneratorImpl>(gen)->random64();
}

}  // namespace

torch::Tensor DropoutMask(const torch::Tensor& like, double p, uint64_t seed) {
  TORCH_CHECK(p >= 0 && p < 1, "dropout probability must be in [0, 1), got ", p);
  TORCH_CHECK(like.device().is_cpu(), "DropoutMask runs on CPU");
  torch::Tensor mask = torch::empty(like.sizes(), like.options().memory_format(at::MemoryFormat::Contiguous));
  // Element i is dropped when its 32-bit draw falls below p * 2^32.
  const uint64_t threshold = static_cast<uint64_t>(std::ldexp(p, 32));
  const int64_t n = mask.numel();
  const uint64_t base = Mix(seed);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, mask.scalar_type(), "DropoutMask", [&] {
    const auto keep = static_cast<scalar_t>(1.0 / (1.0 - p));
    const auto drop = static_cast<scalar_t>(0);
    void* out = mask.data_ptr();
    // Pairs of elements share one hash.
    at::parallel_for(0, (n + 1) / 2, 1 << 14, [&](int64_t begin, int64_t end) {
      if constexpr (sizeof(scalar_t) == 2) {
        FillMask16(static_cast<uint16_t*>(out), n, begin, end, base, threshold,
                   BitsOf<uint16_t>(keep), BitsOf<uint16_t>(drop));
      } else if constexpr (sizeof(scalar_t) == 4) {
        FillMask32(static_cast<uint32_t*>(out), n, begin, end, base, threshold,
                   BitsOf<uint32_t>(keep), BitsOf<uint32_t>(drop));
      } else {
        FillMask64(static_cast<uint64_t*>(out), n, begin, end, base, threshold,
                   BitsOf<uint64_t>(keep), BitsOf<uint64_t>(drop));
      }
    });
  });
  return mask;
}

torch::Tensor Dropout(const torch::Tensor& x, double p, bool training) {
  if (!training || p == 0) return x;
  if (!x.device().is_cpu()) return torch::dropout(x, p, training);
  return x * DropoutMask(x, p, NextSeed());
}

}  // namespace ftune::model
