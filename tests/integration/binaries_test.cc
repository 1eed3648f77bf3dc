// Each binary answers --help and --version; each server, started as a real process on an
// ephemeral loopback port, reports SERVING, serves /metrics that promtool accepts when given
// --http-listen, and exits 0 on SIGTERM and SIGINT. (ftserve needs a model folder:
// tests/serve/ftserve_process_test.cc covers its lifecycle.)
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "tests/support/health.h"
#include "tests/support/http_client.h"
#include "tests/support/process.h"
#include "tests/support/promtool.h"

namespace ftune::testing {
namespace {

class BinaryFlagsTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BinaryFlagsTest, HelpExitsZero) {
  auto result = RunCommand({BinaryPath(GetParam()), "--help"}, absl::Seconds(30));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 0);
  EXPECT_TRUE(absl::StrContains(result->out, "--help")) << result->out;
}

TEST_P(BinaryFlagsTest, VersionNamesTheBinary) {
  auto result = RunCommand({BinaryPath(GetParam()), "--version"}, absl::Seconds(30));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 0);
  EXPECT_TRUE(absl::StartsWith(result->out, GetParam() + " ")) << result->out;
}

INSTANTIATE_TEST_SUITE_P(AllBinaries, BinaryFlagsTest,
                         ::testing::Values("ftcontroller", "ftworker", "ftserve", "ftctl"));

struct ServerCase {
  std::string name;
  std::vector<std::string> args;  // after the binary path; {tmp} becomes a temp dir
  int signo;
};

void PrintTo(const ServerCase& c, std::ostream* os) { *os << c.name; }

class ServerLifecycleTest : public ::testing::TestWithParam<ServerCase> {};

TEST_P(ServerLifecycleTest, ServesHealthAndStopsOnSignal) {
  const ServerCase& c = GetParam();
  const std::string tmp = MakeTempDir(c.name);
  std::vector<std::string> argv = {BinaryPath(c.name)};
  for (const std::string& arg : c.args) argv.push_back(arg == "{tmp}" ? tmp : arg);
  auto child = ChildProcess::Start(argv);
  ASSERT_TRUE(child.ok()) << child.status();
  auto address = child->WaitForListening(absl::Seconds(60));
  ASSERT_TRUE(address.ok()) << address.status();

  auto health = CheckHealth(*address, absl::Seconds(10));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, "SERVING");
  if (std::find(argv.begin(), argv.end(), "--http-listen") != argv.end()) {
    auto http = child->WaitForHttpListening(absl::Seconds(10));
    ASSERT_TRUE(http.ok()) << http.status();
    auto metrics = HttpGet(*http, "/metrics");
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    EXPECT_EQ(metrics->status, 200);
    absl::Status lint = PromtoolCheckMetrics(metrics->body);
    EXPECT_TRUE(lint.ok()) << lint << "\n" << metrics->body;
  }

  child->Signal(c.signo);
  auto code = child->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Servers, ServerLifecycleTest,
    ::testing::Values(
        ServerCase{
            "ftcontroller",
            {"--listen", "127.0.0.1:0", "--data-dir", "{tmp}", "--http-listen", "127.0.0.1:0"},
            SIGTERM},
        ServerCase{"ftcontroller", {"--listen", "127.0.0.1:0", "--data-dir", "{tmp}"}, SIGINT},
        ServerCase{"ftworker",
                   {"run", "--controller", "127.0.0.1:1", "--listen", "127.0.0.1:0",
                    "--http-listen", "127.0.0.1:0"},
                   SIGTERM}),
    [](const ::testing::TestParamInfo<ServerCase>& info) {
      return info.param.name + (info.param.signo == SIGINT ? "_sigint" : "_sigterm");
    });

}  // namespace
}  // namespace ftune::testing
