// ftserve as a real process: loads a checkpoint folder, answers health and Classify on a
// loopback port, the same through REST on its HTTP port, serves /metrics, drains and exits 0
// on SIGTERM.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <csignal>

#include "absl/strings/match.h"
#include "ftune/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/serve/serve_test_util.h"
#include "tests/support/health.h"
#include "tests/support/http_client.h"
#include "tests/support/process.h"
#include "tests/support/promtool.h"

namespace ftune::serve {
namespace {

TEST(FtserveProcessTest, ServesClassifiesAndStops) {
  const std::string dir = testing::MakeTempDir("ftserve-proc") + "/best";
  std::filesystem::create_directories(dir);
  SaveTinyModel(dir, 3);
  auto child = testing::ChildProcess::Start({testing::BinaryPath("ftserve"), "--listen",
                                             "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                                             "--model", dir, "--precision", "fp32"});
  ASSERT_TRUE(child.ok()) << child.status();
  auto address = child->WaitForListening(absl::Seconds(120));
  ASSERT_TRUE(address.ok()) << address.status();
  auto http_address = child->WaitForHttpListening(absl::Seconds(10));
  ASSERT_TRUE(http_address.ok()) << http_address.status();
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

  // curl --data-binary @clip.wav http://HOST:PORT/v1/models/ID:classify, the same answer.
  const std::string model_id = response.model_id();
  httplib::Client http(http_address->substr(0, http_address->rfind(':')),
                       std::stoi(http_address->substr(http_address->rfind(':') + 1)));
  http.set_read_timeout(60, 0);
  auto classified = http.Post(("/v1/models/" + model_id + ":classify").c_str(),
                              request.audio_file(), "application/x-www-form-urlencoded");
  ASSERT_TRUE(classified);
  ASSERT_EQ(classified->status, 200) << classified->body;
  const nlohmann::json answer = nlohmann::json::parse(classified->body);
  EXPECT_EQ(answer["model"], model_id);
  EXPECT_EQ(answer["label"], response.label());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(answer["probabilities"][kLabels[i]].get<float>(), response.scores(i).probability());
  }
  auto ready = testing::HttpGet(*http_address, "/v2/health/ready");
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(ready->status, 200);
  auto metrics = testing::HttpGet(*http_address, "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_TRUE(absl::StrContains(metrics->body, "protocol=\"grpc\",code=\"OK\"} 1\n"));
  EXPECT_TRUE(absl::StrContains(metrics->body, "protocol=\"rest\",code=\"OK\"} 1\n"));
  absl::Status lint = testing::PromtoolCheckMetrics(metrics->body);
  EXPECT_TRUE(lint.ok()) << lint << "\n" << metrics->body;

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
