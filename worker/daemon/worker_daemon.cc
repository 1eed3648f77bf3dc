#include "worker/daemon/worker_daemon.h"

#include <algorithm>
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "spdlog/spdlog.h"

namespace ftune::daemon {

namespace v1 = ::ftune::v1;
using train::StopReason;

namespace {

// The controller does not know this worker or this lease (any more).
bool Unknown(const absl::Status& status) {
  return absl::IsNotFound(status) || absl::IsFailedPrecondition(status);
}

// Another attempt with the same request cannot succeed.
bool Permanent(const absl::Status& status) {
  return absl::IsInvalidArgument(status) || absl::IsPermissionDenied(status) ||
         absl::IsUnauthenticated(status) || absl::IsUnimplemented(status);
}

const char* OutcomeName(v1::JobOutcome outcome) {
  switch (outcome) {
    case v1::JOB_OUTCOME_SUCCEEDED:
      return "succeeded";
    case v1::JOB_OUTCOME_FAILED:
      return "failed";
    case v1::JOB_OUTCOME_CANCELLED:
      return "cancelled";
    case v1::JOB_OUTCOME_REQUEUE:
      return "handed back";
    case v1::JOB_OUTCOME_RETRY:
      return "failed; to be retried";
    default:
      return "no outcome";
  }
}

// Shows every event to the observer, then passes it on to the controller's reporter.
class ObservedSink final : public train::EventSink {
 public:
  ObservedSink(train::EventSink* next, JobObserver* observer, std::string job_id)
      : next_(next), observer_(observer), job_id_(std::move(job_id)) {}
  void Emit(v1::JobEvent event) override {
    observer_->OnJobEvent(job_id_, event);
    next_->Emit(std::move(event));
  }

 private:
  train::EventSink* const next_;
  JobObserver* const observer_;
  const std::string job_id_;
};

// The sink of a rank other than 0 of a data-parallel job: rank 0 reports for the gang (the
// controller stores no other rank's events), so this rank's warnings and errors go to the
// worker's log instead, and the rest is dropped.
class RankLogSink final : public train::EventSink {
 public:
  RankLogSink(std::string job_id, uint32_t rank) : job_id_(std::move(job_id)), rank_(rank) {}
  void Emit(v1::JobEvent event) override {
    if (!event.has_log()) return;
    const v1::LogMessage& log = event.log();
    if (log.level() == v1::LOG_LEVEL_ERROR) {
      spdlog::error("job {} rank {}: {}", job_id_, rank_, log.message());
    } else if (log.level() == v1::LOG_LEVEL_WARNING) {
      spdlog::warn("job {} rank {}: {}", job_id_, rank_, log.message());
    }
  }

 private:
  const std::string job_id_;
  const uint32_t rank_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerDaemon>> WorkerDaemon::Create(DaemonConfig config,
                                                                   WorkerClient* client,
                                                                   train::JobRunner* runner,
                                                                   JobObserver* observer) {
  if (config.worker_id.empty()) return absl::InvalidArgumentError("worker id is empty");
  if (config.devices.empty()) return absl::InvalidArgumentError("worker has no devices");
  for (size_t i = 0; i < config.devices.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (config.devices[i].name() == config.devices[j].name()) {
        return absl::InvalidArgumentError(
            absl::StrCat("device '", config.devices[i].name(), "' is listed twice"));
      }
    }
  }
  if (config.rendezvous_port > 0 && config.rendezvous_host.empty()) {
    return absl::InvalidArgumentError(
        "a rendezvous port needs a rendezvous host (where other ranks reach rank 0)");
  }
  if (config.rendezvous_port > 0 &&
      uint64_t{config.rendezvous_port} + config.devices.size() - 1 > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("rendezvous port ", config.rendezvous_port,
                                                   " + ", config.devices.size(),
                                                   " devices goes past port 65535"));
  }
  if (client == nullptr || runner == nullptr) {
    return absl::InvalidArgumentError("worker daemon needs a controller client and a runner");
  }
  absl::StatusOr<AllowedRoots> roots = AllowedRoots::Create(config.allowed_roots);
  if (!roots.ok()) return roots.status();
  return std::unique_ptr<WorkerDaemon>(
      new WorkerDaemon(std::move(config), *std::move(roots), client, runner, observer));
}

WorkerDaemon::WorkerDaemon(DaemonConfig config, AllowedRoots roots, WorkerClient* client,
                           train::JobRunner* runner, JobObserver* observer)
    : config_(std::move(config)),
      roots_(std::move(roots)),
      client_(client),
      runner_(runner),
      observer_(observer),
      heartbeat_interval_(config_.heartbeat_interval) {}

WorkerDaemon::~WorkerDaemon() { Shutdown(); }

void WorkerDaemon::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_) return;
  started_ = true;
  acquire_thread_ = std::thread([this] { AcquireLoop(); });
  heartbeat_thread_ = std::thread([this] { HeartbeatLoop(); });
}

