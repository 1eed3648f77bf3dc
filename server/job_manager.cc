#include "server/job_manager.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/job_spec.h"
#include "common/random_id.h"
#include "common/status_macros.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/time_util.h"

namespace ftune::server {
namespace {

using ftune::v1::Job;
using ftune::v1::JobEvent;
using ftune::v1::JobState;

google::protobuf::Timestamp ToProto(absl::Time t) {
  google::protobuf::Timestamp ts;
  const int64_t nanos = absl::ToUnixNanos(t);
  ts.set_seconds(nanos / 1'000'000'000);
  ts.set_nanos(static_cast<int32_t>(nanos % 1'000'000'000));
  return ts;
}

absl::Time FromProto(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

bool IsTerminal(JobState state) {
  return state == ftune::v1::JOB_STATE_SUCCEEDED || state == ftune::v1::JOB_STATE_FAILED ||
         state == ftune::v1::JOB_STATE_CANCELLED;
}

absl::Status RequireJobId(const std::string& job_id) {
  if (job_id.empty()) return absl::InvalidArgumentError("job_id: required");
  return absl::OkStatus();
}

// The name of the event's payload field: "train_progress", "log", ...
std::string EventKind(const JobEvent& event) {
  const google::protobuf::FieldDescriptor* field =
      JobEvent::descriptor()->FindFieldByNumber(event.payload_case());
  return field == nullptr ? "none" : field->name();
}

// The free device that suits a job asking for `wanted`, or "" when none does.
std::string PickDevice(const std::string& wanted, const std::vector<std::string>& free) {
  auto first = [&](auto pred) -> std::string {
    for (const std::string& d : free) {
      if (pred(d)) return d;
    }
    return "";
  };
  auto is_cuda = [](const std::string& d) { return absl::StartsWith(d, "cuda"); };
  if (wanted == "cuda") return first(is_cuda);
  if (absl::StartsWith(wanted, "cuda:")) {
    return first([&](const std::string& d) { return d == wanted; });
  }
  if (wanted == "cpu") {
    std::string cpu = first([](const std::string& d) { return d == "cpu"; });
    return cpu.empty() ? first([](const std::string&) { return true; }) : cpu;
  }
  // auto: a CUDA device when one is free, else anything.
  std::string cuda = first(is_cuda);
  return cuda.empty() ? first([](const std::string&) { return true; }) : cuda;
}

// "cuda" for cuda:N, else "cpu".
std::string KindOf(const std::string& device) {
  return absl::StartsWith(device, "cuda") ? "cuda" : "cpu";
}

uint32_t WorldSize(const Job& job) { return std::max(1u, job.spec().world_size()); }

// The device kinds a gang asking for `wanted` may run on, preferred first, as PickDevice
// prefers them; a gang never mixes kinds, since its ranks share one c10d backend (Gloo on
// CPU, NCCL on CUDA).
std::vector<std::string> GangKinds(const std::string& wanted) {
  if (wanted == "cuda") return {"cuda"};
  if (wanted == "cpu") return {"cpu", "cuda"};
  return {"cuda", "cpu"};  // auto
}

// Where rank 0 of a gang on `device` of `worker` serves the rendezvous: its rendezvous host
// and port + the device's index; nullopt when the worker takes no rank 0.
std::optional<std::pair<std::string, uint32_t>> RendezvousEndpoint(
    const ftune::v1::Worker& worker, const std::string& device) {
  if (worker.rendezvous_port() == 0) return std::nullopt;
  for (int i = 0; i < worker.devices_size(); ++i) {
    if (worker.devices(i).name() == device) {
      return std::make_pair(worker.rendezvous_host(),
                            worker.rendezvous_port() + static_cast<uint32_t>(i));
    }
  }
  return std::nullopt;
}

// A worker that can take ranks of a gang: its free devices of one kind.
struct GangHost {
  std::string worker_id;
  std::vector<std::string> devices;  // registered order, but rank 0's first
  bool takes_rank0 = false;          // it has a rendezvous port free on one of them
};

// Which hosts get how many ranks of a gang of `n` (hosts hold at least n devices in all):
// as few workers as possible, rank 0's first. One worker when one that takes rank 0 fits the
// whole gang: the smallest such, leaving larger ones to larger gangs. Otherwise rank 0's
// worker is the largest that takes it, the others the largest left, and the last one the
// smallest that fits the remainder. Empty when no host takes rank 0.
std::vector<std::pair<size_t, size_t>> ChooseHosts(const std::vector<GangHost>& hosts,
                                                   size_t n) {
  std::optional<size_t> solo;
  std::optional<size_t> rank0;
  for (size_t i = 0; i < hosts.size(); ++i) {
    if (!hosts[i].takes_rank0) continue;
    const size_t size = hosts[i].devices.size();
    if (size >= n && (!solo || size < hosts[*solo].devices.size())) solo = i;
    if (!rank0 || size > hosts[*rank0].devices.size()) rank0 = i;
  }
  if (solo) return {{*solo, n}};
  if (!rank0) return {};
  std::vector<std::pair<size_t, size_t>> chosen = {{*rank0, hosts[*rank0].devices.size()}};
  size_t remaining = n - hosts[*rank0].devices.size();
  std::vector<size_t> others;
  for (size_t i = 0; i < hosts.size(); ++i) {
    if (i != *rank0) others.push_back(i);
  }
  std::stable_sort(others.begin(), others.end(), [&](size_t a, size_t b) {
    return hosts[a].devices.size() > hosts[b].devices.size();
  });
  size_t next = 0;  // the largest not taken yet
  while (remaining > 0 && next < others.size()) {
    std::optional<size_t> fit;  // smallest of the rest that holds the remainder
    for (size_t k = next; k < others.size(); ++k) {
      const size_t size = hosts[others[k]].devices.size();
      if (size >= remaining && (!fit || size < hosts[*fit].devices.size())) fit = others[k];
    }
    if (fit) {
      chosen.emplace_back(*fit, remaining);
      remaining = 0;
      break;
    }
    const size_t take = hosts[others[next]].devices.size();
    chosen.emplace_back(others[next++], take);
    remaining -= take;
  }
  if (remaining > 0) return {};
  return chosen;
}

EventLog::Options FanOutOptions(const JobManagerOptions& options) {
  EventLog::Options fan_out;
  fan_out.watcher_queue_limit = options.watcher_queue_limit;
  fan_out.window = options.watch_batch_window;
  return fan_out;
}

JobEvent StateEvent(JobState from, const Job& after, const std::string& reason) {
  JobEvent event;
  ftune::v1::StateChanged* change = event.mutable_state_changed();
  change->set_from(from);
  change->set_to(after.state());
  change->set_attempt(after.attempt());
  change->set_worker_id(after.worker_id());
  change->set_reason(reason);
  return event;
}

}  // namespace

JobManager::JobManager(JobStore* store, Clock* clock, JobManagerOptions options)
    : store_(store),
      clock_(clock),
      options_(options),
      events_(store, FanOutOptions(options)) {}

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(JobStore* store, Clock* clock,
                                                               JobManagerOptions options) {
  std::unique_ptr<JobManager> manager(new JobManager(store, clock, options));
  RETURN_IF_ERROR(manager->Load());
  return manager;
}

JobManager::~JobManager() { EndLongCalls(); }

absl::StatusOr<int64_t> JobManager::CompactEvents(int max_jobs) {
  if (options_.event_retention == absl::InfiniteDuration()) return 0;
  RETURN_IF_ERROR(StoreHealth());
  return store_->CompactEvents(clock_->Now() - options_.event_retention, max_jobs);
}

void JobManager::EndLongCalls() {
  std::unique_lock<std::mutex> lock(mu_);
  for (auto& [id, waiter] : waiters_) waiter.done(ftune::v1::AcquireJobResponse());
  waiters_.clear();
  // Changes already made reach the store and the watchers before their streams end.
  Settle(lock).IgnoreError();
  events_.Flush();
  events_.EndAll(absl::UnavailableError("ftcontroller is shutting down"));
}

void JobManager::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  Settle(lock).IgnoreError();
  events_.Flush();
}

// --- group commit ---

absl::Status JobManager::StoreHealth() {
  std::lock_guard<std::mutex> lock(write_mu_);
  return store_error_;
}

void JobManager::QueueWriteLocked(JobWrite write) {
  std::lock_guard<std::mutex> lock(write_mu_);
  queued_.jobs.push_back(std::move(write));
  ++queued_ticket_;
}

void JobManager::QueueWorkerWriteLocked(const ftune::v1::Worker& worker) {
  std::lock_guard<std::mutex> lock(write_mu_);
  queued_.workers.push_back(worker);
  ++queued_ticket_;
}

void JobManager::DeferLocked(std::function<void(const absl::Status&)> callback) {
  deferred_.push_back(std::move(callback));
}

absl::Status JobManager::WaitDurable(std::unique_lock<std::mutex>& lock) {
  const uint64_t ticket = queued_ticket_;
  lock.unlock();
  std::unique_lock<std::mutex> write_lock(write_mu_);
  while (durable_ticket_ < ticket && store_error_.ok()) {
    if (committing_) {
      durable_cv_.wait(write_lock);
      continue;
    }
    // Nobody is committing: this caller leads the next group commit, which carries its own
    // change and whatever else is queued (no hand-off to another thread on the way).
    StoreBatch batch;
    std::swap(batch, queued_);
    const uint64_t upto = queued_ticket_;
    committing_ = true;
    write_lock.unlock();
    absl::Status committed = store_->Commit(batch);
    if (committed.ok()) {
      for (JobWrite& write : batch.jobs) {
        events_.Publish(write.record.job.id(), std::move(write.events));
      }
    } else {
      events_.EndAll(absl::UnavailableError(
          absl::StrCat("ftcontroller stopped: store write failed: ", committed.message())));
    }
    write_lock.lock();
    committing_ = false;
    if (committed.ok()) {
      durable_ticket_ = upto;
    } else {
      store_error_ = absl::UnavailableError(absl::StrCat(
          "ftcontroller stopped after a failed store write (", committed.message(),
          "); restart it to carry on from the last acknowledged state"));
    }
    durable_cv_.notify_all();
  }
  return durable_ticket_ >= ticket ? absl::OkStatus() : store_error_;
}

absl::Status JobManager::Settle(std::unique_lock<std::mutex>& lock) {
  std::vector<std::function<void(const absl::Status&)>> deferred;
  deferred.swap(deferred_);
  const absl::Status durable = WaitDurable(lock);
  for (auto& callback : deferred) callback(durable);
  return durable;
}

absl::Status JobManager::Load() {
  ASSIGN_OR_RETURN(std::vector<JobRecord> records, store_->LoadLiveJobs());
  ASSIGN_OR_RETURN(StoreSummary summary, store_->Summarize());
  ASSIGN_OR_RETURN(std::vector<ftune::v1::Worker> workers, store_->LoadWorkers());
  std::lock_guard<std::mutex> lock(mu_);
  const absl::Time now = clock_->Now();
  ended_counts_ = summary.ended;
  next_queue_seq_ = summary.max_queue_seq + 1;
  for (JobRecord& record : records) {
    const std::string id = record.job.id();
    Entry entry;
    entry.record = std::move(record);
    const JobRecord& r = entry.record;
    if (!r.job.spec().client_request_id().empty()) {
      by_request_id_[r.job.spec().client_request_id()] = id;
    }
    if (r.job.state() == ftune::v1::JOB_STATE_QUEUED) {
      queue_.insert(KeyOf(r));
      entry.queued_since = now;
    }
    if (HoldsLease(r.job.state()) && !r.lease_id.empty()) {
      // The workers may still be running it: give each lease in full to check in again.
      entry.lease_deadline = now + options_.lease;
      entry.rank_deadlines.assign(r.ranks.size(), now + options_.lease);
      leased_.insert(id);
    }
    jobs_.emplace(id, std::move(entry));
  }
  for (ftune::v1::Worker& worker : workers) {
    // Unknown until it heartbeats again.
    worker.set_state(ftune::v1::WORKER_STATE_OFFLINE);
    const std::string id = worker.id();
    workers_[id] = WorkerEntry{std::move(worker), now};
  }
  return absl::OkStatus();
}

bool JobManager::HoldsLease(JobState state) {
  return state == ftune::v1::JOB_STATE_ASSIGNED || state == ftune::v1::JOB_STATE_RUNNING ||
         state == ftune::v1::JOB_STATE_CANCELLING;
}

JobManager::QueueKey JobManager::KeyOf(const JobRecord& record) {
  return {-record.job.spec().priority(), record.queue_seq, record.job.id()};
}

JobManager::Entry* JobManager::FindLocked(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : &it->second;
}

const JobManager::Entry* JobManager::FindLocked(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : &it->second;
}

absl::Status JobManager::TransitionLocked(Entry& entry, JobTrigger trigger, std::string reason,
                                          JobRecord updated, std::vector<JobEvent> more) {
  const Job& before = entry.record.job;
  const std::optional<JobTransition> transition = FindTransition(before.state(), trigger);
  if (!transition) {
    return absl::FailedPreconditionError(absl::StrCat("job ", before.id(), " is ",
                                                      ftune::v1::JobState_Name(before.state()),
                                                      ": it cannot ", JobTriggerName(trigger)));
  }
  const absl::Time now = clock_->Now();
  Job& job = updated.job;
  JobState to = transition->to;
  if (transition->counts_as_restart) {
    const uint32_t max_restarts = job.spec().has_max_restarts() ? job.spec().max_restarts() : 3;
    if (updated.restarts < max_restarts) {
      ++updated.restarts;
      const absl::Duration wait =
          std::min(options_.max_retry_backoff,
                   options_.retry_backoff * static_cast<double>(1u << std::min(updated.restarts - 1, 20u)));
      *job.mutable_not_before() = ToProto(now + wait);
      absl::StrAppend(&reason, "; restart ", updated.restarts, " of ", max_restarts, " in ",
                      absl::FormatDuration(wait));
    } else {
      to = ftune::v1::JOB_STATE_FAILED;
      absl::StrAppend(&reason, "; max_restarts (", max_restarts, ") is used up");
      job.set_error(reason);
    }
  }
  job.set_state(to);
  if (to == ftune::v1::JOB_STATE_QUEUED) {
    job.set_attempt(before.attempt() + 1);
    updated.lease_id.clear();
    updated.device.clear();
    updated.ranks.clear();  // the whole gang attempt ends; job.workers stays for display
  }
  if (IsTerminal(to)) *job.mutable_end_time() = ToProto(now);
  std::vector<JobEvent> events = {StateEvent(before.state(), job, reason)};
  for (JobEvent& e : more) events.push_back(std::move(e));
  CommitLocked(entry, std::move(updated), std::move(events));
  CountTransition(trigger, to);
  return absl::OkStatus();
}

void JobManager::CountTransition(JobTrigger trigger, JobState to) {
  const bool requeued = to == ftune::v1::JOB_STATE_QUEUED;
  switch (trigger) {
    case JobTrigger::kLeaseExpired:
      ++counters_.leases_expired;
      if (requeued) ++counters_.requeued_after_expiry;
      break;
    case JobTrigger::kHandBack:
      if (requeued) ++counters_.requeued_handed_back;
      break;
    case JobTrigger::kRetry:
      if (requeued) ++counters_.requeued_after_error;
      break;
    default:
      break;
  }
}

void JobManager::ApplyEventFields(const JobEvent& event, Job* job) {
  switch (event.payload_case()) {
    case JobEvent::kTrainProgress:
      job->set_step(event.train_progress().step());
      job->set_total_steps(event.train_progress().total_steps());
      break;
    case JobEvent::kEvalResult:
      job->set_last_accuracy(event.eval_result().accuracy());
      break;
    case JobEvent::kCheckpointSaved: {
      const ftune::v1::CheckpointSaved& saved = event.checkpoint_saved();
      job->set_last_checkpoint(saved.path());
      if (saved.is_best()) {
        // The step folder rotates away; its copy in best/ next to it stays.
        job->set_best_checkpoint(
            (std::filesystem::path(saved.path()).parent_path() / "best").string());
        job->set_best_metric_name(saved.metric_name());
        job->set_best_metric(saved.metric_value());
      }
      break;
    }
    case JobEvent::kStateChanged: {
      const ftune::v1::StateChanged& change = event.state_changed();
      job->set_state(change.to());
      break;
    }
    default:
      break;
  }
}

void JobManager::CommitLocked(Entry& entry, JobRecord updated, std::vector<JobEvent> events) {
  const absl::Time now = clock_->Now();
  int64_t seq = updated.job.last_event_seq();
  for (JobEvent& event : events) {
    event.set_job_id(updated.job.id());
    event.set_seq(++seq);
    if (!event.has_time()) *event.mutable_time() = ToProto(now);
    ApplyEventFields(event, &updated.job);
  }
  updated.job.set_last_event_seq(seq);
  for (const JobEvent& event : events) ++counters_.events[EventKind(event)];

  const JobRecord& before = entry.record;
  if (before.job.state() == ftune::v1::JOB_STATE_QUEUED) queue_.erase(KeyOf(before));
  if (updated.job.state() == ftune::v1::JOB_STATE_QUEUED) {
    queue_.insert(KeyOf(updated));
    if (before.job.state() != ftune::v1::JOB_STATE_QUEUED) entry.queued_since = now;
  }
  if (HoldsLease(updated.job.state()) && !updated.lease_id.empty()) {
    leased_.insert(updated.job.id());
  } else {
    leased_.erase(updated.job.id());
    entry.lease_deadline = absl::InfiniteFuture();
    entry.rank_deadlines.clear();
  }
  entry.record = std::move(updated);
  QueueWriteLocked(JobWrite{entry.record, std::move(events)});
  if (IsTerminal(entry.record.job.state())) ended_.emplace_back(queued_ticket_, entry.record.job.id());
}

void JobManager::ForgetEndedLocked() {
  uint64_t durable;
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    durable = durable_ticket_;
  }
  while (!ended_.empty() && ended_.front().first <= durable) {
    auto it = jobs_.find(ended_.front().second);
    ended_.pop_front();
    if (it == jobs_.end()) continue;
    const Job& job = it->second.record.job;
    ++ended_counts_[job.state()];
    if (!job.spec().client_request_id().empty()) by_request_id_.erase(job.spec().client_request_id());
    jobs_.erase(it);
    ++forgotten_;
  }
}

// --- JobService ---

absl::StatusOr<SubmitResult> JobManager::SubmitJob(const ftune::v1::JobSpec& spec) {
  RETURN_IF_ERROR(ValidateJobSpec(spec));
  RETURN_IF_ERROR(StoreHealth());
  std::unique_lock<std::mutex> lock(mu_);
  if (!spec.client_request_id().empty()) {
    // A repeat of a live job is in memory; of an ended one, in the store (read without the
    // lock, and again if an ended job left memory meanwhile).
    while (true) {
      auto it = by_request_id_.find(spec.client_request_id());
      if (it != by_request_id_.end()) {
        SubmitResult earlier{FindLocked(it->second)->record.job, false};
        RETURN_IF_ERROR(Settle(lock));
        return earlier;
      }
      const uint64_t forgotten = forgotten_;
      lock.unlock();
      absl::StatusOr<JobRecord> stored = store_->FindJobByRequestId(spec.client_request_id());
      if (stored.ok()) return SubmitResult{std::move(stored->job), false};
      if (!absl::IsNotFound(stored.status())) return stored.status();
      lock.lock();
      if (forgotten_ == forgotten) break;
    }
  }
  const absl::Time now = clock_->Now();
  std::string id;
  do {
    id = absl::StrCat("job-", absl::FormatTime("%Y%m%d-%H%M%S", now, absl::UTCTimeZone()), "-",
                      RandomHexId("", 6));
  } while (jobs_.count(id) != 0);

  JobRecord record;
  record.queue_seq = next_queue_seq_;
  record.job.set_id(id);
  *record.job.mutable_spec() = WithDefaults(spec);
  *record.job.mutable_create_time() = ToProto(now);
  record.job.set_state(ftune::v1::JOB_STATE_QUEUED);
  std::vector<JobEvent> events = {
      StateEvent(ftune::v1::JOB_STATE_UNSPECIFIED, record.job, "submitted")};

  Entry& entry = jobs_[id];
  entry.record.job.set_id(id);
  CommitLocked(entry, std::move(record), std::move(events));
  ++next_queue_seq_;
  ++counters_.submitted;
  if (!spec.client_request_id().empty()) by_request_id_[spec.client_request_id()] = id;
  SubmitResult result{entry.record.job, true};
  DispatchLocked();
  RETURN_IF_ERROR(Settle(lock));
  return result;
}

absl::StatusOr<Job> JobManager::GetJob(const std::string& job_id) {
  RETURN_IF_ERROR(RequireJobId(job_id));
  std::unique_lock<std::mutex> lock(mu_);
  const Entry* entry = FindLocked(job_id);
  if (entry == nullptr) {
    lock.unlock();
    ASSIGN_OR_RETURN(JobRecord ended, store_->FindJob(job_id));
    return std::move(ended.job);
  }
  Job job = entry->record.job;
  RETURN_IF_ERROR(WaitDurable(lock));  // answer only with durable state
  return job;
}

absl::StatusOr<ftune::v1::ListJobsResponse> JobManager::ListJobs(
    const ftune::v1::ListJobsRequest& request) {
  uint32_t page_size = request.page_size() == 0 ? 50 : std::min<uint32_t>(request.page_size(), 1000);
  int64_t before = INT64_MAX;
  if (!request.page_token().empty() &&
      (!absl::SimpleAtoi(request.page_token(), &before) || before <= 0)) {
    return absl::InvalidArgumentError("page_token: not a token from a previous ListJobs");
  }
  std::set<JobState> states;
  for (int s : request.states()) states.insert(static_cast<JobState>(s));
  auto wanted = [&](const JobRecord& r) {
    return r.queue_seq < before && (states.empty() || states.count(r.job.state()) != 0);
  };
  // Newest first, by submission order: jobs in memory merged with ended ones from the store.
  // A job that left memory meanwhile may be in both; the later version wins.
  std::map<int64_t, Job, std::greater<>> merged;
  auto add = [&](int64_t queue_seq, Job job) {
    auto [it, added] = merged.emplace(queue_seq, job);
    if (!added && job.last_event_seq() > it->second.last_event_seq()) it->second = std::move(job);
  };
  {
    std::unique_lock<std::mutex> lock(mu_);
    for (const auto& [id, entry] : jobs_) {
      if (wanted(entry.record)) add(entry.record.queue_seq, entry.record.job);
    }
    RETURN_IF_ERROR(WaitDurable(lock));
  }
  ASSIGN_OR_RETURN(std::vector<JobRecord> ended,
                   store_->ListEndedJobs(before, states, static_cast<int>(page_size) + 1));
  for (JobRecord& r : ended) add(r.queue_seq, std::move(r.job));
  ftune::v1::ListJobsResponse response;
  int64_t last_returned = 0;
  for (auto& [queue_seq, job] : merged) {
    if (static_cast<uint32_t>(response.jobs_size()) == page_size) {
      // More remain: the next page starts below the last one returned.
      response.set_next_page_token(absl::StrCat(last_returned));
      break;
    }
    *response.add_jobs() = std::move(job);
    last_returned = queue_seq;
  }
  return response;
}

absl::StatusOr<Job> JobManager::CancelJob(const std::string& job_id, const std::string& reason) {
  RETURN_IF_ERROR(RequireJobId(job_id));
  RETURN_IF_ERROR(StoreHealth());
  std::unique_lock<std::mutex> lock(mu_);
  Entry* entry = FindLocked(job_id);
  if (entry == nullptr) {
    lock.unlock();
    ASSIGN_OR_RETURN(JobRecord ended, store_->FindJob(job_id));
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " has already ended (",
                                                      ftune::v1::JobState_Name(ended.job.state()),
                                                      ")"));
  }
  const Job& job = entry->record.job;
  if (job.state() == ftune::v1::JOB_STATE_CANCELLING) {  // already on its way
    Job cancelling = job;
    RETURN_IF_ERROR(WaitDurable(lock));
    return cancelling;
  }
  if (IsTerminal(job.state())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " has already ended (", ftune::v1::JobState_Name(job.state()), ")"));
  }
  const std::string why = reason.empty() ? "cancelled by user" : reason;
  JobRecord updated = entry->record;
  updated.job.set_error(why);
  RETURN_IF_ERROR(TransitionLocked(*entry, JobTrigger::kCancel, why, std::move(updated)));
  Job cancelled = entry->record.job;
  DispatchLocked();  // a queued gang may have held devices back for itself
  RETURN_IF_ERROR(Settle(lock));
  return cancelled;
}

