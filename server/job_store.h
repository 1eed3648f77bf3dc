// Durable state of the controller behind a small interface: jobs (with their lease), their
// events and the workers. SqliteJobStore is the real one; MemoryJobStore serves tests.
//
// The controller keeps only jobs that have not ended in memory and asks the store for the
// rest, so the store answers lookups by id, by client_request_id and pages of ended jobs.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ftune/v1/job.pb.h"
#include "ftune/v1/worker.pb.h"

namespace ftune::server {

// One rank's lease of a data-parallel job (world_size > 1). Which worker and device hold it is
// in Job.workers at the same index.
struct RankLease {
  std::string lease_id;
  // The rank finished (CompleteJob SUCCEEDED) and gave its device back while the gang runs on.
  bool released = false;
};

// A job as the controller keeps it: the public Job plus what only the controller needs.
struct JobRecord {
  ftune::v1::Job job;
  // Submission order (FIFO within a priority; ListJobs pages by it). Unique, increasing.
  int64_t queue_seq = 0;
  // The current hand-out (empty when no worker holds the job) and its device. For a gang,
  // rank 0's (its worker is job.worker_id).
  std::string lease_id;
  std::string device;
  // A gang's leases by rank (ranks[0].lease_id == lease_id) while leased, kept after the job
  // ends so that late completions of its ranks are recognised; empty for one-device jobs and
  // once the gang attempt ended with a requeue.
  std::vector<RankLease> ranks;
  // Highest ReportEvents batch_id stored within the current lease.
  uint64_t last_batch_id = 0;
  // Requeues after a lost worker (counted against max_restarts; hand-backs are not).
  uint32_t restarts = 0;
};

// SUCCEEDED, FAILED or CANCELLED: nothing changes the job any more.
bool IsEndedState(ftune::v1::JobState state);

// What the controller needs at start beyond the live jobs.
struct StoreSummary {
  std::map<ftune::v1::JobState, int64_t> ended;  // ended jobs by state
  int64_t max_queue_seq = 0;                     // highest queue_seq ever used
};

// One job's change: the record as it now is, plus the events it appended (seq assigned).
struct JobWrite {
  JobRecord record;
  std::vector<ftune::v1::JobEvent> events;
};

// Everything one group commit writes, in the order the changes were made.
struct StoreBatch {
  std::vector<JobWrite> jobs;
  std::vector<ftune::v1::Worker> workers;
  bool empty() const { return jobs.empty() && workers.empty(); }
};

class JobStore {
 public:
  virtual ~JobStore() = default;

  // Writes `batch` in one atomic, durable step: when it returns OK, all of it survives a
  // crash; on error none of it is stored.
  virtual absl::Status Commit(const StoreBatch& batch) = 0;
  // Jobs that have not ended, in queue_seq order.
  virtual absl::StatusOr<std::vector<JobRecord>> LoadLiveJobs() = 0;
  virtual absl::StatusOr<StoreSummary> Summarize() = 0;
  // One job by id, or by the client_request_id it was submitted with; NotFound if none.
  virtual absl::StatusOr<JobRecord> FindJob(const std::string& job_id) = 0;
  virtual absl::StatusOr<JobRecord> FindJobByRequestId(const std::string& request_id) = 0;
  // Up to `limit` ended jobs with queue_seq < before_queue_seq, newest first; only those in
  // `states` unless it is empty.
  virtual absl::StatusOr<std::vector<JobRecord>> ListEndedJobs(
      int64_t before_queue_seq, const std::set<ftune::v1::JobState>& states, int limit) = 0;
  // Event retention: drops the train_progress and log events of up to `max_jobs` jobs that
  // ended before `ended_before` and were not compacted yet. Their state changes, dataset
  // summary, evaluations and checkpoints stay. Returns the number of events dropped.
  virtual absl::StatusOr<int64_t> CompactEvents(absl::Time ended_before, int max_jobs) = 0;
  // Up to `limit` events of `job_id` with seq > after_seq, in seq order.
  virtual absl::StatusOr<std::vector<ftune::v1::JobEvent>> ReadEvents(const std::string& job_id,
                                                                      int64_t after_seq,
                                                                      int limit) = 0;
  virtual absl::StatusOr<std::vector<ftune::v1::Worker>> LoadWorkers() = 0;
};

// Passes every call to `inner` (which must outlive it); a wrapper overrides what it changes.
class ForwardingJobStore : public JobStore {
 public:
  explicit ForwardingJobStore(JobStore* inner) : inner_(inner) {}

