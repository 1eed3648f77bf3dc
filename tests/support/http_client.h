// Plain HTTP calls for tests of the daemons' HTTP servers (cpp-httplib's client), and a
// reader of Server-Sent Events streams.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace ftune::testing {

struct HttpReply {
  int status = 0;
  std::string content_type;
  std::string body;
  // Response headers (names as sent).
  std::multimap<std::string, std::string> headers;

  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// GET http://`address``path` (address = host:port), with `Authorization: Bearer` when
// `bearer_token` is set. An error only when no answer came.
absl::StatusOr<HttpReply> HttpGet(const std::string& address, const std::string& path,
                                  const std::string& bearer_token = "");

// Any method with `headers` and, unless empty, `body` of `content_type`.
absl::StatusOr<HttpReply> HttpCall(const std::string& address, const std::string& method,
                                   const std::string& path,
                                   const std::map<std::string, std::string>& headers = {},
                                   const std::string& body = "",
                                   const std::string& content_type = "application/json");

// One Server-Sent Events frame ("" for fields it did not have).
struct SseEvent {
  std::string id;
  std::string event;
  std::string data;
};

// GETs an event stream and hands every frame to `on_event` as it arrives, until it returns
// false (the client hangs up) or the server ends the body. The HTTP status; the body of an
// error answer goes to `error_body`.
absl::StatusOr<int> ReadEventStream(const std::string& address, const std::string& path,
                                    const std::map<std::string, std::string>& headers,
                                    const std::function<bool(const SseEvent&)>& on_event,
                                    std::string* error_body = nullptr);

}  // namespace ftune::testing