void WorkerDaemon::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
    stopping_ = true;
    drain_deadline_ = absl::Now() + config_.drain_timeout;
    for (auto& [lease, job] : jobs_) {
      if (!job->done) {
        spdlog::info("job {}: asking it to checkpoint and hand back", job->job.id());
        job->cancel.Request(StopReason::kHandBack);
      }
    }
  }
  changed_.notify_all();
  client_->CancelAcquire();
  if (acquire_thread_.joinable()) acquire_thread_.join();

  // Job threads finish on their own once their runners return and CompleteJob is done.
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, job] : jobs_) {
      if (job->thread.joinable()) threads.push_back(std::move(job->thread));
    }
  }
  for (std::thread& t : threads) t.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.clear();
    stop_heartbeat_ = true;
  }
  changed_.notify_all();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
}

std::vector<std::string> WorkerDaemon::RunningJobs() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> ids;
  for (const auto& [lease, job] : jobs_) {
    if (!job->done) ids.push_back(job->job.id());
  }
  return ids;
}

bool WorkerDaemon::WaitOrStop(std::unique_lock<std::mutex>& lock, absl::Duration d) {
  changed_.wait_for(lock, absl::ToChronoNanoseconds(d), [this] { return stopping_; });
  return stopping_;
}

absl::Status WorkerDaemon::Register() {
  v1::RegisterWorkerRequest request;
  request.set_worker_id(config_.worker_id);
  request.set_host(config_.host);
  request.set_version(config_.version);
  for (const v1::Device& device : config_.devices) *request.add_devices() = device;
  request.set_rendezvous_host(config_.rendezvous_host);
  request.set_rendezvous_port(config_.rendezvous_port);
  absl::StatusOr<v1::RegisterWorkerResponse> response = client_->RegisterWorker(request);
  if (!response.ok()) return response.status();
  std::lock_guard<std::mutex> lock(mu_);
  registered_ = true;
  if (response->heartbeat_interval_seconds() > 0) {
    heartbeat_interval_ = absl::Seconds(response->heartbeat_interval_seconds());
  }
  changed_.notify_all();
  return absl::OkStatus();
}

std::vector<std::string> WorkerDaemon::FreeDevicesLocked() const {
  std::vector<std::string> free;
  for (const v1::Device& device : config_.devices) {
    bool busy = false;
    for (const auto& [id, job] : jobs_) busy |= !job->done && job->device == device.name();
    if (!busy) free.push_back(device.name());
  }
  return free;
}

void WorkerDaemon::ReapLocked(std::vector<std::thread>* finished) {
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    if (it->second->done) {
      finished->push_back(std::move(it->second->thread));
      it = jobs_.erase(it);
    } else {
      ++it;
    }
  }
}

