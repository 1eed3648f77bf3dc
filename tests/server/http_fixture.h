// An in-process controller with its HTTP server on loopback, tokens, and a worker played by
// the test over gRPC (fake_worker.h): the base of the REST API and dashboard suites.
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "server/controller.h"
#include "tests/server/fake_worker.h"
#include "tests/server/test_util.h"
#include "tests/support/http_client.h"
#include "tests/support/process.h"

namespace ftune::server::testing {

inline constexpr char kClientToken[] = "client-token-0123";
inline constexpr char kWorkerToken[] = "worker-token-4567";

class ControllerHttpTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = ftune::testing::MakeTempDir("controller_http"); }

  // `adjust` changes the config before the start (stream bound, watcher queue, ...).
  void StartController(bool tokens = true,
                       const std::function<void(ControllerConfig*)>& adjust = nullptr) {
    ControllerConfig config;
    config.listen = "127.0.0.1:0";
    config.http_listen = "127.0.0.1:0";
    config.data_dir = dir_ + "/data";
    if (tokens) {
      config.tokens_file = dir_ + "/tokens";
      std::ofstream(config.tokens_file)
          << "client " << kClientToken << "\nworker " << kWorkerToken << "\n";
      std::ofstream(dir_ + "/worker.token") << kWorkerToken << "\n";
    }
    if (adjust) adjust(&config);
    auto controller = Controller::Start(config);
    ASSERT_TRUE(controller.ok()) << controller.status();
    controller_ = std::move(*controller);
    http_ = controller_->http_server()->address();
    ChannelOptions channel;
    channel.address = controller_->address();
    if (tokens) channel.token_file = dir_ + "/worker.token";
    auto made = MakeChannel(channel);
    ASSERT_TRUE(made.ok()) << made.status();
    worker_ = std::make_unique<FakeWorker>(*made, "w1");
    ASSERT_TRUE(worker_->Register().ok());
  }

  static std::map<std::string, std::string> Auth() {
    return {{"Authorization", absl::StrCat("Bearer ", kClientToken)}};
  }

  // `method` `path` with the client token unless `headers` are given.
  ftune::testing::HttpReply Call(const std::string& method, const std::string& path,
                                 const std::string& body = "",
                                 std::map<std::string, std::string> headers = {},
                                 const std::string& content_type = "application/json") {
    if (headers.empty()) headers = Auth();
    auto reply = ftune::testing::HttpCall(http_, method, path, headers, body, content_type);
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.ok() ? *reply : ftune::testing::HttpReply{};
  }

  // Submits a valid spec over REST; the new job's id.
  std::string Submit(const std::string& name) {
    std::string spec;
    (void)google::protobuf::util::MessageToJsonString(ValidSpec(name), &spec);
    ftune::testing::HttpReply reply = Call("POST", "/api/v1/jobs", spec);
    EXPECT_EQ(reply.status, 201) << reply.body;
    return nlohmann::json::parse(reply.body, nullptr, false)
        .value("/job/id"_json_pointer, std::string());
  }

  // A running job with events 1..`progress`+3: queued, assigned, running, then progress of
  // steps 1..`progress` out of `total`.
  std::string RunningJob(int progress, int total = 100) {
    const std::string id = Submit("run");
    EXPECT_EQ(worker_->Acquire().value_or(""), id);
    EXPECT_TRUE(worker_->Report(FakeWorker::Progress(1, progress, total)).ok());
    return id;
  }

  std::string dir_;
  std::unique_ptr<Controller> controller_;
  std::string http_;
  std::unique_ptr<FakeWorker> worker_;
};

}  // namespace ftune::server::testing
