// `ftctl watch`: follows a job's event stream to its end, resuming transparently after the
// last seq it printed when the stream drops or the controller ends it with ABORTED (a slow
// watcher), and renders the events for a terminal, for a log file, or as JSON lines.
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ftune/v1/job.pb.h"
#include "ftune/v1/job_service.grpc.pb.h"

namespace ftune::ctl {

class EventPrinter {
 public:
  virtual ~EventPrinter() = default;
  virtual void Print(const ftune::v1::JobEvent& event) = 0;
  // Something the user should know that is not an event (e.g. "reconnecting").
  virtual void Notice(const std::string& message) = 0;
  // The stream is over: end a live progress line.
  virtual void Finish() = 0;
};

// One JobEvent per line, protobuf JSON with proto field names.
std::unique_ptr<EventPrinter> MakeJsonPrinter(std::ostream& out);
// Plain lines; on a terminal the newest train_progress is a live line redrawn in place.
std::unique_ptr<EventPrinter> MakeTextPrinter(std::ostream& out, bool terminal);

struct WatchOptions {
  // Consecutive time without a working stream before giving up (controller gone).
  absl::Duration give_up_after = absl::Seconds(60);
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(5);
};

struct WatchResult {
  // Terminal state of the job (SUCCEEDED, FAILED or CANCELLED).
  ftune::v1::JobState state = ftune::v1::JOB_STATE_UNSPECIFIED;
  // Why it failed or was cancelled (the terminal state change's reason).
  std::string reason;
  // seq of the last event printed.
  int64_t last_seq = 0;
  // Times the stream was reopened.
  int resumes = 0;
};

// Prints the events of `job_id` after `after_seq` until the job's terminal state. Each
// event is printed once, in seq order, across any number of reconnects.
absl::StatusOr<WatchResult> WatchJob(ftune::v1::JobService::StubInterface* stub,
                                     const std::string& job_id, int64_t after_seq,
                                     EventPrinter* printer, const WatchOptions& options = {});

bool IsTerminal(ftune::v1::JobState state);

}  // namespace ftune::ctl
