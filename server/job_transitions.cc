#include "server/job_transitions.h"

namespace ftune::server {

using ftune::v1::JobState;

const char* JobTriggerName(JobTrigger trigger) {
  switch (trigger) {
    case JobTrigger::kLease:
      return "lease";
    case JobTrigger::kStart:
      return "start";
    case JobTrigger::kCancel:
      return "cancel";
    case JobTrigger::kSucceeded:
      return "succeeded";
    case JobTrigger::kFailed:
      return "failed";
    case JobTrigger::kCancelled:
      return "cancelled";
    case JobTrigger::kHandBack:
      return "hand back";
    case JobTrigger::kRetry:
      return "retry";
    case JobTrigger::kLeaseExpired:
      return "lease expired";
  }
  return "?";
}

const std::vector<JobTransition>& JobTransitions() {
  using T = JobTrigger;
  constexpr JobState kQueued = ftune::v1::JOB_STATE_QUEUED;
  constexpr JobState kAssigned = ftune::v1::JOB_STATE_ASSIGNED;
  constexpr JobState kRunning = ftune::v1::JOB_STATE_RUNNING;
  constexpr JobState kCancelling = ftune::v1::JOB_STATE_CANCELLING;
  constexpr JobState kSucceeded = ftune::v1::JOB_STATE_SUCCEEDED;
  constexpr JobState kFailed = ftune::v1::JOB_STATE_FAILED;
  constexpr JobState kCancelled = ftune::v1::JOB_STATE_CANCELLED;
  static const auto* table = new std::vector<JobTransition>{
      {kQueued, T::kLease, kAssigned},
      {kQueued, T::kCancel, kCancelled},

      {kAssigned, T::kStart, kRunning},
      {kAssigned, T::kCancel, kCancelling},
      {kAssigned, T::kSucceeded, kSucceeded},
      {kAssigned, T::kFailed, kFailed},
      {kAssigned, T::kCancelled, kCancelled},
      {kAssigned, T::kHandBack, kQueued},
      {kAssigned, T::kRetry, kQueued, /*counts_as_restart=*/true},
      {kAssigned, T::kLeaseExpired, kQueued, /*counts_as_restart=*/true},

      {kRunning, T::kCancel, kCancelling},
      {kRunning, T::kSucceeded, kSucceeded},
      {kRunning, T::kFailed, kFailed},
      {kRunning, T::kCancelled, kCancelled},
      {kRunning, T::kHandBack, kQueued},
      {kRunning, T::kRetry, kQueued, /*counts_as_restart=*/true},
      {kRunning, T::kLeaseExpired, kQueued, /*counts_as_restart=*/true},

      // Whatever ends a cancelling job's lease ends the job: a worker that finished first
      // still reports what happened.
      {kCancelling, T::kSucceeded, kSucceeded},
      {kCancelling, T::kFailed, kFailed},
      {kCancelling, T::kCancelled, kCancelled},
      {kCancelling, T::kHandBack, kCancelled},
      {kCancelling, T::kRetry, kCancelled},
      {kCancelling, T::kLeaseExpired, kCancelled},
  };
  return *table;
}

std::optional<JobTransition> FindTransition(JobState from, JobTrigger trigger) {
  for (const JobTransition& t : JobTransitions()) {
    if (t.from == from && t.trigger == trigger) return t;
  }
  return std::nullopt;
}

}  // namespace ftune::server
