// Asks a running job to stop. The trainer polls it once per optimizer step (and the data
// loader while waiting), saves a resumable checkpoint, and returns.
#pragma once

#include <atomic>

namespace ftune::train {

enum class StopReason {
  kNone = 0,
  // The user cancelled the job: it ends CANCELLED.
  kCancel = 1,
  // The worker is shutting down: checkpoint and hand the job back to the queue.
  kHandBack = 2,
  // The lease was lost: stop at once, report nothing.
  kLeaseLost = 3,
};

class CancelToken {
 public:
  // The first reason wins; later requests do not override it.
  void Request(StopReason reason) {
    int expected = static_cast<int>(StopReason::kNone);
    reason_.compare_exchange_strong(expected, static_cast<int>(reason));
  }
  StopReason reason() const { return static_cast<StopReason>(reason_.load()); }
  bool stop_requested() const { return reason() != StopReason::kNone; }

 private:
  std::atomic<int> reason_{static_cast<int>(StopReason::kNone)};
};

}  // namespace ftune::train
