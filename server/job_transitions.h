// A job's lifecycle as one table: every state change there is and what triggers it. The job
// manager changes a job's state only through FindTransition, and tests walk the table.
#pragma once

#include <optional>
#include <vector>

#include "ftune/v1/job.pb.h"

namespace ftune::server {

enum class JobTrigger {
  kLease,         // AcquireJob hands the job to a worker
  kStart,         // the lease's first ReportEvents
  kCancel,        // CancelJob
  kSucceeded,     // CompleteJob SUCCEEDED
  kFailed,        // CompleteJob FAILED: an error the same inputs would hit again
  kCancelled,     // CompleteJob CANCELLED
  kHandBack,      // CompleteJob REQUEUE: the worker is shutting down (not counted)
  kRetry,         // CompleteJob RETRY: a transient error (counted against max_restarts)
  kLeaseExpired,  // no heartbeat renewed the lease in time (counted)
};
const char* JobTriggerName(JobTrigger trigger);

struct JobTransition {
  ftune::v1::JobState from;
  JobTrigger trigger;
  ftune::v1::JobState to;
  // A counted restart: QUEUED (attempt + 1, after a backoff) while the job's max_restarts
  // allows, FAILED once it is used up.
  bool counts_as_restart = false;
};

// The whole table, in lifecycle order.
const std::vector<JobTransition>& JobTransitions();

// The transition `trigger` makes from `from`; nullopt when it makes none (the caller refuses
// the request, or treats it as a repeat of one already done).
std::optional<JobTransition> FindTransition(ftune::v1::JobState from, JobTrigger trigger);

}  // namespace ftune::server
