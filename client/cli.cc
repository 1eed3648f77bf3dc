#include "client/cli.h"

#include <chrono>
#include <cstdio>

#include "common/credentials.h"

namespace ftune::ctl {

void AddGlobalFlags(CLI::App* app, GlobalFlags* flags) {
  app->add_option("--controller", flags->controller, "Controller address host:port")
      ->envname("FTCTL_CONTROLLER")
      ->capture_default_str();
  app->add_option("--token-file", flags->token_file,
                  "File holding the bearer token sent on every call");
  app->add_flag("--tls", flags->tls, "Connect with TLS");
  app->add_option("--tls-ca", flags->tls_ca,
                  "PEM CA that signs the controller's certificate (implies --tls)");
  app->add_option("--tls-cert", flags->tls_cert, "PEM client certificate for mTLS");
  app->add_option("--tls-key", flags->tls_key, "PEM private key of --tls-cert");
  app->add_option("--timeout", flags->timeout_seconds, "Seconds to wait for each call")
      ->capture_default_str();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> ConnectChannel(const GlobalFlags& flags) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      MakeChannel(ClientChannelOptions(flags.controller, flags.tls, flags.tls_ca, flags.tls_cert,
                                       flags.tls_key, flags.token_file));
  if (!channel.ok()) {
    // A missing or unreadable credentials file is a usage error, not an outage.
    return absl::InvalidArgumentError(channel.status().message());
  }
  return channel;
}

absl::StatusOr<std::unique_ptr<ftune::v1::JobService::StubInterface>> Connect(
    const GlobalFlags& flags) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = ConnectChannel(flags);
  if (!channel.ok()) return channel.status();
  return std::unique_ptr<ftune::v1::JobService::StubInterface>(
      ftune::v1::JobService::NewStub(*channel));
}

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return kExitUsage;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kExitUnavailable;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return kExitAuth;
    default:
      return kExitError;
  }
}

int ReportError(const absl::Status& status, const GlobalFlags& flags) {
  const std::string message(status.message());
  if (absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status)) {
    std::fprintf(stderr, "ftctl: cannot reach the controller at %s: %s\n", flags.controller.c_str(),
                 message.c_str());
    std::fprintf(stderr, "       (set --controller or FTCTL_CONTROLLER)\n");
  } else {
    std::fprintf(stderr, "ftctl: %s\n", message.c_str());
  }
  return ExitCodeFor(status);
}

void SetDeadline(grpc::ClientContext* context, const GlobalFlags& flags) {
  context->set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(flags.timeout_seconds * 1000)));
}

void AddJsonFlag(CLI::App* cmd, bool* json) {
  cmd->add_flag("--json", *json, "Print protobuf JSON (proto field names) instead of text");
}

}  // namespace ftune::ctl
