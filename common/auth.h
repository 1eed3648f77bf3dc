// Bearer-token authorization with scopes. The tokens file holds one `scope token` per line
// (scope: client, worker or admin; blank lines and lines starting with # are ignored):
//
//   client 3f9c...   # ftctl users: JobService, InferenceService
//   worker 81aa...   # ftworker daemons: WorkerService
//   admin  c0de...   # anything
//
// Every RPC handler of a protected service calls Authorizer::Check first. (gRPC 1.51 gives a
// server interceptor no way to fail a call with a status, and an AuthMetadataProcessor only
// runs on TLS ports, so the check lives in the handlers, next to the scope they need.)
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ftune {

enum class Scope {
  kNone,    // anyone (grpc.health.v1.Health, OIP ServerLive/ServerReady, HTTP health)
  kClient,  // JobService, InferenceService, the OIP, /metrics
  kWorker,  // WorkerService
  kAdmin,   // holds every scope
};

absl::string_view ScopeName(Scope scope);

// The scope a fully qualified method ("/ftune.v1.JobService/SubmitJob") needs. Unknown
// services need admin, so a new service is closed until someone decides otherwise.
Scope ScopeForMethod(absl::string_view method);

class TokenStore {
 public:
  // Parses the tokens file at `path`; errors name the file and line.
  static absl::StatusOr<std::unique_ptr<TokenStore>> Load(const std::string& path);
  // Same from text; `source` names it in errors.
  static absl::StatusOr<std::unique_ptr<TokenStore>> Parse(absl::string_view text,
                                                          absl::string_view source);

  // Scope of `token`, or kNone when unknown. Compares in time independent of where a
  // guessed token differs.
  Scope Lookup(absl::string_view token) const;
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    Scope scope;
    std::string token;
  };
  explicit TokenStore(std::vector<Entry> entries) : entries_(std::move(entries)) {}
  std::vector<Entry> entries_;
};

class Authorizer {
 public:
  // Null `tokens` disables authorization: every call is allowed.
  explicit Authorizer(std::shared_ptr<const TokenStore> tokens) : tokens_(std::move(tokens)) {}

  bool enabled() const { return tokens_ != nullptr; }

  // OK when the call carries `authorization: Bearer <token>` with a token of scope `needed`
  // (or admin). UNAUTHENTICATED when the header is missing, malformed or the token unknown;
  // PERMISSION_DENIED when the token's scope is wrong.
  absl::Status Check(const grpc::ServerContextBase& context, Scope needed) const;
  // The same for the raw header value (nullptr = no header); what Check uses.
  absl::Status CheckHeader(const std::string* authorization, Scope needed) const;

 private:
  std::shared_ptr<const TokenStore> tokens_;
};

}  // namespace ftune
