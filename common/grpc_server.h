// Builds, starts and drains the gRPC server of every ftune daemon: the given services plus
// the standard grpc.health.v1.Health service.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/health_service.h"

namespace ftune {

struct GrpcServerOptions {
  // host:port; port 0 picks a free port (see GrpcServer::address()).
  std::string listen = "127.0.0.1:0";
  // Insecure when null.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // Largest request or response message.
  int max_message_bytes = 64 << 20;
};

class GrpcServer {
 public:
  // Starts serving `services` (not owned; they must outlive the server).
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(
      const GrpcServerOptions& options, const std::vector<grpc::Service*>& services);

  ~GrpcServer();

  // host:port actually bound.
  const std::string& address() const { return address_; }
  int port() const { return port_; }

  // Health goes NOT_SERVING, new calls are refused, calls in flight get until `drain` to
  // finish, then are cancelled.
  void Shutdown(absl::Duration drain);

  grpc::Server* server() { return server_.get(); }
  HealthService& health() { return *health_; }

 private:
  GrpcServer(std::unique_ptr<HealthService> health, std::unique_ptr<grpc::Server> server,
             std::string address, int port);

  std::unique_ptr<HealthService> health_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  int port_ = 0;
  bool shut_down_ = false;
};

// Prints "listening on HOST:PORT" on stdout (the line scripts and tests wait for).
void AnnounceListening(const GrpcServer& server);

}  // namespace ftune
