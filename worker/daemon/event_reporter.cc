#include "worker/daemon/event_reporter.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "spdlog/spdlog.h"

namespace ftune::daemon {

namespace v1 = ::ftune::v1;

namespace {

// Errors that another attempt cannot fix; the batch is dropped.
bool Permanent(const absl::Status& status) {
  return absl::IsInvalidArgument(status) || absl::IsPermissionDenied(status) ||
         absl::IsUnauthenticated(status) || absl::IsUnimplemented(status);
}

// The controller no longer lets this lease write to the job.
bool LeaseGone(const absl::Status& status) {
  return absl::IsNotFound(status) || absl::IsFailedPrecondition(status);
}

}  // namespace

EventReporter::EventReporter(WorkerClient* client, std::string worker_id, std::string job_id,
                             std::string lease_id, train::CancelToken* cancel,
                             EventReporterOptions options)
    : client_(client),
      worker_id_(std::move(worker_id)),
      job_id_(std::move(job_id)),
      lease_id_(std::move(lease_id)),
      cancel_(cancel),
      options_(options) {
  sender_ = std::thread([this] { SendLoop(); });
}

EventReporter::~EventReporter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  sender_.join();
}

void EventReporter::Emit(v1::JobEvent event) {
  if (!event.has_time()) {
    const absl::Time now = absl::Now();
    const int64_t nanos = absl::ToUnixNanos(now);
    event.mutable_time()->set_seconds(nanos / 1000000000);
    event.mutable_time()->set_nanos(static_cast<int32_t>(nanos % 1000000000));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (lost_) return;
    if (queue_.size() >= options_.max_queue) {
      // Full: a newer progress event supersedes the oldest queued one; other events are rare
      // and matter (evaluations, checkpoints, state), so they are kept even past the bound.
      const bool dropped = DropOldestProgressLocked();
      if (dropped || event.has_train_progress()) {
        if (++coalesced_ == 1) {
          spdlog::warn("job {}: controller not keeping up; coalescing progress events", job_id_);
        }
      }
      if (!dropped && event.has_train_progress()) return;
    }
    queue_.push_back(std::move(event));
  }
  wake_.notify_one();
}

bool EventReporter::DropOldestProgressLocked() {
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->has_train_progress()) {
      queue_.erase(it);
      return true;
    }
  }
  return false;
}

absl::Status EventReporter::Flush(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  flush_requested_ = true;
  wake_.notify_one();
  const bool done = drained_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                                      [this] { return lost_ || (queue_.empty() && !sending_); });
  flush_requested_ = false;
  if (lost_) return absl::AbortedError("lease lost; events not delivered");
  if (!done) {
    return absl::DeadlineExceededError(absl::StrCat(
        queue_.size() + (sending_ ? 1 : 0), " event batches of job ", job_id_, " not delivered"));
  }
  return absl::OkStatus();
}

int64_t EventReporter::coalesced() const {
  std::lock_guard<std::mutex> lock(mu_);
  return coalesced_;
}

int64_t EventReporter::last_seq() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_seq_;
}

void EventReporter::SendLoop() {
  Backoff backoff(options_.backoff);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    // Linger briefly so a burst of events goes out as one batch.
    if (queue_.size() < options_.max_batch && !flush_requested_) {
      wake_.wait_for(lock, absl::ToChronoNanoseconds(options_.linger), [this] {
        return stop_ || flush_requested_ || queue_.size() >= options_.max_batch;
      });
      if (stop_) return;
    }

    v1::ReportEventsRequest request;
    request.set_job_id(job_id_);
    request.set_lease_id(lease_id_);
    request.set_worker_id(worker_id_);
    request.set_batch_id(next_batch_id_);
    const size_t n = std::min(queue_.size(), options_.max_batch);
    for (size_t i = 0; i < n; ++i) {
      *request.add_events() = std::move(queue_.front());
      queue_.pop_front();
    }
    sending_ = true;

    // The same batch, unchanged, until the controller takes it or it cannot be delivered.
    for (;;) {
      lock.unlock();
      absl::StatusOr<v1::ReportEventsResponse> response = client_->ReportEvents(request);
      lock.lock();
      if (response.ok()) {
        backoff.Reset();
        last_seq_ = std::max(last_seq_, response->last_seq());
        if (response->verdict() == v1::LEASE_VERDICT_CANCEL) {
          cancel_->Request(train::StopReason::kCancel);
        } else if (response->verdict() == v1::LEASE_VERDICT_LOST) {
          cancel_->Request(train::StopReason::kLeaseLost);
          lost_ = true;
        }
        break;
      }
      if (LeaseGone(response.status())) {
        spdlog::warn("job {}: lease {} gone: {}", job_id_, lease_id_, response.status());
        cancel_->Request(train::StopReason::kLeaseLost);
        lost_ = true;
        break;
      }
      if (Permanent(response.status())) {
        spdlog::error("job {}: dropping {} events: {}", job_id_, request.events_size(),
                      response.status());
        break;
      }
      const absl::Duration wait = backoff.Next();
      if (backoff.failures() == 1 || backoff.failures() % 10 == 0) {
        spdlog::warn("job {}: reporting events failed ({}); retrying in {}", job_id_,
                     response.status(), absl::FormatDuration(wait));
      }
      wake_.wait_for(lock, absl::ToChronoNanoseconds(wait), [this] { return stop_; });
      if (stop_) return;
    }
    ++next_batch_id_;
    sending_ = false;
    if (lost_) queue_.clear();
    if (lost_ || queue_.empty()) drained_.notify_all();
    if (lost_) {
      // Nothing more can be delivered; park until destroyed.
      wake_.wait(lock, [this] { return stop_; });
      return;
    }
  }
}

}  // namespace ftune::daemon
