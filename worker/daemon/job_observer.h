// What the daemon tells an observer (its metrics) about the jobs it runs: every event is
// seen as the trainer emits it, before it goes to the controller.
#pragma once

#include <string>

#include "ftune/v1/job.pb.h"
#include "ftune/v1/worker.pb.h"

namespace ftune::daemon {

class JobObserver {
 public:
  virtual ~JobObserver() = default;
  // A leased job starts on `device`.
  virtual void OnJobStarted(const ftune::v1::Job& job, const std::string& device) = 0;
  // An event of a running job, on the training thread: must not block.
  virtual void OnJobEvent(const std::string& job_id, const ftune::v1::JobEvent& event) = 0;
  // The job ended with `outcome` (REQUEUE: handed back; UNSPECIFIED: it lost its lease and
  // was not reported).
  virtual void OnJobFinished(const std::string& job_id, ftune::v1::JobOutcome outcome) = 0;
};

}  // namespace ftune::daemon
