// Exponential backoff with full jitter for retrying calls to the controller: the n-th wait is
// drawn uniformly from [initial * 2^n / 2, initial * 2^n], capped at `max`, so a fleet of
// workers reconnecting after a controller restart spreads out instead of arriving together.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>

#include "absl/time/time.h"

namespace ftune::daemon {

struct BackoffPolicy {
  absl::Duration initial = absl::Milliseconds(200);
  absl::Duration max = absl::Seconds(10);
};

class Backoff {
 public:
  explicit Backoff(BackoffPolicy policy, uint64_t seed = std::random_device{}())
      : policy_(policy), rng_(seed) {}

  // The wait before the next attempt; grows with each call until Reset().
  absl::Duration Next() {
    absl::Duration ceiling = policy_.initial;
    for (int i = 0; i < failures_ && ceiling < policy_.max; ++i) ceiling *= 2;
    ceiling = std::min(ceiling, policy_.max);
    ++failures_;
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    return ceiling * jitter(rng_);
  }
  void Reset() { failures_ = 0; }
  int failures() const { return failures_; }

 private:
  BackoffPolicy policy_;
  std::mt19937_64 rng_;
  int failures_ = 0;
};

}  // namespace ftune::daemon