absl::StatusOr<std::shared_ptr<Watch>> JobManager::WatchJob(const std::string& job_id,
                                                            int64_t after_seq,
                                                            std::function<void()> notify) {
  RETURN_IF_ERROR(RequireJobId(job_id));
  if (after_seq < 0) return absl::InvalidArgumentError("after_seq: must be >= 0");
  RETURN_IF_ERROR(StoreHealth());
  // No event follows the terminal one; the watch ends once it has handed that out.
  int64_t end_seq = 0;
  bool in_memory = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (const Entry* entry = FindLocked(job_id); entry != nullptr) {
      in_memory = true;
      if (IsTerminal(entry->record.job.state())) end_seq = entry->record.job.last_event_seq();
    }
  }
  if (!in_memory) {  // ended and stored
    ASSIGN_OR_RETURN(JobRecord ended, store_->FindJob(job_id));
    end_seq = ended.job.last_event_seq();
  }
  return events_.Subscribe(job_id, after_seq, end_seq, std::move(notify));
}

std::vector<ftune::v1::Worker> JobManager::ListWorkers() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ftune::v1::Worker> out;
  for (const auto& [id, entry] : workers_) {
    ftune::v1::Worker worker = entry.worker;
    worker.clear_job_ids();
    for (const std::string& job_id : leased_) {
      for (const auto& [holder, device] : HeldDevices(FindLocked(job_id)->record)) {
        if (holder == id) {
          worker.add_job_ids(job_id);
          break;
        }
      }
    }
    out.push_back(std::move(worker));
  }
  return out;
}

