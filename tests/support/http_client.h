// A plain HTTP GET for tests of the daemons' HTTP servers (cpp-httplib's client).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace ftune::testing {

struct HttpReply {
  int status = 0;
  std::string content_type;
  std::string body;
};

// GET http://`address``path` (address = host:port), with `Authorization: Bearer` when
// `bearer_token` is set. An error only when no answer came.
absl::StatusOr<HttpReply> HttpGet(const std::string& address, const std::string& path,
                                  const std::string& bearer_token = "");

}  // namespace ftune::testing
