// `ftworker inspect` as a user runs it: the real binary on a folder with good and bad files.
#include <filesystem>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/data/audio_files.h"
#include "tests/support/process.h"

namespace ftune::data {
namespace {

using ::testing::HasSubstr;
using ftune::testing::BinaryPath;
using ftune::testing::RunCommand;

class InspectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ftune::testing::MakeTempDir("inspect_test");
    for (int actor = 1; actor <= 5; ++actor) {
      for (int emotion : {1, 5}) {
        for (int statement = 1; statement <= 2; ++statement) {
          testing::WriteTone(absl::StrFormat("%s/Actor_%02d/03-01-%02d-01-%02d-01-%02d.wav", dir_,
                                             actor, emotion, statement, actor),
                             testing::ToneSpec{actor % 2 ? 16000 : 44100, 1, 0.2});
        }
      }
    }
    testing::WriteText(dir_ + "/Actor_02/03-01-05-01-01-02-02.wav", "RIFF garbage");
    testing::WriteText(dir_ + "/Actor_03/bad-name.wav", "x");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(InspectTest, JsonHasTheDocumentedKeys) {
  auto run = RunCommand({BinaryPath("ftworker"), "inspect", dir_, "--json"}, absl::Seconds(60));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 0) << run->out;
  nlohmann::json j = nlohmann::json::parse(run->out);
  EXPECT_EQ(j["total_files"], 22);
  EXPECT_EQ(j["usable_files"], 20);
  ASSERT_EQ(j["skipped"].size(), 2u);
  EXPECT_EQ(j["skipped"][0]["path"], "Actor_02/03-01-05-01-01-02-02.wav");
  EXPECT_THAT(j["skipped"][0]["reason"].get<std::string>(), HasSubstr("cannot decode"));
  EXPECT_EQ(j["skipped"][1]["path"], "Actor_03/bad-name.wav");
  EXPECT_EQ(j["classes"]["neutral"], 10);
  EXPECT_EQ(j["classes"]["angry"], 10);
  EXPECT_EQ(j["speakers"]["Actor_04"], 4);
  ASSERT_EQ(j["splits"]["eval"].size(), 1u);
  EXPECT_EQ(j["splits"]["train"].size(), 4u);
  EXPECT_EQ(j["layout"], "ravdess");
  EXPECT_EQ(j["split"], "speaker");
  EXPECT_EQ(j["sample_rates"]["44100"], 8);
  EXPECT_EQ(j["ok"], true);
}

TEST_F(InspectTest, TextNamesWhatIsWrongAndExitsNonZero) {
  auto run = RunCommand({BinaryPath("ftworker"), "inspect", dir_, "--labels", "angry,sad"},
                        absl::Seconds(60));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 1) << run->out;
  EXPECT_THAT(run->out, HasSubstr("class 'sad' has no usable audio"));
  EXPECT_THAT(run->out, HasSubstr("bad-name.wav: not a RAVDESS name"));
  EXPECT_THAT(run->out, HasSubstr("'neutral' is not in the job's labels"));
}

// A CREMA-D folder beside the RAVDESS one: inspect names the detected layout, and reads both
// as the corpora of one job with a label map.
TEST_F(InspectTest, NamesTheDetectedLayoutAndReadsSeveralCorpora) {
  const std::string crema = ftune::testing::MakeTempDir("inspect_crema");
  for (int actor = 1001; actor <= 1005; ++actor) {
    for (const char* emotion : {"ANG", "NEU"}) {
      testing::WriteTone(absl::StrFormat("%s/%d_IEO_%s_XX.wav", crema, actor, emotion),
                         testing::ToneSpec{16000, 1, 0.2});
    }
  }
  auto text = RunCommand({BinaryPath("ftworker"), "inspect", crema}, absl::Seconds(60));
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->exit_code, 0) << text->out;
  EXPECT_THAT(text->out, HasSubstr("layout crema-d, split speaker"));

  auto run = RunCommand(
      {BinaryPath("ftworker"), "inspect", dir_, crema, "--label-map", "anger=angry", "--json"},
      absl::Seconds(60));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 0) << run->out;
  nlohmann::json j = nlohmann::json::parse(run->out);
  EXPECT_EQ(j["layout"], "ravdess+crema-d");
  EXPECT_EQ(j["classes"]["angry"], 10 + 5);
  EXPECT_EQ(j["classes"]["neutral"], 10 + 5);
  EXPECT_EQ(j["speakers"]["crema-d/1003"], 2);
  ASSERT_EQ(j["corpora"].size(), 2u);
  EXPECT_EQ(j["corpora"][1]["tag"], "crema-d");
  EXPECT_EQ(j["corpora"][1]["layout"], "crema-d");

  auto mismatch = RunCommand({BinaryPath("ftworker"), "inspect", dir_, crema, "--layout", "ravdess",
                              "--layout", "tess", "--layout", "savee"},
                             absl::Seconds(60));
  ASSERT_TRUE(mismatch.ok()) << mismatch.status();
  EXPECT_EQ(mismatch->exit_code, 2);
}

TEST_F(InspectTest, MissingFolderExitsTwo) {
  auto run = RunCommand({BinaryPath("ftworker"), "inspect", dir_ + "/nope", "--json"},
                        absl::Seconds(60));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 2);
  nlohmann::json j = nlohmann::json::parse(run->out);
  EXPECT_EQ(j["ok"], false);
  EXPECT_THAT(j["error"].get<std::string>(), HasSubstr("does not exist"));
}

}  // namespace
}  // namespace ftune::data
