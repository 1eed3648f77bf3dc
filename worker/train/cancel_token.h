// Asks a running job to stop, and fences its writes. The trainer polls it once per optimizer
// step and per evaluation batch (and the data loader while waiting), saves a resumable
// checkpoint, and returns; before anything it writes into the output folder it asks
// MayWrite(), which the worker daemon backs with the job's lease.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <utility>

#include "absl/status/status.h"

namespace ftune::train {

enum class StopReason {
  kNone = 0,
  // The user cancelled the job: it ends CANCELLED.
  kCancel = 1,
  // The worker is shutting down: checkpoint and hand the job back to the queue.
  kHandBack = 2,
  // The lease was lost: stop at once, write and report nothing.
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

  // Decides whether the job may still write: OK, or the reason it may not. The daemon's
  // guard confirms the lease (with the controller when its last renewal is old) and requests
  // kLeaseLost itself when the lease is gone.
  using WriteGuard = std::function<absl::Status()>;
  void set_write_guard(WriteGuard guard) {
    std::lock_guard<std::mutex> lock(mu_);
    guard_ = std::move(guard);
  }
  // OK while the job may write into its output folder. Without a guard (a local `ftworker
  // train`) only a lost lease forbids it.
  absl::Status MayWrite() {
    WriteGuard guard;
    {
      std::lock_guard<std::mutex> lock(mu_);
      guard = guard_;
    }
    if (reason() != StopReason::kLeaseLost && guard) {
      if (absl::Status s = guard(); !s.ok()) {
        Request(StopReason::kLeaseLost);
        return s;
      }
    }
    if (reason() == StopReason::kLeaseLost) {
      return absl::AbortedError("the job's lease was lost: another worker may own it now");
    }
    return absl::OkStatus();
  }

 private:
  std::atomic<int> reason_{static_cast<int>(StopReason::kNone)};
  std::mutex mu_;
  WriteGuard guard_;
};

}  // namespace ftune::train
