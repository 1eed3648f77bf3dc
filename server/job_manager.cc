#include "server/job_manager.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/job_spec.h"
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

}  // namespace

JobManager::JobManager(JobStore* store, Clock* clock, JobManagerOptions options)
    : store_(store),
      clock_(clock),
      options_(options),
      events_(store, options.watcher_queue_limit),
      rng_(std::random_device{}()) {}

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

std::string JobManager::NewIdLocked(absl::string_view prefix, int hex_digits) {
  std::string out(prefix);
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < hex_digits; ++i) out.push_back(kHex[rng_() & 15]);
  return out;
}

JobEvent JobManager::StateEvent(const Job& before, JobState to, const std::string& reason) const {
  JobEvent event;
  ftune::v1::StateChanged* change = event.mutable_state_changed();
  change->set_from(before.state());
  change->set_to(to);
  change->set_attempt(before.attempt());
  change->set_worker_id(before.worker_id());
  change->set_reason(reason);
  return event;
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
                      NewIdLocked("", 6));
  } while (jobs_.count(id) != 0);

  JobRecord record;
  record.queue_seq = next_queue_seq_;
  record.job.set_id(id);
  *record.job.mutable_spec() = WithDefaults(spec);
  *record.job.mutable_create_time() = ToProto(now);
  Job before = record.job;  // state UNSPECIFIED: the "from" of the first event
  std::vector<JobEvent> events = {StateEvent(before, ftune::v1::JOB_STATE_QUEUED, "submitted")};

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
  const std::string why = reason.empty() ? "cancelled by user" : reason;
  JobRecord updated = entry->record;
  switch (job.state()) {
    case ftune::v1::JOB_STATE_QUEUED:
      updated.job.set_error(why);
      *updated.job.mutable_end_time() = ToProto(clock_->Now());
      RETURN_IF_ERROR(CommitLocked(*entry, std::move(updated),
                                   {StateEvent(job, ftune::v1::JOB_STATE_CANCELLED, why)}));
      break;
    case ftune::v1::JOB_STATE_ASSIGNED:
    case ftune::v1::JOB_STATE_RUNNING:
      updated.job.set_error(why);
      RETURN_IF_ERROR(CommitLocked(*entry, std::move(updated),
                                   {StateEvent(job, ftune::v1::JOB_STATE_CANCELLING, why)}));
      break;
    case ftune::v1::JOB_STATE_CANCELLING:
      break;  // already on its way
    default:
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", job_id, " has already ended (", ftune::v1::JobState_Name(job.state()), ")"));
  }
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
  for (const QueueKey& key : queue_) {
    Entry* entry = FindLocked(std::get<2>(key));
    const std::string device = PickDevice(entry->record.job.spec().device(), free);
    if (device.empty()) continue;

    JobRecord updated = entry->record;
    updated.lease_id = NewIdLocked("lease-", 16);
    updated.device = device;
    updated.last_batch_id = 0;
    updated.job.set_worker_id(waiter.worker_id);
    updated.job.set_error("");
    const Job& before = entry->record.job;
    JobEvent event = StateEvent(before, ftune::v1::JOB_STATE_ASSIGNED,
                                absl::StrCat("leased to ", waiter.worker_id, " on ", device));
    event.mutable_state_changed()->set_worker_id(waiter.worker_id);
    absl::Status committed = CommitLocked(*entry, std::move(updated), {std::move(event)});
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
  if (r.lease_id != request.lease_id() || !HoldsLease(r.job.state())) {
    response.set_verdict(ftune::v1::LEASE_VERDICT_LOST);
    response.set_last_seq(r.job.last_event_seq());
    return response;
  }
  if (request.batch_id() != 0 && request.batch_id() <= r.last_batch_id) {
    // A retry of a batch already stored.
    response.set_last_seq(r.job.last_event_seq());
  } else {
    JobRecord updated = r;
    std::vector<JobEvent> events;
    if (r.job.state() == ftune::v1::JOB_STATE_ASSIGNED) {
      events.push_back(StateEvent(r.job, ftune::v1::JOB_STATE_RUNNING, "started"));
      if (!updated.job.has_start_time()) *updated.job.mutable_start_time() = ToProto(clock_->Now());
    }
    for (const JobEvent& event : request.events()) events.push_back(event);
    if (request.batch_id() != 0) updated.last_batch_id = request.batch_id();
    RETURN_IF_ERROR(CommitLocked(*entry, std::move(updated), std::move(events)));
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
  if (request.outcome() == ftune::v1::JOB_OUTCOME_UNSPECIFIED ||
      !ftune::v1::JobOutcome_IsValid(request.outcome())) {
    return absl::InvalidArgumentError("outcome: required (SUCCEEDED, FAILED, CANCELLED, REQUEUE)");
  }
  std::lock_guard<std::mutex> lock(mu_);
  Entry* entry = FindLocked(request.job_id());
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("job ", request.job_id(), " not found"));
  }
  ftune::v1::CompleteJobResponse response;
  const JobRecord& r = entry->record;
  if (r.lease_id != request.lease_id() || request.lease_id().empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "lease ", request.lease_id(), " on job ", request.job_id(),
        " is not held (it expired and the job was requeued, or was never granted)"));
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
  const absl::Time now = clock_->Now();
  const bool cancelling = r.job.state() == ftune::v1::JOB_STATE_CANCELLING;
  JobState to;
  std::string reason;
  switch (request.outcome()) {
    case ftune::v1::JOB_OUTCOME_SUCCEEDED:
      to = ftune::v1::JOB_STATE_SUCCEEDED;
      reason = "finished";
      job.set_error("");
      break;
    case ftune::v1::JOB_OUTCOME_FAILED:
      to = ftune::v1::JOB_STATE_FAILED;
      reason = request.error().empty() ? "failed" : request.error();
      job.set_error(reason);
      break;
    case ftune::v1::JOB_OUTCOME_CANCELLED:
      to = ftune::v1::JOB_STATE_CANCELLED;
      reason = !r.job.error().empty() ? r.job.error()
                                      : (request.error().empty() ? "cancelled" : request.error());
      job.set_error(reason);
      break;
    default:  // REQUEUE
      if (cancelling) {
        to = ftune::v1::JOB_STATE_CANCELLED;
        reason = r.job.error().empty() ? "cancelled" : r.job.error();
      } else {
        to = ftune::v1::JOB_STATE_QUEUED;
        reason = absl::StrCat("handed back by ", r.job.worker_id(),
                              request.error().empty() ? "" : ": ", request.error());
      }
      break;
  }
  JobEvent event = StateEvent(r.job, to, reason);
  if (to == ftune::v1::JOB_STATE_QUEUED) {
    job.set_attempt(job.attempt() + 1);
    event.mutable_state_changed()->set_attempt(job.attempt());
    updated.device.clear();
  } else {
    *job.mutable_end_time() = ToProto(now);
  }
  RETURN_IF_ERROR(CommitLocked(*entry, std::move(updated), {std::move(event)}));
  if (to == ftune::v1::JOB_STATE_QUEUED) ++counters_.requeued_handed_back;
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
    JobRecord updated = r;
    updated.lease_id.clear();
    updated.device.clear();
    const uint32_t max_restarts = r.job.spec().has_max_restarts() ? r.job.spec().max_restarts() : 3;
    JobState to;
    std::string reason;
    if (r.job.state() == ftune::v1::JOB_STATE_CANCELLING) {
      to = ftune::v1::JOB_STATE_CANCELLED;
      reason = absl::StrCat("lease expired while cancelling (worker ", r.job.worker_id(), ")");
    } else if (r.restarts < max_restarts) {
      to = ftune::v1::JOB_STATE_QUEUED;
      reason = absl::StrCat("lease expired (worker ", r.job.worker_id(), " went silent)");
      updated.restarts = r.restarts + 1;
      updated.job.set_attempt(r.job.attempt() + 1);
    } else {
      to = ftune::v1::JOB_STATE_FAILED;
      reason = absl::StrCat("lease expired (worker ", r.job.worker_id(),
                            " went silent) and max_restarts (", max_restarts, ") is used up");
      updated.job.set_error(reason);
    }
    if (to != ftune::v1::JOB_STATE_QUEUED) *updated.job.mutable_end_time() = ToProto(now);
    JobEvent event = StateEvent(r.job, to, reason);
    event.mutable_state_changed()->set_attempt(updated.job.attempt());
    // A store failure leaves the lease as it is; the next sweep tries again.
    if (CommitLocked(*entry, std::move(updated), {std::move(event)}).ok()) {
      ++expired;
      ++counters_.leases_expired;
      if (to == ftune::v1::JOB_STATE_QUEUED) ++counters_.requeued_after_expiry;
    }
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
  if (expired > 0) DispatchLocked();
  return expired;
}

}  // namespace ftune::server
