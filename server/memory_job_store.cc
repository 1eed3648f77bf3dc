#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "server/job_store.h"

namespace ftune::server {

absl::Status MemoryJobStore::Commit(const StoreBatch& batch) {
  std::lock_guard<std::mutex> lock(mu_);
  if (fail_commits_) return absl::UnavailableError("memory store: commits refused (test)");
  // All or nothing, like a transaction: check every event first.
  std::map<std::string, std::set<int64_t>> adding;
  for (const JobWrite& write : batch.jobs) {
    const std::string& id = write.record.job.id();
    auto stored = events_.find(id);
    for (const auto& event : write.events) {
      if ((stored != events_.end() && stored->second.count(event.seq()) != 0) ||
          !adding[id].insert(event.seq()).second) {
        return absl::AlreadyExistsError(
            absl::StrCat("event ", id, "#", event.seq(), " already stored"));
      }
    }
  }
  for (const JobWrite& write : batch.jobs) {
    jobs_[write.record.job.id()] = write.record;
    auto& job_events = events_[write.record.job.id()];
    for (const auto& event : write.events) job_events[event.seq()] = event;
  }
  for (const auto& worker : batch.workers) workers_[worker.id()] = worker;
  ++commits_;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<JobRecord>> MemoryJobStore::LoadLiveJobs() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<JobRecord> out;
  for (const auto& [id, record] : jobs_) {
    if (!IsEndedState(record.job.state())) out.push_back(record);
  }
  std::sort(out.begin(), out.end(),
            [](const JobRecord& a, const JobRecord& b) { return a.queue_seq < b.queue_seq; });
  return out;
}

absl::StatusOr<StoreSummary> MemoryJobStore::Summarize() {
  std::lock_guard<std::mutex> lock(mu_);
  StoreSummary summary;
  for (const auto& [id, record] : jobs_) {
    if (IsEndedState(record.job.state())) ++summary.ended[record.job.state()];
    summary.max_queue_seq = std::max(summary.max_queue_seq, record.queue_seq);
  }
  return summary;
}

absl::StatusOr<JobRecord> MemoryJobStore::FindJob(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  return it->second;
}

absl::StatusOr<JobRecord> MemoryJobStore::FindJobByRequestId(const std::string& request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, record] : jobs_) {
    if (record.job.spec().client_request_id() == request_id) return record;
  }
  return absl::NotFoundError(absl::StrCat("no job with client_request_id ", request_id));
}

absl::StatusOr<std::vector<JobRecord>> MemoryJobStore::ListEndedJobs(
    int64_t before_queue_seq, const std::set<ftune::v1::JobState>& states, int limit) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<JobRecord> out;
  for (const auto& [id, record] : jobs_) {
    const ftune::v1::JobState state = record.job.state();
    if (IsEndedState(state) && record.queue_seq < before_queue_seq &&
        (states.empty() || states.count(state) != 0)) {
      out.push_back(record);
    }
  }
  std::sort(out.begin(), out.end(),
            [](const JobRecord& a, const JobRecord& b) { return a.queue_seq > b.queue_seq; });
  if (out.size() > static_cast<size_t>(limit)) out.resize(limit);
  return out;
}

absl::StatusOr<int64_t> MemoryJobStore::CompactEvents(absl::Time ended_before, int max_jobs) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t dropped = 0;
  int jobs = 0;
  for (const auto& [id, record] : jobs_) {
    if (jobs == max_jobs) break;
    if (!IsEndedState(record.job.state()) || compacted_.count(id) != 0 ||
        absl::FromUnixSeconds(record.job.end_time().seconds()) >= ended_before) {
      continue;
    }
    auto& events = events_[id];
    for (auto it = events.begin(); it != events.end();) {
      if (it->second.has_train_progress() || it->second.has_log()) {
        it = events.erase(it);
        ++dropped;
      } else {
        ++it;
      }
    }
    compacted_.insert(id);
    ++jobs;
  }
  return dropped;
}

absl::StatusOr<std::vector<ftune::v1::JobEvent>> MemoryJobStore::ReadEvents(
    const std::string& job_id, int64_t after_seq, int limit) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ftune::v1::JobEvent> out;
  auto it = events_.find(job_id);
  if (it == events_.end()) return out;
  for (auto e = it->second.upper_bound(after_seq);
       e != it->second.end() && static_cast<int>(out.size()) < limit; ++e) {
    out.push_back(e->second);
  }
  return out;
}

absl::StatusOr<std::vector<ftune::v1::Worker>> MemoryJobStore::LoadWorkers() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ftune::v1::Worker> out;
  for (const auto& [id, worker] : workers_) out.push_back(worker);
  return out;
}

}  // namespace ftune::server
