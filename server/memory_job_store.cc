#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/job_store.h"

namespace ftune::server {

absl::Status MemoryJobStore::Commit(const JobRecord& record,
                                    const std::vector<ftune::v1::JobEvent>& events) {
  std::lock_guard<std::mutex> lock(mu_);
  if (fail_commits_) return absl::UnavailableError("memory store: commits refused (test)");
  auto& job_events = events_[record.job.id()];
  for (const auto& event : events) {
    if (job_events.count(event.seq()) != 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("event ", record.job.id(), "#", event.seq(), " already stored"));
    }
  }
  jobs_[record.job.id()] = record;
  for (const auto& event : events) job_events[event.seq()] = event;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<JobRecord>> MemoryJobStore::LoadJobs() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<JobRecord> out;
  for (const auto& [id, record] : jobs_) out.push_back(record);
  std::sort(out.begin(), out.end(),
            [](const JobRecord& a, const JobRecord& b) { return a.queue_seq < b.queue_seq; });
  return out;
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

absl::Status MemoryJobStore::PutWorker(const ftune::v1::Worker& worker) {
  std::lock_guard<std::mutex> lock(mu_);
  if (fail_commits_) return absl::UnavailableError("memory store: commits refused (test)");
  workers_[worker.id()] = worker;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ftune::v1::Worker>> MemoryJobStore::LoadWorkers() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ftune::v1::Worker> out;
  for (const auto& [id, worker] : workers_) out.push_back(worker);
  return out;
}

}  // namespace ftune::server
