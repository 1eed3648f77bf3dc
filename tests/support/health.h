// grpc.health.v1 client for tests.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ftune::testing {

// Returns the overall serving status name ("SERVING", "NOT_SERVING", ...) of the server at
// `address`, waiting up to `timeout` for the connection.
absl::StatusOr<std::string> CheckHealth(const std::string& address, absl::Duration timeout);

}  // namespace ftune::testing
