// grpc.health.v1.Health for ftune servers, on the callback API so it also runs on a server
// with no other services (ftworker's). The overall status ("" service) flips to NOT_SERVING
// when the server starts draining; Watch streams every change.
#pragma once

#include <map>
#include <mutex>
#include <set>
#include <string>

#include "grpc/health/v1/health.grpc.pb.h"

namespace ftune {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  HealthService();
  ~HealthService() override;

  // Sets the status of `service` ("" = the whole server) and tells its watchers.
  void SetStatus(const std::string& service, ServingStatus status);
  // Ends every Watch stream (called before the server shuts down, so it can drain).
  void Shutdown();

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request) override;

 private:
  class Watcher;
  friend class Watcher;

  ServingStatus StatusLocked(const std::string& service) const;
  void Unsubscribe(Watcher* watcher);

  std::mutex mu_;
  std::map<std::string, ServingStatus> statuses_;
  std::set<Watcher*> watchers_;
  bool shut_down_ = false;
};

}  // namespace ftune
