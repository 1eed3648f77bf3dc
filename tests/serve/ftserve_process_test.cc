// ftserve as a real process: loads a checkpoint folder, answers health and Classify on a
// loopback port, reloads on SIGHUP, drains and exits 0 on SIGTERM.
#include <csignal>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "ftune/v1/inference.grpc.pb.h"
#include "tests/serve/serve_test_util.h"
#include "tests/support/health.h"
#include "tests/support/process.h"

namespace ftune::serve {
namespace {

TEST(FtserveProcessTest, ServesClassifiesAndStops) {
  const std::string dir = testing::MakeTempDir("ftserve-proc") + "/best";
  std::filesystem::create_directories(dir);
  SaveTinyModel(dir, 3);
  auto child = testing::ChildProcess::Start({testing::BinaryPath("ftserve"), "--listen",
                                             "127.0.0.1:0", "--model", dir, "--precision",
                                             "fp32"});
  ASSERT_TRUE(child.ok()) << child.status();
  auto address = child->WaitForListening(absl::Seconds(120));
  ASSERT_TRUE(address.ok()) << address.status();
  auto health = testing::CheckHealth(*address, absl::Seconds(10));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, "SERVING");

  auto stub = ftune::v1::InferenceService::NewStub(
      grpc::CreateChannel(*address, grpc::InsecureChannelCredentials()));
  const std::vector<float> clip = MakeClip(1.0, 1);
  ftune::v1::ClassifyRequest request;
  request.set_audio_file(EncodeWav(clip, 16000));
  ftune::v1::ClassifyResponse response;
  grpc::ClientContext context;
  grpc::Status status = stub->Classify(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  // The folder is ftune's best/ layout, so its id names the run folder too.
  EXPECT_EQ(response.model_id().substr(response.model_id().size() - 5), "/best");
  const std::vector<float> expected = ReferenceProbabilities(dir, clip);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(response.scores(i).probability(), expected[i], 2e-3);

  child->Signal(SIGTERM);
  auto code = child->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

TEST(FtserveProcessTest, RefusesToStartOnABrokenFolder) {
  const std::string dir = testing::MakeTempDir("ftserve-broken");
  auto result = testing::RunCommand(
      {testing::BinaryPath("ftserve"), "--listen", "127.0.0.1:0", "--model", dir},
      absl::Seconds(60));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_NE(result->exit_code, 0);
}

}  // namespace
}  // namespace ftune::serve