void WorkerDaemon::AcquireLoop() {
  Backoff backoff(config_.reconnect);
  bool reported_down = false;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    std::vector<std::thread> finished;
    ReapLocked(&finished);
    if (!finished.empty()) {
      lock.unlock();
      for (std::thread& t : finished) t.join();
      lock.lock();
      continue;
    }

    absl::Status status;
    if (!registered_) {
      lock.unlock();
      status = Register();
      lock.lock();
      if (status.ok()) {
        spdlog::info("registered with the controller as {} ({} devices)", config_.worker_id,
                     config_.devices.size());
        reported_down = false;
        backoff.Reset();
        continue;
      }
    } else {
      std::vector<std::string> free = FreeDevicesLocked();
      if (free.empty()) {
        changed_.wait(lock);
        continue;
      }
      v1::AcquireJobRequest request;
      request.set_worker_id(config_.worker_id);
      for (const std::string& device : free) request.add_free_devices(device);
      request.set_wait_seconds(absl::ToDoubleSeconds(config_.acquire_wait));
      lock.unlock();
      absl::StatusOr<v1::AcquireJobResponse> response = client_->AcquireJob(request);
      lock.lock();
      status = response.status();
      if (response.ok()) {
        backoff.Reset();
        if (!response->has_job()) continue;
        auto job = std::make_unique<RunningJob>();
        job->job = response->job();
        job->lease_id = response->lease_id();
        job->device = response->device();
        if (std::find(free.begin(), free.end(), job->device) == free.end()) {
          job->device = free.front();
        }
        job->lease = absl::Seconds(response->lease_seconds());
        job->renewed = absl::Now();
        if (response->has_rendezvous()) job->rendezvous = response->rendezvous();
        const std::string id = job->job.id();
        if (job->rendezvous) {
          spdlog::info("job {}: rank {} of {} acquired on {} (attempt {}, lease {}, rendezvous "
                       "{}:{})",
                       id, job->rendezvous->rank(), job->rendezvous->world_size(), job->device,
                       job->job.attempt(), job->lease_id, job->rendezvous->host(),
                       job->rendezvous->port());
        } else {
          spdlog::info("job {}: acquired on {} (attempt {}, lease {})", id, job->device,
                       job->job.attempt(), job->lease_id);
        }
        if (stopping_) job->cancel.Request(StopReason::kHandBack);
        RunningJob* running = job.get();
        jobs_[running->lease_id] = std::move(job);
        running->thread = std::thread([this, running] { RunJob(running); });
        continue;
      }
    }

    if (stopping_) break;
    // Reconnect and register again: the controller may have restarted without us.
    registered_ = false;
    if (Permanent(status)) {
      // Bad token or scope: an operator must fix it; keep trying without flooding the log.
      if (!reported_down) spdlog::error("controller refused this worker: {}", status);
    } else if (Unknown(status)) {
      spdlog::warn("controller does not know this worker ({}); registering again", status);
    } else if (!reported_down) {
      spdlog::warn("controller unavailable: {}; retrying with backoff", status);
    }
    reported_down = true;
    WaitOrStop(lock, backoff.Next());
  }
}

void WorkerDaemon::HeartbeatLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  bool failing = false;
  while (!stop_heartbeat_) {
    // The interval is the controller's, known once registered.
    changed_.wait(lock, [this] { return stop_heartbeat_ || registered_; });
    changed_.wait_for(lock, absl::ToChronoNanoseconds(heartbeat_interval_),
                      [this] { return stop_heartbeat_; });
    if (stop_heartbeat_) break;
    if (!registered_) continue;

    v1::HeartbeatRequest request;
    request.set_worker_id(config_.worker_id);
    request.set_draining(stopping_);
    for (const auto& [lease, job] : jobs_) {
      if (job->done || job->cancel.reason() == StopReason::kLeaseLost) continue;
      v1::LeaseRenewal* renewal = request.add_leases();
      renewal->set_job_id(job->job.id());
      renewal->set_lease_id(lease);
    }
    const absl::Time sent = absl::Now();
    lock.unlock();
    absl::StatusOr<v1::HeartbeatResponse> response = client_->Heartbeat(request);
    bool reregister = response.ok() && response->reregister();
    if (reregister) {
      spdlog::warn("controller does not know this worker; registering again");
      if (absl::Status s = Register(); !s.ok()) spdlog::warn("registering failed: {}", s);
    }
    lock.lock();

    if (!response.ok()) {
      if (!failing) spdlog::warn("heartbeat failed: {}", response.status());
      failing = true;
    } else {
      failing = false;
      for (const v1::LeaseRenewal& renewal : request.leases()) {
        auto it = jobs_.find(renewal.lease_id());
        if (it != jobs_.end() && it->second->job.id() == renewal.job_id()) {
          it->second->renewed = sent;
        }
      }
      for (const v1::LeaseStatus& lease : response->leases()) {
        auto it = jobs_.find(lease.lease_id());
        if (it == jobs_.end() || it->second->job.id() != lease.job_id()) continue;
        if (lease.verdict() == v1::LEASE_VERDICT_CANCEL) {
          if (!it->second->cancel.stop_requested()) {
            spdlog::info("job {}: cancelled by the controller", lease.job_id());
          }
          it->second->cancel.Request(StopReason::kCancel);
        } else if (lease.verdict() == v1::LEASE_VERDICT_LOST) {
          spdlog::warn("job {}: lease lost; stopping without reporting", lease.job_id());
          it->second->cancel.Request(StopReason::kLeaseLost);
        }
      }
    }
    // A lease not renewed in time has been (or will be) given to another worker: stop
    // writing to the job's output folder before that worker starts.
    const absl::Time now = absl::Now();
    for (auto& [lease, job] : jobs_) {
      if (job->done || job->lease <= absl::ZeroDuration()) continue;
      if (now - job->renewed > job->lease && job->cancel.reason() != StopReason::kLeaseLost) {
        spdlog::warn("job {}: lease not renewed for {}; stopping", job->job.id(),
                     absl::FormatDuration(now - job->renewed));
        job->cancel.Request(StopReason::kLeaseLost);
      }
    }
  }
}

