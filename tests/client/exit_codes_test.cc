// The ftctl binary's exit codes: usage errors, an unreachable controller.
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "client/cli.h"
#include "tests/support/process.h"

namespace ftune::ctl {
namespace {

using testing::BinaryPath;
using testing::RunCommand;

TEST(FtctlExitCodesTest, UnreachableControllerIsThree) {
  auto result =
      RunCommand({BinaryPath("ftctl"), "list", "--controller", "127.0.0.1:1", "--timeout", "5"},
                 absl::Seconds(60));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, kExitUnavailable);
}

TEST(FtctlExitCodesTest, GlobalFlagsWorkBeforeTheSubcommandAndFromTheEnvironment) {
  auto result =
      RunCommand({BinaryPath("ftctl"), "--controller", "127.0.0.1:1", "--timeout", "5", "workers"},
                 absl::Seconds(60));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, kExitUnavailable);
  result = RunCommand({BinaryPath("ftctl"), "get", "j1", "--timeout", "5"}, absl::Seconds(60),
                      {{"FTCTL_CONTROLLER", "127.0.0.1:1"}});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, kExitUnavailable);
}

TEST(FtctlExitCodesTest, UsageErrorsAreTwo) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {},
           {"get"},
           {"nonsense"},
           {"submit", "--model", "tiny"},
           {"submit", "--dataset", "/d", "--output-dir", "/o", "--epochs", "x"},
           {"submit", "--dataset", "/d", "--output-dir", "/o", "--layout", "bogus"},
           {"list", "--state", "done"},
           {"list", "--token-file", "/no/such/token", "--controller", "127.0.0.1:1"},
       }) {
    std::vector<std::string> argv = {BinaryPath("ftctl")};
    argv.insert(argv.end(), args.begin(), args.end());
    auto result = RunCommand(argv, absl::Seconds(60));
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->exit_code, kExitUsage) << absl::StrJoin(args, " ");
  }
}

TEST(FtctlExitCodesTest, HelpOnEveryCommand) {
  for (const char* command : {"submit", "get", "list", "watch", "cancel", "workers"}) {
    auto result = RunCommand({BinaryPath("ftctl"), command, "--help"}, absl::Seconds(60));
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->exit_code, 0) << command;
    EXPECT_TRUE(absl::StrContains(result->out, "--json")) << command;
  }
}

}  // namespace
}  // namespace ftune::ctl