size_t JobManager::waiting_acquires() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiters_.size();
}

size_t JobManager::jobs_in_memory() const {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_.size();
}

size_t JobManager::queued_writes() const {
  std::lock_guard<std::mutex> lock(write_mu_);
  return queued_.jobs.size() + queued_.workers.size();
}

JobManagerCounters JobManager::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counters_;
}

std::map<JobState, int> JobManager::JobsByState() const {
  std::map<JobState, int> counts;
  for (int s = ftune::v1::JobState_MIN; s <= ftune::v1::JobState_MAX; ++s) {
    if (ftune::v1::JobState_IsValid(s) && s != ftune::v1::JOB_STATE_UNSPECIFIED) {
      counts[static_cast<JobState>(s)] = 0;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [state, n] : ended_counts_) counts[state] += static_cast<int>(n);
  for (const auto& [id, entry] : jobs_) ++counts[entry.record.job.state()];
  return counts;
}

// --- WorkerService ---

absl::StatusOr<ftune::v1::RegisterWorkerResponse> JobManager::RegisterWorker(
    const ftune::v1::RegisterWorkerRequest& request) {
  if (request.worker_id().empty()) return absl::InvalidArgumentError("worker_id: required");
  if (request.devices_size() == 0) return absl::InvalidArgumentError("devices: at least one");
  std::set<std::string> names;
  for (int i = 0; i < request.devices_size(); ++i) {
    const std::string& name = request.devices(i).name();
    if (name != "cpu" && !(absl::StartsWith(name, "cuda:") && IsValidDeviceName(name))) {
      return absl::InvalidArgumentError(
          absl::StrCat("devices[", i, "].name: '", name, "' is not cpu or cuda:N"));
    }
    if (!names.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("devices[", i, "].name: '", name,
                                                     "' listed twice"));
    }
  }
  if (request.rendezvous_port() > 0) {
    // Rank 0 on devices[i] listens on rendezvous_port + i.
    const uint64_t last = uint64_t{request.rendezvous_port()} + request.devices_size() - 1;
    if (last > 65535) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rendezvous_port: ", request.rendezvous_port(), " + ", request.devices_size(),
          " devices goes past port 65535"));
    }
    if (request.rendezvous_host().empty()) {
      return absl::InvalidArgumentError(
          "rendezvous_host: required with a rendezvous_port (where other ranks reach rank 0)");
    }
  }
  RETURN_IF_ERROR(StoreHealth());
  std::unique_lock<std::mutex> lock(mu_);
  const absl::Time now = clock_->Now();
  ftune::v1::Worker worker;
  worker.set_id(request.worker_id());
  worker.set_host(request.host());
  *worker.mutable_devices() = request.devices();
  worker.set_version(request.version());
  worker.set_rendezvous_host(request.rendezvous_host());
  worker.set_rendezvous_port(request.rendezvous_port());
  worker.set_state(ftune::v1::WORKER_STATE_ONLINE);
  *worker.mutable_register_time() = ToProto(now);
  *worker.mutable_last_heartbeat_time() = ToProto(now);
  QueueWorkerWriteLocked(worker);
  const std::string id = worker.id();
  workers_[id] = WorkerEntry{std::move(worker), now};
  RETURN_IF_ERROR(Settle(lock));

  ftune::v1::RegisterWorkerResponse response;
  response.set_heartbeat_interval_seconds(absl::ToDoubleSeconds(options_.heartbeat));
  response.set_lease_seconds(absl::ToDoubleSeconds(options_.lease));
  return response;
}