  absl::Status Commit(const StoreBatch& batch) override { return inner_->Commit(batch); }
  absl::StatusOr<std::vector<JobRecord>> LoadLiveJobs() override { return inner_->LoadLiveJobs(); }
  absl::StatusOr<StoreSummary> Summarize() override { return inner_->Summarize(); }
  absl::StatusOr<JobRecord> FindJob(const std::string& job_id) override {
    return inner_->FindJob(job_id);
  }
  absl::StatusOr<JobRecord> FindJobByRequestId(const std::string& request_id) override {
    return inner_->FindJobByRequestId(request_id);
  }
  absl::StatusOr<std::vector<JobRecord>> ListEndedJobs(int64_t before_queue_seq,
                                                       const std::set<ftune::v1::JobState>& states,
                                                       int limit) override {
    return inner_->ListEndedJobs(before_queue_seq, states, limit);
  }
  absl::StatusOr<int64_t> CompactEvents(absl::Time ended_before, int max_jobs) override {
    return inner_->CompactEvents(ended_before, max_jobs);
  }
  absl::StatusOr<std::vector<ftune::v1::JobEvent>> ReadEvents(const std::string& job_id,
                                                              int64_t after_seq,
                                                              int limit) override {
    return inner_->ReadEvents(job_id, after_seq, limit);
  }
  absl::StatusOr<std::vector<ftune::v1::Worker>> LoadWorkers() override {
    return inner_->LoadWorkers();
  }

 private:
  JobStore* const inner_;
};

// Keeps everything in maps; thread-safe. `fail_commits` lets tests see how callers handle a
// store that refuses writes.
class MemoryJobStore final : public JobStore {
 public:
  absl::Status Commit(const StoreBatch& batch) override;
  absl::StatusOr<std::vector<JobRecord>> LoadLiveJobs() override;
  absl::StatusOr<StoreSummary> Summarize() override;
  absl::StatusOr<JobRecord> FindJob(const std::string& job_id) override;
  absl::StatusOr<JobRecord> FindJobByRequestId(const std::string& request_id) override;
  absl::StatusOr<std::vector<JobRecord>> ListEndedJobs(int64_t before_queue_seq,
                                                       const std::set<ftune::v1::JobState>& states,
                                                       int limit) override;
  absl::StatusOr<int64_t> CompactEvents(absl::Time ended_before, int max_jobs) override;
  absl::StatusOr<std::vector<ftune::v1::JobEvent>> ReadEvents(const std::string& job_id,
                                                              int64_t after_seq,
                                                              int limit) override;
  absl::StatusOr<std::vector<ftune::v1::Worker>> LoadWorkers() override;

  void set_fail_commits(bool fail) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_commits_ = fail;
  }
  // Transactions committed so far (group commit folds many changes into one).
  uint64_t commits() {
    std::lock_guard<std::mutex> lock(mu_);
    return commits_;
  }

 private:
  std::mutex mu_;
  std::map<std::string, JobRecord> jobs_;
  std::map<std::string, std::map<int64_t, ftune::v1::JobEvent>> events_;
  std::map<std::string, ftune::v1::Worker> workers_;
  std::set<std::string> compacted_;
  bool fail_commits_ = false;
  uint64_t commits_ = 0;
};

}  // namespace ftune::server
