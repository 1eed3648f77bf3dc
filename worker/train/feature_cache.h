// A frozen feature encoder's output by clip, reused across epochs, in host memory within a
// byte budget: when full, the least recently used clips are dropped and computed again when
// next needed — exact, since the encoder is frozen and computes each clip alone.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <unordered_map>

#include "torch/torch.h"

namespace ftune::train {

class FeatureCache {
 public:
  // max_bytes 0 keeps nothing (every use computes).
  explicit FeatureCache(int64_t max_bytes) : max_bytes_(max_bytes) {}

  // The clip's features on `device`, if cached.
  std::optional<torch::Tensor> Get(int64_t clip, const torch::Device& device);
  // Keeps a host copy of `features` (dropping older clips to stay within the budget; a clip
  // larger than the whole budget is not kept).
  void Put(int64_t clip, const torch::Tensor& features);

  int64_t max_bytes() const { return max_bytes_; }
  int64_t bytes() const { return bytes_; }
  int64_t evictions() const { return evictions_; }
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    torch::Tensor features;  // CPU
    std::list<int64_t>::iterator lru_pos;
  };
  int64_t max_bytes_;
  int64_t bytes_ = 0;
  int64_t evictions_ = 0;
  std::list<int64_t> lru_;  // most recently used first
  std::unordered_map<int64_t, Entry> entries_;
};

}  // namespace ftune::train
