// The daemon's EventSink for one leased job: Emit() only queues; a sender thread ships the
// queue to the controller in ReportEvents batches (batch_id 1, 2, ... per lease), retrying a
// failed batch unchanged with backoff so the controller's batch_id dedup keeps it exactly
// once. The queue is bounded: while the controller is unreachable, the oldest train_progress
// events give way to newer ones, so training never waits on the network.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "ftune/v1/job.pb.h"
#include "worker/daemon/backoff.h"
#include "worker/daemon/worker_client.h"
#include "worker/train/cancel_token.h"
#include "worker/train/event_sink.h"

namespace ftune::daemon {

struct EventReporterOptions {
  // Events per ReportEvents call.
  size_t max_batch = 200;
  // Queued events beyond which train_progress events are coalesced (oldest dropped).
  size_t max_queue = 2000;
  // How long the sender waits for more events before sending a partial batch.
  absl::Duration linger = absl::Milliseconds(200);
  BackoffPolicy backoff;
};

class EventReporter final : public train::EventSink {
 public:
  // `client` and `cancel` must outlive the reporter. Verdicts in ReportEvents replies become
  // cancel requests (CANCEL -> kCancel, LOST -> kLeaseLost).
  EventReporter(WorkerClient* client, std::string worker_id, std::string job_id,
                std::string lease_id, train::CancelToken* cancel,
                EventReporterOptions options = {});
  // Stops the sender; events not yet acknowledged are dropped (call Flush first).
  ~EventReporter() override;

  // Stamps the event's time when unset and queues it. Never blocks on the network.
  void Emit(ftune::v1::JobEvent event) override;

  // Waits until every emitted event is acknowledged. DEADLINE_EXCEEDED after `timeout`,
  // ABORTED when the lease was lost (the rest can never be delivered).
  absl::Status Flush(absl::Duration timeout);

  // Progress events dropped to keep the queue bounded.
  int64_t coalesced() const;
  // Highest seq the controller reported storing.
  int64_t last_seq() const;

 private:
  void SendLoop();
  // Drops the oldest queued train_progress event; false when there is none.
  bool DropOldestProgressLocked();

  WorkerClient* const client_;
  const std::string worker_id_;
  const std::string job_id_;
  const std::string lease_id_;
  train::CancelToken* const cancel_;
  const EventReporterOptions options_;

  mutable std::mutex mu_;
  std::condition_variable wake_;     // sender: new events, flush or stop
  std::condition_variable drained_;  // Flush: queue empty or lease lost
  std::deque<ftune::v1::JobEvent> queue_;
  bool sending_ = false;  // a batch is taken from the queue and not yet acknowledged
  bool flush_requested_ = false;
  bool stop_ = false;
  bool lost_ = false;
  uint64_t next_batch_id_ = 1;
  int64_t coalesced_ = 0;
  int64_t last_seq_ = 0;
  std::thread sender_;
};

}  // namespace ftune::daemon