absl::Status WorkerDaemon::ConfirmLease(RunningJob* running) {
  v1::HeartbeatRequest request;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (running->lease <= absl::ZeroDuration() ||
        absl::Now() - running->renewed < running->lease / 2) {
      return absl::OkStatus();
    }
    request.set_worker_id(config_.worker_id);
    request.set_draining(stopping_);
    v1::LeaseRenewal* renewal = request.add_leases();
    renewal->set_job_id(running->job.id());
    renewal->set_lease_id(running->lease_id);
  }
  const absl::Time sent = absl::Now();
  absl::StatusOr<v1::HeartbeatResponse> response = client_->Heartbeat(request);
  if (!response.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "cannot confirm the lease before writing: ", response.status().message()));
  }
  for (const v1::LeaseStatus& lease : response->leases()) {
    if (lease.job_id() != running->job.id() || lease.lease_id() != running->lease_id) continue;
    if (lease.verdict() == v1::LEASE_VERDICT_LOST) break;
    std::lock_guard<std::mutex> lock(mu_);
    running->renewed = sent;
    if (lease.verdict() == v1::LEASE_VERDICT_CANCEL) running->cancel.Request(StopReason::kCancel);
    return absl::OkStatus();
  }
  spdlog::warn("job {}: the controller no longer grants lease {}; writing nothing more",
               running->job.id(), running->lease_id);
  return absl::AbortedError("the controller says the job's lease is gone");
}

