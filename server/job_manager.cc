#include "server/job_manager.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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
    if (r.job.state() == ftune::v1::JOB_STATE_QUEUED) queue_.insert(KeyOf(r));
    if (HoldsLease(r.job.state()) && !r.lease_id.empty()) {
      // The worker may still be running it: give it a full lease to check in again.
      entry.lease_deadline = now + options_.lease;
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
  if (updated.job.state() == ftune::v1::JOB_STATE_QUEUED) queue_.insert(KeyOf(updated));
  if (HoldsLease(updated.job.state()) && !updated.lease_id.empty()) {
    leased_.insert(updated.job.id());
  } else {
    leased_.erase(updated.job.id());
    entry.lease_deadline = absl::InfiniteFuture();
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
      if (FindLocked(job_id)->record.job.worker_id() == id) worker.add_job_ids(job_id);
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
  RETURN_IF_ERROR(StoreHealth());
  std::unique_lock<std::mutex> lock(mu_);
  const absl::Time now = clock_->Now();
  ftune::v1::Worker worker;
  worker.set_id(request.worker_id());
  worker.set_host(request.host());
  *worker.mutable_devices() = request.devices();
  worker.set_version(request.version());
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

std::set<std::string> JobManager::BusyDevicesLocked(const std::string& worker_id) const {
  std::set<std::string> busy;
  for (const std::string& job_id : leased_) {
    const JobRecord& r = FindLocked(job_id)->record;
    if (r.job.worker_id() == worker_id) busy.insert(r.device);
  }
  return busy;
}

std::optional<absl::StatusOr<ftune::v1::AcquireJobResponse>> JobManager::TryLeaseLocked(
    const Waiter& waiter) {
  auto worker = workers_.find(waiter.worker_id);
  if (worker == workers_.end() ||
      worker->second.worker.state() == ftune::v1::WORKER_STATE_DRAINING) {
    return std::nullopt;
  }
  const std::set<std::string> busy = BusyDevicesLocked(waiter.worker_id);
  std::vector<std::string> free;
  for (const std::string& d : waiter.free_devices) {
    if (busy.count(d) == 0) free.push_back(d);
  }
  if (free.empty()) return std::nullopt;
  const absl::Time now = clock_->Now();
  for (const QueueKey& key : queue_) {
    Entry* entry = FindLocked(std::get<2>(key));
    const Job& job = entry->record.job;
    if (job.has_not_before() && FromProto(job.not_before()) > now) continue;  // backing off
    const std::string device = PickDevice(job.spec().device(), free);
    if (device.empty()) continue;

    JobRecord updated = entry->record;
    updated.lease_id = RandomHexId("lease-", 32);
    updated.device = device;
    updated.last_batch_id = 0;
    updated.job.set_worker_id(waiter.worker_id);
    updated.job.set_error("");
    updated.job.clear_not_before();
    absl::Status committed =
        TransitionLocked(*entry, JobTrigger::kLease,
                         absl::StrCat("leased to ", waiter.worker_id, " on ", device),
                         std::move(updated));
    if (!committed.ok()) return absl::StatusOr<ftune::v1::AcquireJobResponse>(committed);
    entry->lease_deadline = clock_->Now() + options_.lease;
    ++counters_.leases_granted;

    ftune::v1::AcquireJobResponse response;
    *response.mutable_job() = entry->record.job;
    response.set_lease_id(entry->record.lease_id);
    response.set_device(device);
    response.set_lease_seconds(absl::ToDoubleSeconds(options_.lease));
    return absl::StatusOr<ftune::v1::AcquireJobResponse>(std::move(response));
  }
  return std::nullopt;
}

void JobManager::DispatchLocked() {
  for (auto it = waiters_.begin(); it != waiters_.end() && !queue_.empty();) {
    auto leased = TryLeaseLocked(it->second);
    if (!leased.has_value()) {
      ++it;
      continue;
    }
    AnswerLeasedLocked(std::move(it->second.done), std::move(*leased));
    it = waiters_.erase(it);
  }
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
  const double wait = std::max(0.0, request.wait_seconds());
  waiter.deadline =
      clock_->Now() + std::min(absl::Seconds(wait), options_.max_acquire_wait);
  auto leased = TryLeaseLocked(waiter);
  if (leased.has_value()) {
    AnswerLeasedLocked(std::move(done), std::move(*leased));
    Settle(lock).IgnoreError();  // `done` hears of a failed commit
    return 0;
  }
  if (waiter.deadline <= clock_->Now()) {
    done(ftune::v1::AcquireJobResponse());
    return 0;
  }
  waiter.done = std::move(done);
  const uint64_t id = next_waiter_id_++;
  waiters_.emplace(id, std::move(waiter));
  return id;
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
    if (entry == nullptr || entry->record.lease_id != renewal.lease_id() ||
        entry->record.job.worker_id() != request.worker_id() ||
        !HoldsLease(entry->record.job.state())) {
      status->set_verdict(ftune::v1::LEASE_VERDICT_LOST);
      continue;
    }
    entry->lease_deadline = now + options_.lease;
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
  if (r.lease_id != request.lease_id() || r.job.worker_id() != request.worker_id() ||
      !HoldsLease(r.job.state())) {
    response.set_verdict(ftune::v1::LEASE_VERDICT_LOST);
    response.set_last_seq(r.job.last_event_seq());
    RETURN_IF_ERROR(WaitDurable(lock));
    return response;
  }
  if (request.batch_id() != 0 && request.batch_id() <= r.last_batch_id) {
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
  if (r.lease_id != request.lease_id() || request.lease_id().empty() ||
      r.job.worker_id() != request.worker_id()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "lease ", request.lease_id(), " on job ", request.job_id(), " is not held by ",
        request.worker_id(), " (it expired and the job was requeued, or was never granted)"));
  }
  if (!HoldsLease(r.job.state())) {
    // A retry of a CompleteJob that already went through.
    *response.mutable_job() = r.job;
    if (lock.owns_lock()) RETURN_IF_ERROR(WaitDurable(lock));
    return response;
  }
  JobRecord updated = r;
  Job& job = updated.job;
  if (!request.best_checkpoint().empty()) job.set_best_checkpoint(request.best_checkpoint());
  if (!request.last_checkpoint().empty()) job.set_last_checkpoint(request.last_checkpoint());
  if (!request.best_metric_name().empty()) {
    job.set_best_metric_name(request.best_metric_name());
    job.set_best_metric(request.best_metric());
  }
  const bool cancelling = r.job.state() == ftune::v1::JOB_STATE_CANCELLING;
  // A cancelling job ends CANCELLED (table) with the cancel's reason, unless it finished.
  const std::string cancel_reason = r.job.error().empty() ? "cancelled" : r.job.error();
  const std::string error = request.error();
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
                          : absl::StrCat("error on ", r.job.worker_id(), ": ",
                                         error.empty() ? "unknown" : error);
      break;
    default:  // REQUEUE
      trigger = JobTrigger::kHandBack;
      reason = cancelling ? cancel_reason
                          : absl::StrCat("handed back by ", r.job.worker_id(),
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
  std::vector<std::string> due;
  for (const std::string& job_id : leased_) {
    if (FindLocked(job_id)->lease_deadline <= now) due.push_back(job_id);
  }
  for (const std::string& job_id : due) {
    Entry* entry = FindLocked(job_id);
    const JobRecord& r = entry->record;
    const std::string reason =
        r.job.state() == ftune::v1::JOB_STATE_CANCELLING
            ? absl::StrCat("lease expired while cancelling (worker ", r.job.worker_id(), ")")
            : absl::StrCat("lease expired (worker ", r.job.worker_id(), " went silent)");
    if (TransitionLocked(*entry, JobTrigger::kLeaseExpired, reason, r).ok()) ++expired;
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
