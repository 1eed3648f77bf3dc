// DefaultRendezvousHost: an address other machines can reach, never loopback.
#include "worker/daemon/rendezvous_host.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace ftune::daemon {
namespace {

TEST(RendezvousHostTest, IsANonLoopbackIpv4AddressOrTheHostName) {
  const std::string host = DefaultRendezvousHost("fallback.example");
  ASSERT_FALSE(host.empty());
  if (host == "fallback.example") return;  // a box with no other interface up
  in_addr parsed{};
  EXPECT_EQ(inet_pton(AF_INET, host.c_str(), &parsed), 1) << host;
  EXPECT_FALSE(absl::StartsWith(host, "127.")) << host;
}

}  // namespace
}  // namespace ftune::daemon
