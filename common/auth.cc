#include "common/auth.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ftune {
namespace {

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

absl::string_view ScopeName(Scope scope) {
  switch (scope) {
    case Scope::kNone: return "none";
    case Scope::kClient: return "client";
    case Scope::kWorker: return "worker";
    case Scope::kAdmin: return "admin";
  }
  return "unknown";
}

Scope ScopeForMethod(absl::string_view method) {
  if (absl::StartsWith(method, "/grpc.health.v1.Health/")) return Scope::kNone;
  if (absl::StartsWith(method, "/ftune.v1.JobService/")) return Scope::kClient;
  if (absl::StartsWith(method, "/ftune.v1.InferenceService/")) return Scope::kClient;
  if (absl::StartsWith(method, "/ftune.v1.WorkerService/")) return Scope::kWorker;
  // The Open Inference Protocol: liveness and readiness are open like health, the rest is
  // a client's.
  if (method == "/inference.GRPCInferenceService/ServerLive" ||
      method == "/inference.GRPCInferenceService/ServerReady") {
    return Scope::kNone;
  }
  if (absl::StartsWith(method, "/inference.GRPCInferenceService/")) return Scope::kClient;
  return Scope::kAdmin;
}

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("tokens file '", path, "' cannot be read"));
  std::ostringstream content;
  content << in.rdbuf();
  return Parse(content.str(), path);
}

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Parse(absl::string_view text,
                                                              absl::string_view source) {
  std::vector<Entry> entries;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    // A trailing comment after the token is allowed.
    if (fields.size() > 2 && absl::StartsWith(fields[2], "#")) fields.resize(2);
    if (fields.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ":", line_no, ": expected `scope token` (scope client|worker|admin)"));
    }
    Scope scope;
    if (fields[0] == "client") {
      scope = Scope::kClient;
    } else if (fields[0] == "worker") {
      scope = Scope::kWorker;
    } else if (fields[0] == "admin") {
      scope = Scope::kAdmin;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(source, ":", line_no, ": unknown scope '",
                                                     fields[0], "' (client|worker|admin)"));
    }
    if (fields[1].size() < 8) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", line_no, ": token shorter than 8 characters"));
    }
    for (const Entry& e : entries) {
      if (e.token == fields[1]) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ":", line_no, ": token listed twice"));
      }
    }
    entries.push_back({scope, std::string(fields[1])});
  }
  if (entries.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": no tokens"));
  }
  return std::unique_ptr<TokenStore>(new TokenStore(std::move(entries)));
}

Scope TokenStore::Lookup(absl::string_view token) const {
  Scope found = Scope::kNone;
  for (const Entry& e : entries_) {
    if (ConstantTimeEquals(e.token, token)) found = e.scope;
  }
  return found;
}

absl::Status Authorizer::CheckHeader(const std::string* authorization, Scope needed) const {
  if (tokens_ == nullptr || needed == Scope::kNone) return absl::OkStatus();
  if (authorization == nullptr) {
    return absl::UnauthenticatedError("missing `authorization: Bearer <token>` metadata");
  }
  absl::string_view value = *authorization;
  if (!absl::ConsumePrefix(&value, "Bearer ")) {
    return absl::UnauthenticatedError("authorization metadata is not `Bearer <token>`");
  }
  const Scope held = tokens_->Lookup(absl::StripAsciiWhitespace(value));
  if (held == Scope::kNone) return absl::UnauthenticatedError("unknown bearer token");
  if (held == Scope::kAdmin || held == needed) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat("a ", ScopeName(held),
                                                  " token cannot call this; it needs scope ",
                                                  ScopeName(needed)));
}

absl::Status Authorizer::Check(const grpc::ServerContextBase& context, Scope needed) const {
  if (tokens_ == nullptr || needed == Scope::kNone) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return CheckHeader(nullptr, needed);
  const std::string header(it->second.data(), it->second.size());
  return CheckHeader(&header, needed);
}

}  // namespace ftune