void WorkerDaemon::RunJob(RunningJob* running) {
  const v1::Job& job = running->job;
  train::Placement placement;
  placement.device = running->device;
  // The observer (metrics) keys runs by job id: a rank but 0 gets a key of its own, since two
  // ranks of one job may run here.
  std::string observed_id = job.id();
  if (running->rendezvous) {
    const v1::Rendezvous& rendezvous = *running->rendezvous;
    train::DistributedOptions& distributed = placement.distributed;
    distributed.rank = static_cast<int>(rendezvous.rank());
    distributed.world_size = static_cast<int>(rendezvous.world_size());
    distributed.host = rendezvous.host();
    distributed.port = static_cast<int>(rendezvous.port());
    distributed.rank0_serves_store = true;
    // A straggler of an earlier attempt never joins this one's group.
    distributed.prefix = absl::StrCat(job.id(), "/", job.attempt(), "/");
    if (rendezvous.rank() > 0) observed_id = absl::StrCat(job.id(), "/rank", rendezvous.rank());
  }
  // Rank 0 reports for a gang; the controller stores no other rank's events.
  const bool reports = !running->rendezvous || running->rendezvous->rank() == 0;
  if (observer_ != nullptr) {
    v1::Job observed = job;
    observed.set_id(observed_id);
    observer_->OnJobStarted(observed, running->device);
  }
  running->cancel.set_write_guard([this, running] { return ConfirmLease(running); });
  train::JobRunResult result;
  absl::Status allowed = roots_.CheckJob(job.spec());
  if (!allowed.ok()) {
    spdlog::error("job {}: refused: {}", job.id(), allowed.message());
    result.outcome = v1::JOB_OUTCOME_FAILED;
    result.error = std::string(allowed.message());
  } else if (running->cancel.stop_requested()) {
    // Acquired while shutting down: hand it straight back.
    result.outcome = v1::JOB_OUTCOME_REQUEUE;
    result.error = "worker shutting down";
  } else {
    EventReporter reporter(client_, config_.worker_id, job.id(), running->lease_id,
                           &running->cancel, config_.events);
    RankLogSink rank_log(job.id(), running->rendezvous ? running->rendezvous->rank() : 0);
    train::EventSink* const out = reports ? static_cast<train::EventSink*>(&reporter) : &rank_log;
    ObservedSink observed(out, observer_, observed_id);
    train::EventSink* sink = observer_ != nullptr ? static_cast<train::EventSink*>(&observed) : out;
    try {
      result = runner_->Run(job, placement, sink, &running->cancel);
    } catch (const std::exception& e) {
      result = {};
      result.outcome = v1::JOB_OUTCOME_FAILED;
      result.error = absl::StrCat("trainer error: ", e.what());
    }
    if (result.outcome == v1::JOB_OUTCOME_UNSPECIFIED) {
      result.outcome = v1::JOB_OUTCOME_FAILED;
      if (result.error.empty()) result.error = "the trainer returned no outcome";
    }
    if (reports && running->cancel.reason() != StopReason::kLeaseLost) {
      absl::Duration flush_timeout = config_.flush_timeout;
      {
        std::lock_guard<std::mutex> lock(mu_);
        flush_timeout = std::max(absl::ZeroDuration(),
                                 std::min(flush_timeout, drain_deadline_ - absl::Now()));
      }
      if (absl::Status s = reporter.Flush(flush_timeout); !s.ok()) {
        spdlog::warn("job {}: {}", job.id(), s);
      }
    }
  }

  const bool lease_lost = running->cancel.reason() == StopReason::kLeaseLost;
  if (lease_lost) {
    spdlog::warn("job {}: stopped after losing its lease; not reported", job.id());
  } else {
    Complete(running, result);
  }
  if (observer_ != nullptr) {
    observer_->OnJobFinished(observed_id,
                             lease_lost ? v1::JOB_OUTCOME_UNSPECIFIED : result.outcome);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    running->done = true;
  }
  changed_.notify_all();
}

void WorkerDaemon::Complete(RunningJob* running, const train::JobRunResult& result) {
  v1::CompleteJobRequest request;
  request.set_job_id(running->job.id());
  request.set_lease_id(running->lease_id);
  request.set_worker_id(config_.worker_id);
  request.set_outcome(result.outcome);
  request.set_error(result.error);
  request.set_best_checkpoint(result.best_checkpoint);
  request.set_last_checkpoint(result.last_checkpoint);
  request.set_best_metric_name(result.best_metric_name);
  request.set_best_metric(result.best_metric);

  Backoff backoff(config_.reconnect);
  for (;;) {
    absl::StatusOr<v1::CompleteJobResponse> response = client_->CompleteJob(request);
    if (response.ok()) {
      spdlog::info("job {}: {}{}{}", running->job.id(), OutcomeName(result.outcome),
                   result.error.empty() ? "" : ": ", result.error);
      return;
    }
    if (Unknown(response.status()) || Permanent(response.status())) {
      spdlog::warn("job {}: completing failed: {}", running->job.id(), response.status());
      return;
    }
    std::unique_lock<std::mutex> lock(mu_);
    // Until Shutdown the deadline is infinite; then it bounds the retries.
    const absl::Time give_up = drain_deadline_;
    if (absl::Now() >= give_up) {
      spdlog::warn("job {}: controller unreachable ({}); its lease will expire instead",
                   running->job.id(), response.status());
      return;
    }
    const absl::Duration wait = std::min(backoff.Next(), give_up - absl::Now());
    if (backoff.failures() == 1) {
      spdlog::warn("job {}: completing failed ({}); retrying", running->job.id(),
                   response.status());
    }
    // During shutdown keep retrying (bounded by give_up) rather than returning at once.
    changed_.wait_for(lock, absl::ToChronoNanoseconds(wait));
  }
}

}  // namespace ftune::daemon
