#include "worker/train/feature_cache.h"

namespace ftune::train {
namespace {

int64_t Bytes(const torch::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

}  // namespace

std::optional<torch::Tensor> FeatureCache::Get(int64_t clip, const torch::Device& device) {
  auto it = entries_.find(clip);
  if (it == entries_.end()) return std::nullopt;
  lru_.splice(lru_.begin(), lru_, it->second.lru_pos);
  return it->second.features.to(device);
}

void FeatureCache::Put(int64_t clip, const torch::Tensor& features) {
  const int64_t size = Bytes(features);
  if (size > max_bytes_ || entries_.count(clip) != 0) return;
  while (bytes_ + size > max_bytes_ && !lru_.empty()) {
    auto victim = entries_.find(lru_.back());
    bytes_ -= Bytes(victim->second.features);
    entries_.erase(victim);
    lru_.pop_back();
    ++evictions_;
  }
  lru_.push_front(clip);
  entries_.emplace(clip, Entry{features.detach().to(torch::kCPU).clone(), lru_.begin()});
  bytes_ += size;
}

}  // namespace ftune::train
