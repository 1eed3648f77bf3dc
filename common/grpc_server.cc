#include "common/grpc_server.h"

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ftune {
namespace {

// Splits "host:port" (host may be [v6]) into host and port.
absl::Status SplitHostPort(const std::string& listen, std::string* host, int* port) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address '", listen, "' is not host:port"));
  }
  *host = listen.substr(0, colon);
  if (!absl::SimpleAtoi(listen.substr(colon + 1), port) || *port < 0 || *port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address '", listen, "' has no valid port"));
  }
  return absl::OkStatus();
}

}  // namespace

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