std::optional<size_t> JobManager::RankOf(const JobRecord& record, const std::string& lease_id,
                                         const std::string& worker_id) {
  if (lease_id.empty()) return std::nullopt;
  if (record.ranks.empty()) {
    if (record.lease_id == lease_id && record.job.worker_id() == worker_id) return 0;
    return std::nullopt;
  }
  for (size_t r = 0; r < record.ranks.size(); ++r) {
    if (record.ranks[r].lease_id == lease_id && static_cast<int>(r) < record.job.workers_size() &&
        record.job.workers(static_cast<int>(r)).worker_id() == worker_id) {
      return r;
    }
  }
  return std::nullopt;
}

std::vector<std::pair<std::string, std::string>> JobManager::HeldDevices(
    const JobRecord& record) {
  std::vector<std::pair<std::string, std::string>> held;
  if (!HoldsLease(record.job.state()) || record.lease_id.empty()) return held;
  if (record.ranks.empty()) {
    held.emplace_back(record.job.worker_id(), record.device);
    return held;
  }
  for (size_t r = 0; r < record.ranks.size(); ++r) {
    if (record.ranks[r].released || static_cast<int>(r) >= record.job.workers_size()) continue;
    const ftune::v1::RankPlacement& placement = record.job.workers(static_cast<int>(r));
    held.emplace_back(placement.worker_id(), placement.device());
  }
  return held;
}

