// What every ftctl subcommand shares: the global flags, the connection to the controller,
// exit codes and error reporting.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ftune/v1/job_service.grpc.pb.h"

namespace ftune::ctl {

// Distinct exit codes, so scripts can tell failures apart.
inline constexpr int kExitOk = 0;
// The watched job ended FAILED or CANCELLED.
inline constexpr int kExitJobFailed = 1;
// Bad command line or job spec (the message names the flag or field).
inline constexpr int kExitUsage = 2;
// The controller cannot be reached.
inline constexpr int kExitUnavailable = 3;
// No such job.
inline constexpr int kExitNotFound = 4;
// The controller refused the credentials.
inline constexpr int kExitAuth = 5;
// Any other error reported by the controller.
inline constexpr int kExitError = 6;

struct GlobalFlags {
  std::string controller = "localhost:7070";
  std::string token_file;
  bool tls = false;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  // Deadline of unary calls.
  double timeout_seconds = 30;
};

// Adds --controller (env FTCTL_CONTROLLER), --token-file and the TLS flags to `app`. Its
// subcommands must be created with fallthrough so these work after the subcommand too.
void AddGlobalFlags(CLI::App* app, GlobalFlags* flags);

// A channel to `flags.controller` that carries TLS and the token as configured (ftctl
// classify points it at ftserve). A missing or unreadable credentials file is InvalidArgument.
absl::StatusOr<std::shared_ptr<grpc::Channel>> ConnectChannel(const GlobalFlags& flags);

// A JobService stub over ConnectChannel(flags).
absl::StatusOr<std::unique_ptr<ftune::v1::JobService::StubInterface>> Connect(
    const GlobalFlags& flags);

// The exit code for an error from the controller (or from building the request).
int ExitCodeFor(const absl::Status& status);

// Prints "ftctl: <message>" (plus a hint for an unreachable controller) on stderr and
// returns ExitCodeFor(status).
int ReportError(const absl::Status& status, const GlobalFlags& flags);

// Sets the deadline of a unary call.
void SetDeadline(grpc::ClientContext* context, const GlobalFlags& flags);

// Adds --json to a subcommand.
void AddJsonFlag(CLI::App* cmd, bool* json);

}  // namespace ftune::ctl
