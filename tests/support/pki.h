// Test certificates made with the openssl CLI: a CA, a server certificate for 127.0.0.1 and
// localhost, and a client certificate, both signed by the CA.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace ftune::testing {

// Where the openssl CLI is expected (Debian's `openssl` package, installed by scripts/setup).
inline constexpr char kOpensslPath[] = "/usr/bin/openssl";

// Writes ca.pem/ca.key, server.pem/server.key and client.pem/client.key into `dir`.
absl::Status MakeTestPki(const std::string& dir);

}  // namespace ftune::testing