std::set<std::string> JobManager::BusyDevicesLocked(const std::string& worker_id) const {
  std::set<std::string> busy;
  for (const std::string& job_id : leased_) {
    for (const auto& [holder, device] : HeldDevices(FindLocked(job_id)->record)) {
      if (holder == worker_id) busy.insert(device);
    }
  }
  return busy;
}

int JobManager::DispatchLocked(uint64_t first) {
  if (waiters_.empty() || queue_.empty()) return 0;
  // The parked calls in the order they are served, and what each worker offers.
  std::vector<uint64_t> order;
  std::map<std::string, Offer> offers;
  auto add = [&](uint64_t id, const Waiter& waiter) {
    auto worker = workers_.find(waiter.worker_id);
    if (worker == workers_.end() ||
        worker->second.worker.state() == ftune::v1::WORKER_STATE_DRAINING) {
      return;
    }
    order.push_back(id);
    Offer& offer = offers[waiter.worker_id];
    offer.worker = &worker->second.worker;
    offer.waiters.push_back(id);
  };
  if (auto it = waiters_.find(first); first != 0 && it != waiters_.end()) add(first, it->second);
  for (const auto& [id, waiter] : waiters_) {
    if (id != first) add(id, waiter);
  }
  for (auto& [worker_id, offer] : offers) {
    const std::set<std::string> busy = BusyDevicesLocked(worker_id);
    for (const ftune::v1::Device& device : offer.worker->devices()) {
      bool named = false;
      for (uint64_t id : offer.waiters) {
        const std::vector<std::string>& free = waiters_.at(id).free_devices;
        named = named || std::find(free.begin(), free.end(), device.name()) != free.end();
      }
      if (named && busy.count(device.name()) == 0) offer.free.push_back(device.name());
    }
  }

  auto free_devices = [&offers] {
    size_t n = 0;
    for (const auto& [worker_id, offer] : offers) n += offer.free.size();
    return n;
  };
  const size_t parked = order.size();
  const absl::Time now = clock_->Now();
  std::set<std::string> reserved;  // device kinds held back for a gang ahead in the queue
  for (auto it = queue_.begin(); it != queue_.end() && !order.empty() && free_devices() > 0;) {
    Entry* entry = FindLocked(std::get<2>(*it));
    ++it;  // leasing the job erases its key (and inserts none)
    const Job& job = entry->record.job;
    absl::Time eligible = entry->queued_since;
    if (job.has_not_before()) {
      if (FromProto(job.not_before()) > now) continue;  // backing off
      eligible = std::max(eligible, FromProto(job.not_before()));
    }
    if (WorldSize(job) <= 1) {
      LeaseOneLocked(*entry, order, offers, reserved);
      continue;
    }
    if (LeaseGangLocked(*entry, order, offers, reserved)) continue;
    // Without a reservation, jobs behind a gang could take every device it waits for as
    // soon as it frees, one at a time, forever.
    if (now - eligible < options_.gang_reserve_after) continue;
    const std::string kind = GangKindLocked(job);
    if (!kind.empty()) reserved.insert(kind);
  }
  return static_cast<int>(parked - order.size());
}

bool JobManager::LeaseOneLocked(Entry& entry, std::vector<uint64_t>& order,
                                std::map<std::string, Offer>& offers,
                                const std::set<std::string>& reserved) {
  for (uint64_t id : order) {
    const Waiter& waiter = waiters_.at(id);
    Offer& offer = offers.at(waiter.worker_id);
    std::vector<std::string> free;
    for (const std::string& d : waiter.free_devices) {
      if (std::find(offer.free.begin(), offer.free.end(), d) != offer.free.end() &&
          reserved.count(KindOf(d)) == 0) {
        free.push_back(d);
      }
    }
    const std::string device = PickDevice(entry.record.job.spec().device(), free);
    if (device.empty()) continue;

    JobRecord updated = entry.record;
    updated.lease_id = RandomHexId("lease-", 32);
    updated.device = device;
    updated.last_batch_id = 0;
    updated.ranks.clear();
    updated.job.clear_workers();
    updated.job.set_worker_id(waiter.worker_id);
    updated.job.set_error("");
    updated.job.clear_not_before();
    if (!TransitionLocked(entry, JobTrigger::kLease,
                          absl::StrCat("leased to ", waiter.worker_id, " on ", device),
                          std::move(updated))
             .ok()) {
      return false;  // not QUEUED: cannot happen for a job taken from queue_
    }
    entry.lease_deadline = clock_->Now() + options_.lease;
    ++counters_.leases_granted;
    offer.free.erase(std::find(offer.free.begin(), offer.free.end(), device));

    ftune::v1::AcquireJobResponse response;
    *response.mutable_job() = entry.record.job;
    response.set_lease_id(entry.record.lease_id);
    response.set_device(device);
    response.set_lease_seconds(absl::ToDoubleSeconds(options_.lease));
    AnswerWaiterLocked(id, order, offers, std::move(response));
    return true;
  }
  return false;
}

