#include "common/grpc_server.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/listen_address.h"

namespace ftune {

GrpcServer::GrpcServer(std::unique_ptr<HealthService> health,
                       std::unique_ptr<grpc::Server> server, std::string address, int port)
    : health_(std::move(health)),
      server_(std::move(server)),
      address_(std::move(address)),
      port_(port) {}

GrpcServer::~GrpcServer() { Shutdown(absl::ZeroDuration()); }

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    const GrpcServerOptions& options, const std::vector<grpc::Service*>& services) {
  std::string host;
  int requested_port = 0;
  absl::Status split = SplitHostPort(options.listen, &host, &requested_port);
  if (!split.ok()) return split;

  auto health = std::make_unique<HealthService>();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(options.listen,
                           options.credentials ? options.credentials
                                               : grpc::InsecureServerCredentials(),
                           &bound_port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(health.get());
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen, " (address in use or not local?)"));
  }
  return std::unique_ptr<GrpcServer>(new GrpcServer(
      std::move(health), std::move(server), absl::StrCat(host, ":", bound_port), bound_port));
}

void GrpcServer::Shutdown(absl::Duration drain) {
  if (shut_down_) return;
  shut_down_ = true;
  health_->Shutdown();
  server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(drain));
  server_->Wait();
}

void AnnounceListening(const GrpcServer& server) {
  std::printf("listening on %s\n", server.address().c_str());
  std::fflush(stdout);
}

}  // namespace ftune
