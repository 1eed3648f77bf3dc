#include "server/services.h"

#include <mutex>

#include "common/grpc_status.h"

namespace ftune::server {
namespace {

using ftune::v1::JobEvent;

absl::Status Authorize(const Authorizer* authorizer, const grpc::CallbackServerContext* context,
                       Scope scope) {
  return authorizer == nullptr ? absl::OkStatus() : authorizer->Check(*context, scope);
}

// Runs `body` (returning absl::Status, filling the response) after the scope check, and
// finishes the call with its status.
template <typename Body>
grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* context,
                                const Authorizer* authorizer, Scope scope, Body body) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status status = Authorize(authorizer, context, scope);
  if (status.ok()) status = body();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// Copies a StatusOr's value into a response message.
template <typename T>
absl::Status Fill(absl::StatusOr<T> result, T* out) {
  if (!result.ok()) return result.status();
  *out = std::move(*result);
  return absl::OkStatus();
}

// WatchJob stream: one write in flight, the next one started from OnWriteDone or from the
// watch's notification; the Watch is closed in OnDone.
class WatchReactor final : public grpc::ServerWriteReactor<JobEvent> {
 public:
  WatchReactor() = default;

  void Start(JobManager* manager, const ftune::v1::WatchJobRequest& request, absl::Status auth) {
    if (!auth.ok()) {
      End(auth);
      return;
    }
    auto watch = manager->WatchJob(request.job_id(), request.after_seq(), [this] { Pump(); });
    if (!watch.ok()) {
      End(watch.status());
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      watch_ = std::move(*watch);
    }
    Pump();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      FinishLocked(absl::CancelledError("the watcher went away"));
      return;
    }
    // The next write is started from the fan-out thread (see Watch::Wake).
    if (watch_ != nullptr) watch_->Wake();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    FinishLocked(absl::CancelledError("cancelled by the watcher"));
  }

  void OnDone() override {
    std::shared_ptr<Watch> watch;
    {
      std::lock_guard<std::mutex> lock(mu_);
      watch = std::move(watch_);
    }
    if (watch != nullptr) watch->Close();
    delete this;
  }

 private:
  // Sends the next event, or ends the stream, unless a write is outstanding.
  void Pump() {
    std::lock_guard<std::mutex> lock(mu_);
    if (writing_ || finished_ || watch_ == nullptr) return;
    Watch::Next next = watch_->Poll();
    switch (next.kind) {
      case Watch::Kind::kWait:
        return;
      case Watch::Kind::kDone:
        FinishLocked(next.status);
        return;
      case Watch::Kind::kEvent:
        event_ = std::move(next.event);
        writing_ = true;
        // With more ready behind it, gRPC may hold this one and send them in one go: far
        // fewer frames and syscalls when a watcher follows a busy job.
        StartWrite(&event_);
        return;
    }
  }

  void End(const absl::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    FinishLocked(status);
  }

  void FinishLocked(const absl::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(ToGrpcStatus(status));
  }

  std::mutex mu_;
  std::shared_ptr<Watch> watch_;
  JobEvent event_;
  bool writing_ = false;
  bool finished_ = false;
};

// AcquireJob long poll: parked in the manager as a waiter; answered by the manager (a job,
// an empty response at the deadline) or withdrawn when the caller cancels.
class AcquireReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit AcquireReactor(ftune::v1::AcquireJobResponse* response) : response_(response) {}

  void Start(JobManager* manager, const ftune::v1::AcquireJobRequest& request,
             absl::Status auth) {
    if (!auth.ok()) {
      Answer(auth);
      return;
    }
    manager_ = manager;
    const uint64_t id = manager->AcquireJob(
        request, [this](absl::StatusOr<ftune::v1::AcquireJobResponse> result) {
          if (result.ok()) *response_ = std::move(*result);
          Answer(result.status());
        });
    bool cancelled;
    {
      std::lock_guard<std::mutex> lock(mu_);
      waiter_id_ = id;
      cancelled = cancelled_;
    }
    // The caller left while we were parking: withdraw now.
    if (cancelled && id != 0 && manager->CancelAcquire(id)) {
      Answer(absl::CancelledError("caller went away"));
    }
  }

  void OnCancel() override {
    uint64_t id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      id = waiter_id_;
    }
    // Only when still parked: otherwise the manager has answered (or is answering) it.
    if (id != 0 && manager_->CancelAcquire(id)) Answer(absl::CancelledError("caller went away"));
  }

  void OnDone() override { delete this; }

 private:
  void Answer(const absl::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    finished_ = true;
    Finish(ToGrpcStatus(status));
  }

  ftune::v1::AcquireJobResponse* const response_;
  JobManager* manager_ = nullptr;
  std::mutex mu_;
  uint64_t waiter_id_ = 0;
  bool cancelled_ = false;
  bool finished_ = false;
};

}  // namespace

