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
      events_(store, options.watcher_queue_limit) {}

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(JobStore* store, Clock* clock,
                                                               JobManagerOptions options) {
  std::unique_ptr<JobManager> manager(new JobManager(store, clock, options));
  RETURN_IF_ERROR(manager->Load());
  return manager;
}

JobManager::~JobManager() { EndLongCalls(); }

void JobManager::EndLongCalls() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, waiter] : waiters_) waiter.done(ftune::v1::AcquireJobResponse());
  waiters_.clear();
  events_.EndAll(absl::UnavailableError("ftcontroller is shutting down"));
}

absl::Status JobManager::Load() {
  ASSIGN_OR_RETURN(std::vector<JobRecord> records, store_->LoadJobs());
  ASSIGN_OR_RETURN(std::vector<ftune::v1::Worker> workers, store_->LoadWorkers());
  std::lock_guard<std::mutex> lock(mu_);
  const absl::Time now = clock_->Now();
  for (JobRecord& record : records) {
    const std::string id = record.job.id();
    Entry entry;
    entry.record = std::move(record);
    const JobRecord& r = entry.record;
    next_queue_seq_ = std::max(next_queue_seq_, r.queue_seq + 1);
    by_queue_seq_[r.queue_seq] = id;
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
  RETURN_IF_ERROR(CommitLocked(entry, std::move(updated), std::move(events)));
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

absl::Status JobManager::CommitLocked(Entry& entry, JobRecord updated,
                                      std::vector<JobEvent> events) {
  const absl::Time now = clock_->Now();
  int64_t seq = updated.job.last_event_seq();
  for (JobEvent& event : events) {
    event.set_job_id(updated.job.id());
    event.set_seq(++seq);
    if (!event.has_time()) *event.mutable_time() = ToProto(now);
    ApplyEventFields(event, &updated.job);
  }
  updated.job.set_last_event_seq(seq);
  RETURN_IF_ERROR(store_->Commit(updated, events));
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
  events_.Publish(entry.record.job.id(), events);
  return absl::OkStatus();
}

// --- JobService ---

absl::StatusOr<SubmitResult> JobManager::SubmitJob(const ftune::v1::JobSpec& spec) {
  RETURN_IF_ERROR(ValidateJobSpec(spec));
  std::lock_guard<std::mutex> lock(mu_);
  if (!spec.client_request_id().empty()) {
    auto it = by_request_id_.find(spec.client_request_id());
    if (it != by_request_id_.end()) return SubmitResult{FindLocked(it->second)->record.job, false};
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
  absl::Status committed = CommitLocked(entry, std::move(record), std::move(events));
  if (!committed.ok()) {
    jobs_.erase(id);
    return committed;
  }
  ++next_queue_seq_;
  ++counters_.submitted;
  by_queue_seq_[entry.record.queue_seq] = id;
  if (!spec.client_request_id().empty()) by_request_id_[spec.client_request_id()] = id;
  SubmitResult result{entry.record.job, true};
  DispatchLocked();
  return result;
}

absl::StatusOr<Job> JobManager::GetJob(const std::string& job_id) const {
  RETURN_IF_ERROR(RequireJobId(job_id));
  std::lock_guard<std::mutex> lock(mu_);
  const Entry* entry = FindLocked(job_id);
  if (entry == nullptr) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  return entry->record.job;
}

absl::StatusOr<ftune::v1::ListJobsResponse> JobManager::ListJobs(
    const ftune::v1::ListJobsRequest& request) const {
  uint32_t page_size = request.page_size() == 0 ? 50 : std::min<uint32_t>(request.page_size(), 1000);
  int64_t before = INT64_MAX;
  if (!request.page_token().empty() &&
      (!absl::SimpleAtoi(request.page_token(), &before) || before <= 0)) {
    return absl::InvalidArgumentError("page_token: not a token from a previous ListJobs");
  }
  std::set<int> states;
  for (int s : request.states()) states.insert(s);
  ftune::v1::ListJobsResponse response;
  std::lock_guard<std::mutex> lock(mu_);
  // Newest first: walk submission order backwards from the token.
  int64_t last_returned = 0;
  for (auto it = std::make_reverse_iterator(by_queue_seq_.lower_bound(before));
       it != by_queue_seq_.rend(); ++it) {
    const Job& job = FindLocked(it->second)->record.job;
    if (!states.empty() && states.count(job.state()) == 0) continue;
    if (static_cast<uint32_t>(response.jobs_size()) == page_size) {
      // More remain: the next page starts below the last one returned.
      response.set_next_page_token(absl::StrCat(last_returned));
      break;
    }
    *response.add_jobs() = job;
    last_returned = it->first;
  }
  return response;
}

absl::StatusOr<Job> JobManager::CancelJob(const std::string& job_id, const std::string& reason) {
  RETURN_IF_ERROR(RequireJobId(job_id));
  std::lock_guard<std::mutex> lock(mu_);
  Entry* entry = FindLocked(job_id);
  if (entry == nullptr) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  const Job& job = entry->record.job;
  if (job.state() == ftune::v1::JOB_STATE_CANCELLING) return job;  // already on its way
  if (IsTerminal(job.state())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " has already ended (", ftune::v1::JobState_Name(job.state()), ")"));
  }
  const std::string why = reason.empty() ? "cancelled by user" : reason;
  JobRecord updated = entry->record;
  updated.job.set_error(why);
  RETURN_IF_ERROR(TransitionLocked(*entry, JobTrigger::kCancel, why, std::move(updated)));
  return entry->record.job;
}

absl::StatusOr<std::shared_ptr<Watch>> JobManager::WatchJob(const std::string& job_id,
                                                            int64_t after_seq,
                                                            std::function<void()> notify) {
  RETURN_IF_ERROR(RequireJobId(job_id));
  if (after_seq < 0) return absl::InvalidArgumentError("after_seq: must be >= 0");
  std::lock_guard<std::mutex> lock(mu_);
  const Entry* entry = FindLocked(job_id);
  if (entry == nullptr) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  // Under mu_, which also orders every Publish: nothing lands between snapshot and subscribe.
  return events_.Subscribe(job_id, after_seq, entry->record.job.last_event_seq(),
                           IsTerminal(entry->record.job.state()), std::move(notify));
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
  std::lock_guard<std::mutex> lock(mu_);
  const absl::Time now = clock_->Now();
  ftune::v1::Worker worker;
  worker.set_id(request.worker_id());
  worker.set_host(request.host());
  *worker.mutable_devices() = request.devices();
  worker.set_version(request.version());
  worker.set_state(ftune::v1::WORKER_STATE_ONLINE);
  *worker.mutable_register_time() = ToProto(now);
  *worker.mutable_last_heartbeat_time() = ToProto(now);
  RETURN_IF_ERROR(store_->PutWorker(worker));
  const std::string id = worker.id();
  workers_[id] = WorkerEntry{std::move(worker), now};

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
    AcquireCallback done = std::move(it->second.done);
    it = waiters_.erase(it);
    done(std::move(*leased));
  }
}

