#include "common/health_service.h"

#include <optional>

namespace ftune {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch stream: one write in flight; a status that changes meanwhile is sent next, and
// only the newest pending status matters.
class HealthService::Watcher : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  Watcher(HealthService* owner, std::string service) : owner_(owner), service_(std::move(service)) {}

  // Called with owner_->mu_ held.
  void Push(const std::string& service, ServingStatus status) {
    if (service != service_) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    if (writing_) {
      pending_ = status;
      return;
    }
    WriteLocked(status);
  }

  // Called with owner_->mu_ held.
  void End() {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    finished_ = true;
    Finish(grpc::Status::OK);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      if (!finished_) {
        finished_ = true;
        Finish(grpc::Status::CANCELLED);
      }
      return;
    }
    if (pending_.has_value() && !finished_) {
      const ServingStatus next = *pending_;
      pending_.reset();
      WriteLocked(next);
    }
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!finished_) {
      finished_ = true;
      Finish(grpc::Status::CANCELLED);
    }
  }

  void OnDone() override {
    owner_->Unsubscribe(this);
    delete this;
  }

 private:
  void WriteLocked(ServingStatus status) {
    response_.set_status(status);
    writing_ = true;
    StartWrite(&response_);
  }

  HealthService* owner_;
  std::string service_;
  std::mutex mu_;
  HealthCheckResponse response_;
  bool writing_ = false;
  bool finished_ = false;
  std::optional<ServingStatus> pending_;
};

HealthService::HealthService() { statuses_[""] = HealthCheckResponse::SERVING; }

HealthService::~HealthService() { Shutdown(); }

HealthService::ServingStatus HealthService::StatusLocked(const std::string& service) const {
  auto it = statuses_.find(service);
  return it == statuses_.end() ? HealthCheckResponse::SERVICE_UNKNOWN : it->second;
}

void HealthService::SetStatus(const std::string& service, ServingStatus status) {
  std::lock_guard<std::mutex> lock(mu_);
  statuses_[service] = status;
  for (Watcher* watcher : watchers_) watcher->Push(service, status);
}

void HealthService::Shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  shut_down_ = true;
  for (auto& [name, status] : statuses_) status = HealthCheckResponse::NOT_SERVING;
  for (Watcher* watcher : watchers_) watcher->End();
}

void HealthService::Unsubscribe(Watcher* watcher) {
  std::lock_guard<std::mutex> lock(mu_);
  watchers_.erase(watcher);
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context,
                                               const HealthCheckRequest* request,
                                               HealthCheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::lock_guard<std::mutex> lock(mu_);
  const ServingStatus status = StatusLocked(request->service());
  if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 "unknown service '" + request->service() + "'"));
    return reactor;
  }
  response->set_status(status);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext* context, const HealthCheckRequest* request) {
  auto* watcher = new Watcher(this, request->service());
  std::lock_guard<std::mutex> lock(mu_);
  if (shut_down_) {
    watcher->End();
    return watcher;
  }
  watchers_.insert(watcher);
  watcher->Push(request->service(), StatusLocked(request->service()));
  return watcher;
}

}  // namespace ftune
