// `ftctl report` end to end: a real ftcontroller and ftworker run a tiny job to success, then
// the report fetched from the controller holds its curves, confusion matrix and dataset.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "tests/serve/serve_test_util.h"
#include "tests/support/process.h"

namespace ftune::serve {
namespace {

// Occurrences of `needle` in `haystack`.
int Count(const std::string& haystack, const std::string& needle) {
  const std::vector<absl::string_view> parts = absl::StrSplit(haystack, needle);
  return static_cast<int>(parts.size()) - 1;
}

TEST(ReportE2eTest, ReportOfAFinishedJobFromARealController) {
  const std::string tmp = testing::MakeTempDir("report-e2e");
  // Two pitch classes, six short clips each.
  for (const auto& [label, first] : {std::pair<const char*, int>{"low", 0}, {"high", 10}}) {
    std::filesystem::create_directories(tmp + "/data/" + label);
    for (int i = 0; i < 6; ++i) {
      std::ofstream(absl::StrCat(tmp, "/data/", label, "/", i, ".wav"), std::ios::binary)
          << EncodeWav(MakeClip(0.5, first + i), 16000);
    }
  }
  auto controller = testing::ChildProcess::Start({testing::BinaryPath("ftcontroller"), "--listen",
                                                  "127.0.0.1:0", "--data-dir", tmp + "/ctrl"});
  ASSERT_TRUE(controller.ok()) << controller.status();
  auto address = controller->WaitForListening(absl::Seconds(60));
  ASSERT_TRUE(address.ok()) << address.status();
  auto worker = testing::ChildProcess::Start(
      {testing::BinaryPath("ftworker"), "run", "--controller", *address, "--devices", "cpu",
       "--threads", "1", "--allowed-root", tmp, "--listen", "127.0.0.1:0"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  ASSERT_TRUE(worker->WaitForListening(absl::Seconds(60)).ok());

  auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {testing::BinaryPath("ftctl"), "--controller", *address});
    auto result = testing::RunCommand(args, absl::Minutes(5));
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : testing::RunResult{};
  };
  testing::RunResult submitted = ctl({"submit",
                                      "--dataset",
                                      tmp + "/data",
                                      "--layout",
                                      "folders",
                                      "--model",
                                      "tiny",
                                      "--epochs",
                                      "2",
                                      "--batch-size",
                                      "4",
                                      "--threads",
                                      "1",
                                      "--log-every-steps",
                                      "1",
                                      "--output-dir",
                                      tmp + "/runs/r",
                                      "--name",
                                      "report <e2e>",
                                      "--watch"});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.out;
  const std::string job = submitted.out.substr(0, submitted.out.find('\n'));
  ASSERT_FALSE(job.empty());

  const std::string page = tmp + "/report.html";
  testing::RunResult report = ctl({"report", job, "-o", page, "--json"});
  ASSERT_EQ(report.exit_code, 0) << report.out;
  const nlohmann::json j = nlohmann::json::parse(report.out);
  EXPECT_EQ(j.at("job_id"), job);
  EXPECT_EQ(j.at("report"), page);
  EXPECT_GT(j.at("events").get<int64_t>(), 3);

  std::stringstream html;
  html << std::ifstream(page).rdbuf();
  const std::string text = html.str();
  EXPECT_TRUE(absl::StrContains(text, "report &lt;e2e&gt;"));
  EXPECT_TRUE(absl::StrContains(text, "SUCCEEDED"));
  EXPECT_EQ(Count(text, "<svg"), 4) << "loss, lr, evaluation, confusion";
  EXPECT_GE(Count(text, "<polyline"), 4);
  EXPECT_TRUE(absl::StrContains(text, "true low, predicted")) << "confusion matrix labels";
  EXPECT_TRUE(absl::StrContains(text, "12 usable of 12")) << "dataset summary";
  EXPECT_FALSE(absl::StrContains(text, "no data yet"));

  // An unknown job is the not-found exit code, and nothing is written.
  testing::RunResult missing = ctl({"report", "no-such-job", "-o", tmp + "/missing.html"});
  EXPECT_EQ(missing.exit_code, 4);
  EXPECT_FALSE(std::filesystem::exists(tmp + "/missing.html"));

  worker->Signal(SIGTERM);
  EXPECT_TRUE(worker->Wait(absl::Seconds(60)).ok());
  controller->Signal(SIGTERM);
  EXPECT_TRUE(controller->Wait(absl::Seconds(60)).ok());
}

}  // namespace
}  // namespace ftune::serve
