// absl::Status <-> grpc::Status. The canonical codes are the same numbers on both sides, so
// the mapping is 1:1 and keeps the message.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace ftune {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace ftune