bool JobManager::LeaseGangLocked(Entry& entry, std::vector<uint64_t>& order,
                                 std::map<std::string, Offer>& offers,
                                 const std::set<std::string>& reserved) {
  const size_t n = WorldSize(entry.record.job);
  // Rendezvous endpoints that running gangs' rank 0 serve: two workers on one box registered
  // with the same port (one ftworker per GPU) must not be given two rank 0 on it.
  std::set<std::pair<std::string, uint32_t>> in_use;
  for (const std::string& job_id : leased_) {
    const JobRecord& gang = FindLocked(job_id)->record;
    if (gang.ranks.empty() || gang.job.workers_size() == 0) continue;
    const ftune::v1::RankPlacement& rank0 = gang.job.workers(0);
    auto worker = workers_.find(rank0.worker_id());
    if (worker == workers_.end()) continue;
    if (auto endpoint = RendezvousEndpoint(worker->second.worker, rank0.device())) {
      in_use.insert(*endpoint);
    }
  }
  for (const std::string& kind : GangKinds(entry.record.job.spec().device())) {
    if (reserved.count(kind) != 0) continue;
    // Online workers with free devices of this kind, in the order of their oldest call.
    std::vector<GangHost> hosts;
    size_t total = 0;
    for (uint64_t id : order) {
      const std::string& worker_id = waiters_.at(id).worker_id;
      const Offer& offer = offers.at(worker_id);
      if (offer.worker->state() != ftune::v1::WORKER_STATE_ONLINE) continue;
      if (std::any_of(hosts.begin(), hosts.end(),
                      [&](const GangHost& h) { return h.worker_id == worker_id; })) {
        continue;
      }
      GangHost host{worker_id, {}, false};
      for (const std::string& d : offer.free) {
        if (KindOf(d) != kind) continue;
        auto endpoint = RendezvousEndpoint(*offer.worker, d);
        if (!host.takes_rank0 && endpoint && in_use.count(*endpoint) == 0) {
          host.takes_rank0 = true;
          host.devices.insert(host.devices.begin(), d);  // rank 0's, should it go here
        } else {
          host.devices.push_back(d);
        }
      }
      if (host.devices.empty()) continue;
      total += host.devices.size();
      hosts.push_back(std::move(host));
    }
    if (total < n) continue;
    const std::vector<std::pair<size_t, size_t>> chosen = ChooseHosts(hosts, n);
    if (chosen.empty()) continue;

    // Ranks in order: rank 0's worker first (its rank 0 device first), each worker's devices
    // in registered order.
    std::vector<std::pair<std::string, std::string>> slots;  // (worker, device) by rank
    for (const auto& [host, count] : chosen) {
      for (size_t k = 0; k < count; ++k) {
        slots.emplace_back(hosts[host].worker_id, hosts[host].devices[k]);
      }
    }
    const ftune::v1::Worker& rank0 = *offers.at(slots[0].first).worker;
    const uint32_t port = RendezvousEndpoint(rank0, slots[0].second)->second;

    JobRecord updated = entry.record;
    updated.ranks.clear();
    updated.job.clear_workers();
    std::vector<std::string> names;
    for (const auto& [worker_id, device] : slots) {
      updated.ranks.push_back(RankLease{RandomHexId("lease-", 32), false});
      ftune::v1::RankPlacement* placement = updated.job.add_workers();
      placement->set_worker_id(worker_id);
      placement->set_device(device);
      names.push_back(absl::StrCat(worker_id, " ", device));
    }
    updated.lease_id = updated.ranks[0].lease_id;
    updated.device = slots[0].second;
    updated.last_batch_id = 0;
    updated.job.set_worker_id(slots[0].first);
    updated.job.set_error("");
    updated.job.clear_not_before();
    if (!TransitionLocked(entry, JobTrigger::kLease,
                          absl::StrCat("leased as ", n, " ranks (rendezvous ",
                                       rank0.rendezvous_host(), ":", port,
                                       "), by rank: ", absl::StrJoin(names, ", ")),
                          std::move(updated))
             .ok()) {
      return false;  // not QUEUED: cannot happen for a job taken from queue_
    }
    entry.rank_deadlines.assign(n, clock_->Now() + options_.lease);
    counters_.leases_granted += n;

    for (size_t r = 0; r < n; ++r) {
      const auto& [worker_id, device] = slots[r];
      Offer& offer = offers.at(worker_id);
      offer.free.erase(std::find(offer.free.begin(), offer.free.end(), device));
      ftune::v1::AcquireJobResponse response;
      *response.mutable_job() = entry.record.job;
      response.set_lease_id(entry.record.ranks[r].lease_id);
      response.set_device(device);
      response.set_lease_seconds(absl::ToDoubleSeconds(options_.lease));
      ftune::v1::Rendezvous* rendezvous = response.mutable_rendezvous();
      rendezvous->set_rank(static_cast<uint32_t>(r));
      rendezvous->set_world_size(static_cast<uint32_t>(n));
      rendezvous->set_host(rank0.rendezvous_host());
      rendezvous->set_port(port);
      if (!offer.waiters.empty()) {
        AnswerWaiterLocked(offer.waiters.front(), order, offers, std::move(response));
      } else {
        // One call answers one rank: the worker's next AcquireJob gets this one.
        pending_ranks_[worker_id].push_back(
            PendingRank{entry.record.job.id(), entry.record.ranks[r].lease_id,
                        std::move(response)});
      }
    }
    return true;
  }
  return false;
}

std::string JobManager::GangKindLocked(const Job& job) const {
  const size_t n = WorldSize(job);
  for (const std::string& kind : GangKinds(job.spec().device())) {
    size_t devices = 0;
    bool rank0 = false;
    for (const auto& [id, entry] : workers_) {
      if (entry.worker.state() != ftune::v1::WORKER_STATE_ONLINE) continue;
      size_t of_kind = 0;
      for (const ftune::v1::Device& d : entry.worker.devices()) of_kind += KindOf(d.name()) == kind;
      devices += of_kind;
      rank0 = rank0 || (of_kind > 0 && entry.worker.rendezvous_port() > 0);
    }
    if (devices >= n && rank0) return kind;
  }
  return "";
}

void JobManager::AnswerWaiterLocked(uint64_t waiter_id, std::vector<uint64_t>& order,
                                    std::map<std::string, Offer>& offers,
                                    ftune::v1::AcquireJobResponse leased) {
  auto it = waiters_.find(waiter_id);
  std::vector<uint64_t>& of_worker = offers.at(it->second.worker_id).waiters;
  of_worker.erase(std::find(of_worker.begin(), of_worker.end(), waiter_id));
  order.erase(std::find(order.begin(), order.end(), waiter_id));
  AcquireCallback done = std::move(it->second.done);
  waiters_.erase(it);
  AnswerLeasedLocked(std::move(done), std::move(leased));
}

std::optional<ftune::v1::AcquireJobResponse> JobManager::TakePendingRankLocked(
    const std::string& worker_id, const std::vector<std::string>& free) {
  auto found = pending_ranks_.find(worker_id);
  if (found == pending_ranks_.end()) return std::nullopt;
  std::deque<PendingRank>& pending = found->second;
  std::optional<ftune::v1::AcquireJobResponse> taken;
  for (auto it = pending.begin(); it != pending.end() && !taken;) {
    const Entry* entry = FindLocked(it->job_id);
    const size_t rank = it->response.rendezvous().rank();
    const bool current = entry != nullptr && HoldsLease(entry->record.job.state()) &&
                         rank < entry->record.ranks.size() &&
                         entry->record.ranks[rank].lease_id == it->lease_id &&
                         !entry->record.ranks[rank].released;
    if (!current) {  // the gang attempt ended meanwhile
      it = pending.erase(it);
      continue;
    }
    if (std::find(free.begin(), free.end(), it->response.device()) == free.end()) {
      ++it;
      continue;
    }
    taken = std::move(it->response);
    *taken->mutable_job() = entry->record.job;
    it = pending.erase(it);
  }
  if (pending.empty()) pending_ranks_.erase(found);
  return taken;
}

void JobManager::AnswerLeasedLocked(AcquireCallback done,
                                    absl::StatusOr<ftune::v1::AcquireJobResponse> leased) {
  DeferLocked([done = std::move(done), leased = std::move(leased)](const absl::Status& durable) {
    if (durable.ok()) {
      done(leased);
    } else {
      done(durable);
    }
  });
}

