// `ftctl classify` against a real ftserve process serving a tiny random classifier: the table,
// one JSON object per file, and an undecodable file reported without hiding the others.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "tests/serve/serve_test_util.h"
#include "tests/support/process.h"

namespace ftune::serve {
namespace {

class ClassifyE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::MakeTempDir("classify-e2e"));
    std::filesystem::create_directories(*dir_ + "/model");
    SaveTinyModel(*dir_ + "/model", 5);
    for (int i = 0; i < 2; ++i) {
      std::ofstream(*dir_ + "/clip" + std::to_string(i) + ".wav", std::ios::binary)
          << EncodeWav(MakeClip(0.8, i), 16000);
    }
    std::ofstream(*dir_ + "/noise.wav", std::ios::binary) << "this is not audio at all";
    auto child = testing::ChildProcess::Start(
        {testing::BinaryPath("ftserve"), "--listen", "127.0.0.1:0", "--model", *dir_ + "/model"});
    ASSERT_TRUE(child.ok()) << child.status();
    server_ = new testing::ChildProcess(*std::move(child));
    auto address = server_->WaitForListening(absl::Seconds(120));
    ASSERT_TRUE(address.ok()) << address.status();
    address_ = new std::string(*address);
  }

  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      server_->Signal(SIGTERM);
      auto code = server_->Wait(absl::Seconds(30));
      EXPECT_TRUE(code.ok() && *code == 0);
    }
    delete server_;
    delete address_;
    delete dir_;
  }

  void SetUp() override { ASSERT_NE(address_, nullptr) << "ftserve did not start"; }

  static absl::StatusOr<testing::RunResult> Ctl(std::vector<std::string> args,
                                                std::map<std::string, std::string> env = {}) {
    args.insert(args.begin(), testing::BinaryPath("ftctl"));
    return testing::RunCommand(args, absl::Seconds(60), env);
  }

  static std::string Clip(int i) { return *dir_ + "/clip" + std::to_string(i) + ".wav"; }

  static std::string* dir_;
  static std::string* address_;
  static testing::ChildProcess* server_;
};

std::string* ClassifyE2eTest::dir_ = nullptr;
std::string* ClassifyE2eTest::address_ = nullptr;
testing::ChildProcess* ClassifyE2eTest::server_ = nullptr;

bool IsLabel(const std::string& label) {
  return std::find(kLabels.begin(), kLabels.end(), label) != kLabels.end();
}

TEST_F(ClassifyE2eTest, TableHasOneRowPerFile) {
  auto run = Ctl({"classify", Clip(0), Clip(1), "--server", *address_, "--top-k", "2"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 0) << run->out;
  std::vector<std::string> lines = absl::StrSplit(run->out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << run->out;
  EXPECT_TRUE(absl::StartsWith(lines[0], "FILE")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], "LABEL"));
  for (int i = 0; i < 2; ++i) {
    std::vector<std::string> cells = absl::StrSplit(lines[i + 1], ' ', absl::SkipWhitespace());
    // FILE LABEL PROB then "top1 p1, top2 p2".
    ASSERT_EQ(cells.size(), 7u) << lines[i + 1];
    EXPECT_EQ(cells[0], Clip(i));
    EXPECT_TRUE(IsLabel(cells[1])) << lines[i + 1];
    const double p = std::stod(cells[2]);
    EXPECT_GT(p, 1.0 / 3 - 1e-3);
    EXPECT_LE(p, 1.0);
    EXPECT_EQ(cells[3], cells[1]) << "the most probable label leads the top list";
    EXPECT_TRUE(IsLabel(cells[5])) << lines[i + 1];
    EXPECT_NE(cells[5], cells[1]);
  }
}

TEST_F(ClassifyE2eTest, JsonIsOneObjectPerFileAndTheServerComesFromTheEnvironment) {
  auto run = Ctl({"classify", Clip(0), Clip(1), "--json"}, {{"FTCTL_SERVER", *address_}});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 0) << run->out;
  std::vector<std::string> lines = absl::StrSplit(run->out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << run->out;
  for (int i = 0; i < 2; ++i) {
    const nlohmann::json j = nlohmann::json::parse(lines[i]);
    EXPECT_EQ(j.at("file"), Clip(i));
    const std::string label = j.at("label");
    EXPECT_TRUE(IsLabel(label)) << lines[i];
    const auto& probabilities = j.at("probabilities");
    ASSERT_EQ(probabilities.size(), kLabels.size()) << lines[i];
    double sum = 0, best = 0;
    for (const std::string& l : kLabels) {
      const double p = probabilities.at(l);
      sum += p;
      best = std::max(best, p);
    }
    EXPECT_NEAR(sum, 1.0, 1e-4);
    EXPECT_DOUBLE_EQ(probabilities.at(label).get<double>(), best);
    EXPECT_DOUBLE_EQ(j.at("probability").get<double>(), best);
    EXPECT_EQ(j.at("top").size(), 3u);
    EXPECT_FALSE(j.at("model_id").get<std::string>().empty());
  }
}

TEST_F(ClassifyE2eTest, AnUndecodableFileIsAnErrorAndTheOthersStillPrint) {
  auto run = Ctl({"classify", *dir_ + "/noise.wav", Clip(1), "--server", *address_, "--json"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 2) << "INVALID_ARGUMENT from ftserve is a usage error";
  std::vector<std::string> lines = absl::StrSplit(run->out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 1u) << run->out;
  EXPECT_EQ(nlohmann::json::parse(lines[0]).at("file"), Clip(1));

  auto missing = Ctl({"classify", *dir_ + "/absent.wav", "--server", *address_});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->exit_code, 4);
}

TEST_F(ClassifyE2eTest, AnUnreachableServerExitsWithTheUnavailableCode) {
  auto run = Ctl({"classify", Clip(0), "--server", "127.0.0.1:1", "--timeout", "5"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 3);
  EXPECT_EQ(run->out, "");
}

}  // namespace
}  // namespace ftune::serve
