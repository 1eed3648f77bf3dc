#include "worker/daemon/allowed_roots.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "tests/support/process.h"

namespace ftune::daemon {
namespace {

namespace fs = std::filesystem;

class AllowedRootsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = fs::path(testing::MakeTempDir("allowed-roots"));
    root_ = base_ / "data";
    outside_ = base_ / "secret";
    fs::create_directories(root_ / "ravdess");
    fs::create_directories(outside_);
    std::ofstream(outside_ / "clip.wav") << "x";
  }

  AllowedRoots Roots() {
    auto roots = AllowedRoots::Create({root_.string()});
    EXPECT_TRUE(roots.ok()) << roots.status();
    return *roots;
  }

  fs::path base_, root_, outside_;
};

TEST_F(AllowedRootsTest, AcceptsPathsInsideTheRoot) {
  AllowedRoots roots = Roots();
  EXPECT_TRUE(roots.Check("dataset.path", (root_ / "ravdess").string()).ok());
  EXPECT_TRUE(roots.Check("dataset.path", root_.string()).ok());
  // Output folders usually do not exist yet.
  EXPECT_TRUE(roots.Check("output_dir", (root_ / "runs/new/run1").string()).ok());
}

TEST_F(AllowedRootsTest, RejectsPathsOutsideNamingThem) {
  AllowedRoots roots = Roots();
  absl::Status s = roots.Check("dataset.path", outside_.string());
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(s.message(), "dataset.path")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), outside_.string())) << s;
}

TEST_F(AllowedRootsTest, RejectsDotDotEscapes) {
  AllowedRoots roots = Roots();
  EXPECT_FALSE(roots.Check("dataset.path", (root_ / "../secret").string()).ok());
  EXPECT_FALSE(roots.Check("output_dir", (root_ / "ravdess/../../secret/out").string()).ok());
  // Through a folder that does not exist yet, `..` is still folded.
  EXPECT_FALSE(roots.Check("output_dir", (root_ / "nope/../../secret").string()).ok());
  EXPECT_TRUE(roots.Check("output_dir", (root_ / "nope/../ravdess").string()).ok());
}

TEST_F(AllowedRootsTest, RejectsSymlinkEscapes) {
  fs::create_directory_symlink(outside_, root_ / "link");
  AllowedRoots roots = Roots();
  EXPECT_FALSE(roots.Check("dataset.path", (root_ / "link").string()).ok());
  EXPECT_FALSE(roots.Check("output_dir", (root_ / "link/run").string()).ok());
  EXPECT_FALSE(roots.Check("model", (root_ / "link/clip.wav").string()).ok());
}

TEST_F(AllowedRootsTest, AcceptsSymlinksThatStayInside) {
  fs::create_directory_symlink(root_ / "ravdess", base_ / "shortcut");
  AllowedRoots roots = Roots();
  EXPECT_TRUE(roots.Check("dataset.path", (base_ / "shortcut").string()).ok());
}

TEST_F(AllowedRootsTest, APrefixOfTheNameIsNotInside) {
  fs::create_directories(base_ / "data-evil");
  AllowedRoots roots = Roots();
  EXPECT_FALSE(roots.Check("dataset.path", (base_ / "data-evil").string()).ok());
}

TEST_F(AllowedRootsTest, RootsAreResolvedToo) {
  fs::create_directory_symlink(root_, base_ / "root-link");
  auto roots = AllowedRoots::Create({(base_ / "root-link").string()});
  ASSERT_TRUE(roots.ok()) << roots.status();
  EXPECT_TRUE(roots->Check("dataset.path", (root_ / "ravdess").string()).ok());
  EXPECT_FALSE(roots->Check("dataset.path", outside_.string()).ok());
}

TEST_F(AllowedRootsTest, MissingRootIsAnError) {
  auto roots = AllowedRoots::Create({(base_ / "absent").string()});
  EXPECT_EQ(roots.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(roots.status().message(), "absent"));
}

TEST_F(AllowedRootsTest, NoRootsAllowsAnything) {
  auto roots = AllowedRoots::Create({});
  ASSERT_TRUE(roots.ok());
  EXPECT_TRUE(roots->Check("dataset.path", outside_.string()).ok());
}

TEST_F(AllowedRootsTest, CheckJobCoversDatasetOutputAndModelFolder) {
  AllowedRoots roots = Roots();
  ftune::v1::JobSpec spec;
  spec.mutable_dataset()->set_path((root_ / "ravdess").string());
  spec.set_output_dir((root_ / "runs/1").string());
  spec.set_model("tiny");  // a preset, not a path
  EXPECT_TRUE(roots.CheckJob(spec).ok());

  spec.set_model(outside_.string());
  absl::Status s = roots.CheckJob(spec);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StartsWith(s.message(), "model")) << s;

  spec.set_model("tiny");
  spec.set_output_dir((outside_ / "out").string());
  s = roots.CheckJob(spec);
  EXPECT_TRUE(absl::StartsWith(s.message(), "output_dir")) << s;
}

TEST_F(AllowedRootsTest, CheckJobCoversEveryCorpusOfAMultiCorpusJob) {
  AllowedRoots roots = Roots();
  fs::create_directories(root_ / "crema-d");
  ftune::v1::JobSpec spec;
  spec.mutable_dataset()->set_path((root_ / "ravdess").string());
  spec.add_extra_datasets()->set_path((root_ / "crema-d").string());
  spec.set_output_dir((root_ / "runs/1").string());
  spec.set_model("tiny");
  EXPECT_TRUE(roots.CheckJob(spec).ok());

  spec.add_extra_datasets()->set_path(outside_.string());
  absl::Status s = roots.CheckJob(spec);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StartsWith(s.message(), "extra_datasets[1].path")) << s;
}

}  // namespace
}  // namespace ftune::daemon