// --- JobService ---

grpc::ServerUnaryReactor* JobServiceImpl::SubmitJob(grpc::CallbackServerContext* context,
                                                    const ftune::v1::SubmitJobRequest* request,
                                                    ftune::v1::SubmitJobResponse* response) {
  return Unary(context, authorizer_, Scope::kClient, [&]() -> absl::Status {
    auto result = manager_->SubmitJob(request->spec());
    if (!result.ok()) return result.status();
    *response->mutable_job() = std::move(result->job);
    response->set_created(result->created);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJob(grpc::CallbackServerContext* context,
                                                 const ftune::v1::GetJobRequest* request,
                                                 ftune::v1::Job* response) {
  return Unary(context, authorizer_, Scope::kClient,
               [&] { return Fill(manager_->GetJob(request->job_id()), response); });
}

grpc::ServerUnaryReactor* JobServiceImpl::ListJobs(grpc::CallbackServerContext* context,
                                                   const ftune::v1::ListJobsRequest* request,
                                                   ftune::v1::ListJobsResponse* response) {
  return Unary(context, authorizer_, Scope::kClient,
               [&] { return Fill(manager_->ListJobs(*request), response); });
}

grpc::ServerUnaryReactor* JobServiceImpl::CancelJob(grpc::CallbackServerContext* context,
                                                    const ftune::v1::CancelJobRequest* request,
                                                    ftune::v1::Job* response) {
  return Unary(context, authorizer_, Scope::kClient, [&] {
    return Fill(manager_->CancelJob(request->job_id(), request->reason()), response);
  });
}

grpc::ServerWriteReactor<JobEvent>* JobServiceImpl::WatchJob(
    grpc::CallbackServerContext* context, const ftune::v1::WatchJobRequest* request) {
  auto* reactor = new WatchReactor();
  reactor->Start(manager_, *request, Authorize(authorizer_, context, Scope::kClient));
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::ListWorkers(
    grpc::CallbackServerContext* context, const ftune::v1::ListWorkersRequest* request,
    ftune::v1::ListWorkersResponse* response) {
  return Unary(context, authorizer_, Scope::kClient, [&] {
    for (ftune::v1::Worker& worker : manager_->ListWorkers()) {
      *response->add_workers() = std::move(worker);
    }
    return absl::OkStatus();
  });
}

// --- WorkerService ---

grpc::ServerUnaryReactor* WorkerServiceImpl::RegisterWorker(
    grpc::CallbackServerContext* context, const ftune::v1::RegisterWorkerRequest* request,
    ftune::v1::RegisterWorkerResponse* response) {
  return Unary(context, authorizer_, Scope::kWorker,
               [&] { return Fill(manager_->RegisterWorker(*request), response); });
}

grpc::ServerUnaryReactor* WorkerServiceImpl::AcquireJob(
    grpc::CallbackServerContext* context, const ftune::v1::AcquireJobRequest* request,
    ftune::v1::AcquireJobResponse* response) {
  auto* reactor = new AcquireReactor(response);
  reactor->Start(manager_, *request, Authorize(authorizer_, context, Scope::kWorker));
  return reactor;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Heartbeat(
    grpc::CallbackServerContext* context, const ftune::v1::HeartbeatRequest* request,
    ftune::v1::HeartbeatResponse* response) {
  return Unary(context, authorizer_, Scope::kWorker,
               [&] { return Fill(manager_->Heartbeat(*request), response); });
}

grpc::ServerUnaryReactor* WorkerServiceImpl::ReportEvents(
    grpc::CallbackServerContext* context, const ftune::v1::ReportEventsRequest* request,
    ftune::v1::ReportEventsResponse* response) {
  return Unary(context, authorizer_, Scope::kWorker,
               [&] { return Fill(manager_->ReportEvents(*request), response); });
}

grpc::ServerUnaryReactor* WorkerServiceImpl::CompleteJob(
    grpc::CallbackServerContext* context, const ftune::v1::CompleteJobRequest* request,
    ftune::v1::CompleteJobResponse* response) {
  return Unary(context, authorizer_, Scope::kWorker,
               [&] { return Fill(manager_->CompleteJob(*request), response); });
}

}  // namespace ftune::server
