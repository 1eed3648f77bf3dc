// "HOST:PORT" as the servers' --listen flags take it.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace ftune {

// Splits "host:port" (host may be [v6]; the brackets stay) into host and port 0..65535.
absl::Status SplitHostPort(const std::string& listen, std::string* host, int* port);

}  // namespace ftune