uint64_t JobManager::AcquireJob(const ftune::v1::AcquireJobRequest& request,
                                AcquireCallback done) {
  if (absl::Status health = StoreHealth(); !health.ok()) {
    done(health);
    return 0;
  }
  std::unique_lock<std::mutex> lock(mu_);
  auto worker = workers_.find(request.worker_id());
  if (worker == workers_.end()) {
    done(absl::FailedPreconditionError(absl::StrCat(
        "worker '", request.worker_id(), "' is not registered; call RegisterWorker first")));
    return 0;
  }
  Waiter waiter;
  waiter.worker_id = request.worker_id();
  for (int i = 0; i < request.free_devices_size(); ++i) {
    const std::string& name = request.free_devices(i);
    bool known = false;
    for (const auto& d : worker->second.worker.devices()) known = known || d.name() == name;
    if (!known) {
      done(absl::InvalidArgumentError(absl::StrCat("free_devices[", i, "]: '", name,
                                                   "' is not a registered device of ",
                                                   request.worker_id())));
      return 0;
    }
    waiter.free_devices.push_back(name);
  }
  // A rank already granted to this worker comes first.
  if (auto pending = TakePendingRankLocked(waiter.worker_id, waiter.free_devices)) {
    AnswerLeasedLocked(std::move(done), std::move(*pending));
    Settle(lock).IgnoreError();  // `done` hears of a failed commit
    return 0;
  }
  const absl::Time now = clock_->Now();
  const double wait = std::max(0.0, request.wait_seconds());
  waiter.deadline = now + std::min(absl::Seconds(wait), options_.max_acquire_wait);
  waiter.done = std::move(done);
  const uint64_t id = next_waiter_id_++;
  waiters_.emplace(id, std::move(waiter));
  // This call is served first; parked ones may be answered too (a gang needing this worker's
  // devices with theirs, a backoff that ended).
  const int answered = DispatchLocked(id);
  bool parked = false;
  if (auto it = waiters_.find(id); it != waiters_.end()) {
    if (it->second.deadline <= now) {
      AcquireCallback nothing = std::move(it->second.done);
      waiters_.erase(it);
      nothing(ftune::v1::AcquireJobResponse());
    } else {
      parked = true;
    }
  }
  if (answered > 0) Settle(lock).IgnoreError();  // the callbacks hear of a failed commit
  return parked ? id : 0;
}

bool JobManager::CancelAcquire(uint64_t waiter_id) {
  std::lock_guard<std::mutex> lock(mu_);
  return waiters_.erase(waiter_id) != 0;
}

absl::StatusOr<ftune::v1::HeartbeatResponse> JobManager::Heartbeat(
    const ftune::v1::HeartbeatRequest& request) {
  if (request.worker_id().empty()) return absl::InvalidArgumentError("worker_id: required");
  RETURN_IF_ERROR(StoreHealth());
  // Answers from memory without waiting for commits in flight: a verdict that a crash undoes
  // (LOST, CANCEL) only stops a worker early, and the job is leased again or ended later.
  std::lock_guard<std::mutex> lock(mu_);
  const absl::Time now = clock_->Now();
  ftune::v1::HeartbeatResponse response;
  auto worker = workers_.find(request.worker_id());
  if (worker == workers_.end()) {
    response.set_reregister(true);
  } else {
    worker->second.last_heartbeat = now;
    *worker->second.worker.mutable_last_heartbeat_time() = ToProto(now);
    worker->second.worker.set_state(request.draining() ? ftune::v1::WORKER_STATE_DRAINING
                                                       : ftune::v1::WORKER_STATE_ONLINE);
  }
  for (const ftune::v1::LeaseRenewal& renewal : request.leases()) {
    ftune::v1::LeaseStatus* status = response.add_leases();
    status->set_job_id(renewal.job_id());
    status->set_lease_id(renewal.lease_id());
    Entry* entry = FindLocked(renewal.job_id());
    const std::optional<size_t> rank =
        entry == nullptr ? std::nullopt
                         : RankOf(entry->record, renewal.lease_id(), request.worker_id());
    if (!rank || !HoldsLease(entry->record.job.state()) ||
        (!entry->record.ranks.empty() && entry->record.ranks[*rank].released)) {
      status->set_verdict(ftune::v1::LEASE_VERDICT_LOST);
      continue;
    }
    if (entry->record.ranks.empty()) {
      entry->lease_deadline = now + options_.lease;
    } else {
      entry->rank_deadlines[*rank] = now + options_.lease;
    }
    status->set_verdict(entry->record.job.state() == ftune::v1::JOB_STATE_CANCELLING
                            ? ftune::v1::LEASE_VERDICT_CANCEL
                            : ftune::v1::LEASE_VERDICT_OK);
  }
  return response;
}

absl::StatusOr<ftune::v1::ReportEventsResponse> JobManager::ReportEvents(
    const ftune::v1::ReportEventsRequest& request) {
  RETURN_IF_ERROR(RequireJobId(request.job_id()));
  if (request.worker_id().empty()) return absl::InvalidArgumentError("worker_id: required");
  for (int i = 0; i < request.events_size(); ++i) {
    const JobEvent& event = request.events(i);
    if (event.payload_case() == JobEvent::PAYLOAD_NOT_SET) {
      return absl::InvalidArgumentError(absl::StrCat("events[", i, "]: no payload"));
    }
    if (event.has_state_changed()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "events[", i, "]: state_changed is the controller's; use CompleteJob"));
    }
  }
  RETURN_IF_ERROR(StoreHealth());
  std::unique_lock<std::mutex> lock(mu_);
  Entry* entry = FindLocked(request.job_id());
  ftune::v1::ReportEventsResponse response;
  if (entry == nullptr) {  // ended and stored: whoever reports has lost it
    lock.unlock();
    ASSIGN_OR_RETURN(JobRecord ended, store_->FindJob(request.job_id()));
    response.set_verdict(ftune::v1::LEASE_VERDICT_LOST);
    response.set_last_seq(ended.job.last_event_seq());
    return response;
  }
  const JobRecord& r = entry->record;
  const std::optional<size_t> rank = RankOf(r, request.lease_id(), request.worker_id());
  if (!rank || !HoldsLease(r.job.state()) || (!r.ranks.empty() && r.ranks[*rank].released)) {
    response.set_verdict(ftune::v1::LEASE_VERDICT_LOST);
    response.set_last_seq(r.job.last_event_seq());
    RETURN_IF_ERROR(WaitDurable(lock));
    return response;
  }
  if (*rank > 0) {
    // Rank 0 speaks for the gang; the others' events are dropped, their verdict still given.
    response.set_last_seq(r.job.last_event_seq());
  } else if (request.batch_id() != 0 && request.batch_id() <= r.last_batch_id) {
    // A retry of a batch already stored.
    response.set_last_seq(r.job.last_event_seq());
  } else {
    JobRecord updated = r;
    std::vector<JobEvent> events(request.events().begin(), request.events().end());
    if (request.batch_id() != 0) updated.last_batch_id = request.batch_id();
    if (r.job.state() == ftune::v1::JOB_STATE_ASSIGNED) {
      if (!updated.job.has_start_time()) *updated.job.mutable_start_time() = ToProto(clock_->Now());
      RETURN_IF_ERROR(TransitionLocked(*entry, JobTrigger::kStart, "started", std::move(updated),
                                       std::move(events)));
    } else {
      CommitLocked(*entry, std::move(updated), std::move(events));
    }
    response.set_last_seq(entry->record.job.last_event_seq());
  }
  response.set_verdict(entry->record.job.state() == ftune::v1::JOB_STATE_CANCELLING
                           ? ftune::v1::LEASE_VERDICT_CANCEL
                           : ftune::v1::LEASE_VERDICT_OK);
  RETURN_IF_ERROR(WaitDurable(lock));
  return response;
}

