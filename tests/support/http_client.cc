#include "tests/support/http_client.h"

#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/listen_address.h"

namespace ftune::testing {
namespace {

absl::StatusOr<std::unique_ptr<httplib::Client>> Connect(const std::string& address) {
  std::string host;
  int port = 0;
  if (absl::Status s = SplitHostPort(address, &host, &port); !s.ok()) return s;
  auto client = std::make_unique<httplib::Client>(host, port);
  client->set_connection_timeout(10, 0);
  client->set_read_timeout(60, 0);
  return client;
}

absl::StatusOr<HttpReply> Reply(const httplib::Result& result, const std::string& what) {
  if (!result) {
    return absl::UnavailableError(absl::StrCat(what, ": ", httplib::to_string(result.error())));
  }
  HttpReply reply{result->status, result->get_header_value("Content-Type"), result->body, {}};
  for (const auto& [name, value] : result->headers) reply.headers.emplace(name, value);
  return reply;
}

// Parses one frame ("field: value" lines; comments start with ':').
SseEvent ParseFrame(absl::string_view frame) {
  SseEvent event;
  for (absl::string_view line : absl::StrSplit(frame, '\n')) {
    if (line.empty() || line[0] == ':') continue;
    const size_t colon = line.find(':');
    absl::string_view name = line.substr(0, colon);
    absl::string_view value = colon == absl::string_view::npos ? "" : line.substr(colon + 1);
    if (absl::StartsWith(value, " ")) value.remove_prefix(1);
    if (name == "id") event.id = std::string(value);
    if (name == "event") event.event = std::string(value);
    if (name == "data") absl::StrAppend(&event.data, event.data.empty() ? "" : "\n", value);
  }
  return event;
}

}  // namespace

absl::StatusOr<HttpReply> HttpGet(const std::string& address, const std::string& path,
                                  const std::string& bearer_token) {
  std::map<std::string, std::string> headers;
  if (!bearer_token.empty()) headers.emplace("Authorization", "Bearer " + bearer_token);
  return HttpCall(address, "GET", path, headers);
}

absl::StatusOr<HttpReply> HttpCall(const std::string& address, const std::string& method,
                                   const std::string& path,
                                   const std::map<std::string, std::string>& headers,
                                   const std::string& body, const std::string& content_type) {
  auto client = Connect(address);
  if (!client.ok()) return client.status();
  httplib::Headers sent(headers.begin(), headers.end());
  const std::string what = absl::StrCat(method, " ", address, path);
  if (method == "GET") return Reply((*client)->Get(path.c_str(), sent), what);
  if (method == "POST") {
    return Reply((*client)->Post(path.c_str(), sent, body, content_type.c_str()), what);
  }
  if (method == "PUT") {
    return Reply((*client)->Put(path.c_str(), sent, body, content_type.c_str()), what);
  }
  if (method == "DELETE") return Reply((*client)->Delete(path.c_str(), sent), what);
  return absl::InvalidArgumentError(absl::StrCat("method ", method, " is not supported"));
}

absl::StatusOr<int> ReadEventStream(const std::string& address, const std::string& path,
                                    const std::map<std::string, std::string>& headers,
                                    const std::function<bool(const SseEvent&)>& on_event,
                                    std::string* error_body) {
  auto client = Connect(address);
  if (!client.ok()) return client.status();
  httplib::Headers sent(headers.begin(), headers.end());
  std::string pending;
  bool hung_up = false;
  int status = 0;
  httplib::Result result = (*client)->Get(
      path.c_str(), sent,
      [&](const httplib::Response& response) {
        status = response.status;
        return true;
      },
      [&](const char* data, size_t n) {
        if (status != 200) {
          if (error_body != nullptr) error_body->append(data, n);
          return true;
        }
        pending.append(data, n);
        for (size_t end = pending.find("\n\n"); end != std::string::npos;
             end = pending.find("\n\n")) {
          const std::string frame = pending.substr(0, end);
          pending.erase(0, end + 2);
          const SseEvent event = ParseFrame(frame);
          if (event.id.empty() && event.event.empty() && event.data.empty()) continue;
          if (!on_event(event)) {
            hung_up = true;
            return false;
          }
        }
        return true;
      });
  if (!result && !hung_up) {
    return absl::UnavailableError(
        absl::StrCat("GET ", address, path, ": ", httplib::to_string(result.error())));
  }
  return status;
}

}  // namespace ftune::testing
