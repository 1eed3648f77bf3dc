// Durable state of the controller behind a small interface: jobs (with their lease), their
// events and the workers. SqliteJobStore is the real one; MemoryJobStore serves tests.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ftune/v1/job.pb.h"
#include "ftune/v1/worker.pb.h"

namespace ftune::server {

// A job as the controller keeps it: the public Job plus what only the controller needs.
struct JobRecord {
  ftune::v1::Job job;
  // Submission order (FIFO within a priority; ListJobs pages by it). Unique, increasing.
  int64_t queue_seq = 0;
  // The current hand-out (empty when no worker holds the job) and its device.
  std::string lease_id;
  std::string device;
  // Highest ReportEvents batch_id stored within the current lease.
  uint64_t last_batch_id = 0;
  // Requeues after a lost worker (counted against max_restarts; hand-backs are not).
  uint32_t restarts = 0;
};

class JobStore {
 public:
  virtual ~JobStore() = default;

  // Inserts or replaces `record` and appends `events` (seq already assigned) in one atomic,
  // durable step: when it returns OK, both survive a crash.
  virtual absl::Status Commit(const JobRecord& record,
                              const std::vector<ftune::v1::JobEvent>& events) = 0;
  // Every job, in queue_seq order.
  virtual absl::StatusOr<std::vector<JobRecord>> LoadJobs() = 0;
  // Up to `limit` events of `job_id` with seq > after_seq, in seq order.
  virtual absl::StatusOr<std::vector<ftune::v1::JobEvent>> ReadEvents(const std::string& job_id,
                                                                      int64_t after_seq,
                                                                      int limit) = 0;
  virtual absl::Status PutWorker(const ftune::v1::Worker& worker) = 0;
  virtual absl::StatusOr<std::vector<ftune::v1::Worker>> LoadWorkers() = 0;
};

// Keeps everything in maps; thread-safe. `fail_commits` lets tests see how callers handle a
// store that refuses writes.
class MemoryJobStore final : public JobStore {
 public:
  absl::Status Commit(const JobRecord& record,
                      const std::vector<ftune::v1::JobEvent>& events) override;
  absl::StatusOr<std::vector<JobRecord>> LoadJobs() override;
  absl::StatusOr<std::vector<ftune::v1::JobEvent>> ReadEvents(const std::string& job_id,
                                                              int64_t after_seq,
                                                              int limit) override;
  absl::Status PutWorker(const ftune::v1::Worker& worker) override;
  absl::StatusOr<std::vector<ftune::v1::Worker>> LoadWorkers() override;

  void set_fail_commits(bool fail) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_commits_ = fail;
  }

 private:
  std::mutex mu_;
  std::map<std::string, JobRecord> jobs_;
  std::map<std::string, std::map<int64_t, ftune::v1::JobEvent>> events_;
  std::map<std::string, ftune::v1::Worker> workers_;
  bool fail_commits_ = false;
};

}  // namespace ftune::server