absl::StatusOr<ftune::v1::CompleteJobResponse> JobManager::CompleteJob(
    const ftune::v1::CompleteJobRequest& request) {
  RETURN_IF_ERROR(RequireJobId(request.job_id()));
  if (request.worker_id().empty()) return absl::InvalidArgumentError("worker_id: required");
  if (request.outcome() == ftune::v1::JOB_OUTCOME_UNSPECIFIED ||
      !ftune::v1::JobOutcome_IsValid(request.outcome())) {
    return absl::InvalidArgumentError(
        "outcome: required (SUCCEEDED, FAILED, CANCELLED, REQUEUE, RETRY)");
  }
  RETURN_IF_ERROR(StoreHealth());
  std::unique_lock<std::mutex> lock(mu_);
  Entry* entry = FindLocked(request.job_id());
  std::optional<JobRecord> ended;
  if (entry == nullptr) {
    lock.unlock();
    ASSIGN_OR_RETURN(ended, store_->FindJob(request.job_id()));
  }
  ftune::v1::CompleteJobResponse response;
  const JobRecord& r = entry != nullptr ? entry->record : *ended;
  const std::optional<size_t> rank = RankOf(r, request.lease_id(), request.worker_id());
  if (!rank) {
    return absl::FailedPreconditionError(absl::StrCat(
        "lease ", request.lease_id(), " on job ", request.job_id(), " is not held by ",
        request.worker_id(), " (it expired and the job was requeued, or was never granted)"));
  }
  const bool gang = !r.ranks.empty();
  if (!HoldsLease(r.job.state()) || (gang && r.ranks[*rank].released)) {
    // A retry of a CompleteJob that already went through, or a rank finishing after its
    // gang's job ended: nothing left to change.
    *response.mutable_job() = r.job;
    if (lock.owns_lock()) RETURN_IF_ERROR(WaitDurable(lock));
    return response;
  }
  // Ranks stop together (they agree on every stop after each step), and rank 0 has the
  // checkpoint to write before it reports: another rank's success, cancel or hand-back only
  // gives its device back, and rank 0's outcome ends the attempt. Another rank's error ends it
  // at once (rank 0's collectives are failing too).
  const bool stopped_with_rank0 = request.outcome() == ftune::v1::JOB_OUTCOME_SUCCEEDED ||
                                  request.outcome() == ftune::v1::JOB_OUTCOME_CANCELLED ||
                                  request.outcome() == ftune::v1::JOB_OUTCOME_REQUEUE;
  if (gang && *rank > 0 && stopped_with_rank0) {
    JobRecord updated = r;
    updated.ranks[*rank].released = true;
    CommitLocked(*entry, std::move(updated), {});
    *response.mutable_job() = entry->record.job;
    DispatchLocked();
    RETURN_IF_ERROR(Settle(lock));
    return response;
  }
  JobRecord updated = r;
  Job& job = updated.job;
  if (*rank == 0) {  // other ranks write no checkpoints
    if (!request.best_checkpoint().empty()) job.set_best_checkpoint(request.best_checkpoint());
    if (!request.last_checkpoint().empty()) job.set_last_checkpoint(request.last_checkpoint());
    if (!request.best_metric_name().empty()) {
      job.set_best_metric_name(request.best_metric_name());
      job.set_best_metric(request.best_metric());
    }
  }
  const bool cancelling = r.job.state() == ftune::v1::JOB_STATE_CANCELLING;
  // A cancelling job ends CANCELLED (table) with the cancel's reason, unless it finished.
  const std::string cancel_reason = r.job.error().empty() ? "cancelled" : r.job.error();
  const std::string error = request.error();
  // Who reported: the worker, and for a gang which rank (any rank's failure ends the gang).
  const std::string who =
      gang ? absl::StrCat(request.worker_id(), " (rank ", *rank, " of ", r.ranks.size(), ")")
           : r.job.worker_id();
  JobTrigger trigger;
  std::string reason;
  switch (request.outcome()) {
    case ftune::v1::JOB_OUTCOME_SUCCEEDED:
      trigger = JobTrigger::kSucceeded;
      reason = "finished";
      job.set_error("");
      break;
    case ftune::v1::JOB_OUTCOME_FAILED:
      trigger = JobTrigger::kFailed;
      reason = error.empty() ? "failed" : error;
      if (gang) reason = absl::StrCat(who, ": ", reason);
      job.set_error(reason);
      break;
    case ftune::v1::JOB_OUTCOME_CANCELLED:
      trigger = JobTrigger::kCancelled;
      reason = !r.job.error().empty() ? r.job.error() : (error.empty() ? "cancelled" : error);
      job.set_error(reason);
      break;
    case ftune::v1::JOB_OUTCOME_RETRY:
      trigger = JobTrigger::kRetry;
      reason = cancelling ? cancel_reason
                          : absl::StrCat("error on ", who, ": ", error.empty() ? "unknown" : error);
      break;
    default:  // REQUEUE
      trigger = JobTrigger::kHandBack;
      reason = cancelling ? cancel_reason
                          : absl::StrCat("handed back by ", who,
                                         " (shutting down; not counted against max_restarts)");
      break;
  }
  RETURN_IF_ERROR(TransitionLocked(*entry, trigger, std::move(reason), std::move(updated)));
  *response.mutable_job() = entry->record.job;
  DispatchLocked();
  RETURN_IF_ERROR(Settle(lock));
  return response;
}

int JobManager::Sweep() {
  if (!StoreHealth().ok()) return 0;
  std::unique_lock<std::mutex> lock(mu_);
  const absl::Time now = clock_->Now();
  int expired = 0;
  // Job id and the rank whose lease ran out (0 for a one-device job).
  std::vector<std::pair<std::string, size_t>> due;
  for (const std::string& job_id : leased_) {
    const Entry* entry = FindLocked(job_id);
    if (entry->record.ranks.empty()) {
      if (entry->lease_deadline <= now) due.emplace_back(job_id, 0);
      continue;
    }
    for (size_t r = 0; r < entry->record.ranks.size(); ++r) {
      if (!entry->record.ranks[r].released && entry->rank_deadlines[r] <= now) {
        due.emplace_back(job_id, r);  // one silent rank ends the whole gang attempt
        break;
      }
    }
  }
  for (const auto& [job_id, rank] : due) {
    Entry* entry = FindLocked(job_id);
    const JobRecord& r = entry->record;
    const bool cancelling = r.job.state() == ftune::v1::JOB_STATE_CANCELLING;
    std::string reason;
    if (r.ranks.empty()) {
      reason = cancelling
                   ? absl::StrCat("lease expired while cancelling (worker ", r.job.worker_id(), ")")
                   : absl::StrCat("lease expired (worker ", r.job.worker_id(), " went silent)");
    } else {
      const std::string& worker = r.job.workers(static_cast<int>(rank)).worker_id();
      reason = cancelling
                   ? absl::StrCat("lease of rank ", rank, " expired while cancelling (worker ",
                                  worker, ")")
                   : absl::StrCat("lease of rank ", rank, " of ", r.ranks.size(),
                                  " expired (worker ", worker, " went silent); the gang stops");
    }
    if (TransitionLocked(*entry, JobTrigger::kLeaseExpired, reason, r).ok()) ++expired;
  }
  std::vector<std::string> with_pending;
  for (const auto& [worker_id, pending] : pending_ranks_) with_pending.push_back(worker_id);
  for (const std::string& worker_id : with_pending) {
    TakePendingRankLocked(worker_id, {});  // only drops ranks of gang attempts that ended
  }
  for (auto& [id, worker] : workers_) {
    if (worker.worker.state() != ftune::v1::WORKER_STATE_OFFLINE &&
        worker.last_heartbeat + options_.lease <= now) {
      worker.worker.set_state(ftune::v1::WORKER_STATE_OFFLINE);
    }
  }
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    AcquireCallback done = std::move(it->second.done);
    it = waiters_.erase(it);
    done(ftune::v1::AcquireJobResponse());
  }
  // Also offers jobs whose backoff ended since the last sweep.
  DispatchLocked();
  ForgetEndedLocked();
  Settle(lock).IgnoreError();  // a failed commit stops the manager; callers hear of it
  return expired;
}

}  // namespace ftune::server
