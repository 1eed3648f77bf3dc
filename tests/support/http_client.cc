#include "tests/support/http_client.h"

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "common/listen_address.h"

namespace ftune::testing {

absl::StatusOr<HttpReply> HttpGet(const std::string& address, const std::string& path,
                                  const std::string& bearer_token) {
  std::string host;
  int port = 0;
  if (absl::Status s = SplitHostPort(address, &host, &port); !s.ok()) return s;
  httplib::Client client(host, port);
  client.set_connection_timeout(10, 0);
  client.set_read_timeout(60, 0);
  httplib::Headers headers;
  if (!bearer_token.empty()) headers.emplace("Authorization", "Bearer " + bearer_token);
  httplib::Result result = client.Get(path.c_str(), headers);
  if (!result) {
    return absl::UnavailableError(
        absl::StrCat("GET ", address, path, ": ", httplib::to_string(result.error())));
  }
  return HttpReply{result->status, result->get_header_value("Content-Type"), result->body};
}

}  // namespace ftune::testing