uint64_t JobManager::AcquireJob(const ftune::v1::AcquireJobRequest& request,
                                AcquireCallback done) {
  std::lock_guard<std::mutex> lock(mu_);
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
    done(std::move(*leased));
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
  std::lock_guard<std::mutex> lock(mu_);
  Entry* entry = FindLocked(request.job_id());
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("job ", request.job_id(), " not found"));
  }
  ftune::v1::ReportEventsResponse response;
  const JobRecord& r = entry->record;
  if (r.lease_id != request.lease_id() || r.job.worker_id() != request.worker_id() ||
      !HoldsLease(r.job.state())) {
    response.set_verdict(ftune::v1::LEASE_VERDICT_LOST);
    response.set_last_seq(r.job.last_event_seq());
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
      RETURN_IF_ERROR(CommitLocked(*entry, std::move(updated), std::move(events)));
    }
    response.set_last_seq(entry->record.job.last_event_seq());
  }
  response.set_verdict(entry->record.job.state() == ftune::v1::JOB_STATE_CANCELLING
                           ? ftune::v1::LEASE_VERDICT_CANCEL
                           : ftune::v1::LEASE_VERDICT_OK);
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
  std::lock_guard<std::mutex> lock(mu_);
  Entry* entry = FindLocked(request.job_id());
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("job ", request.job_id(), " not found"));
  }
  ftune::v1::CompleteJobResponse response;
  const JobRecord& r = entry->record;
  if (r.lease_id != request.lease_id() || request.lease_id().empty() ||
      r.job.worker_id() != request.worker_id()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "lease ", request.lease_id(), " on job ", request.job_id(), " is not held by ",
        request.worker_id(), " (it expired and the job was requeued, or was never granted)"));
  }
  if (!HoldsLease(r.job.state())) {
    // A retry of a CompleteJob that already went through.
    *response.mutable_job() = r.job;
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
  return response;
}

int JobManager::Sweep() {
  std::lock_guard<std::mutex> lock(mu_);
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
    // A store failure leaves the lease as it is; the next sweep tries again.
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
  return expired;
}

}  // namespace ftune::server
