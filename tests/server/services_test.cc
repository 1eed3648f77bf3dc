// The controller's gRPC services on a loopback port, in process: bearer-token scopes, TLS with
// a CA made at test time, the AcquireJob long poll, WatchJob replay + live, 100 watchers.
#include <gtest/gtest.h>
#include <httplib.h>

#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/credentials.h"
#include "server/controller.h"
#include "tests/server/grpc_client.h"
#include "tests/server/test_util.h"
#include "tests/support/health.h"
#include "tests/support/pki.h"
#include "tests/support/process.h"

namespace ftune::server {
namespace {

using ftune::v1::JobService;
using ftune::v1::WorkerService;
using testing::Context;
using testing::ValidSpec;

constexpr char kClientToken[] = "client-token-0123";
constexpr char kWorkerToken[] = "worker-token-4567";
constexpr char kAdminToken[] = "admin-token-89ab";

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

class ServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ftune::testing::MakeTempDir("services");
    WriteFile(dir_ + "/tokens", absl::StrCat("# test tokens\nclient ", kClientToken,
                                             "\nworker ", kWorkerToken, "\nadmin ", kAdminToken,
                                             "\n"));
    for (const auto& [name, token] : std::vector<std::pair<std::string, std::string>>{
             {"client", kClientToken}, {"worker", kWorkerToken}, {"admin", kAdminToken},
             {"bogus", "not-a-known-token"}}) {
      WriteFile(dir_ + "/" + name + ".token", token + "\n");
    }
  }

  void StartController(ControllerConfig config = {}) {
    config.listen = "127.0.0.1:0";
    config.data_dir = dir_ + "/data";
    if (config.tokens_file.empty()) config.tokens_file = dir_ + "/tokens";
    config.manager.max_acquire_wait = absl::Seconds(20);
    auto controller = Controller::Start(config);
    ASSERT_TRUE(controller.ok()) << controller.status();
    controller_ = std::move(*controller);
  }

  std::shared_ptr<grpc::Channel> Channel(const std::string& token_name) {
    ChannelOptions options;
    options.address = controller_->address();
    if (!token_name.empty()) options.token_file = dir_ + "/" + token_name + ".token";
    auto channel = MakeChannel(options);
    EXPECT_TRUE(channel.ok()) << channel.status();
    return *channel;
  }

  grpc::Status Submit(const std::string& token_name, ftune::v1::SubmitJobResponse* response) {
    auto stub = JobService::NewStub(Channel(token_name));
    ftune::v1::SubmitJobRequest request;
    *request.mutable_spec() = ValidSpec();
    return stub->SubmitJob(Context().get(), request, response);
  }

  grpc::Status Register(WorkerService::Stub* stub, const std::string& worker_id) {
    ftune::v1::RegisterWorkerRequest request;
    request.set_worker_id(worker_id);
    request.add_devices()->set_name("cpu");
    ftune::v1::RegisterWorkerResponse response;
    return stub->RegisterWorker(Context().get(), request, &response);
  }

  std::string dir_;
  std::unique_ptr<Controller> controller_;
};

TEST_F(ServicesTest, CallsWithoutTokenAreUnauthenticated) {
  StartController();
  ftune::v1::SubmitJobResponse response;
  grpc::Status status = Submit("", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  status = Submit("bogus", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  auto worker = WorkerService::NewStub(Channel(""));
  EXPECT_EQ(Register(worker.get(), "w1").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // Health needs no token.
  auto health = ftune::testing::CheckHealth(controller_->address(), absl::Seconds(10));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, "SERVING");
}

TEST_F(ServicesTest, WrongScopeIsPermissionDenied) {
  StartController();
  ftune::v1::SubmitJobResponse response;
  EXPECT_EQ(Submit("worker", &response).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  auto as_client = WorkerService::NewStub(Channel("client"));
  EXPECT_EQ(Register(as_client.get(), "w1").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // Watching is a client call: a worker token is refused.
  auto as_worker = JobService::NewStub(Channel("worker"));
  auto watched = testing::WatchAll(as_worker.get(), "job-x", 0);
  EXPECT_EQ(watched.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // The right scopes, and admin for both.
  EXPECT_TRUE(Submit("client", &response).ok());
  EXPECT_TRUE(Submit("admin", &response).ok());
  auto as_admin = WorkerService::NewStub(Channel("admin"));
  EXPECT_TRUE(Register(as_admin.get(), "w1").ok());
}

TEST_F(ServicesTest, BadSpecIsInvalidArgumentNamingTheField) {
  StartController();
  auto stub = JobService::NewStub(Channel("client"));
  ftune::v1::SubmitJobRequest request;
  *request.mutable_spec() = ValidSpec();
  request.mutable_spec()->mutable_training()->set_batch_size(100000);
  ftune::v1::SubmitJobResponse response;
  grpc::Status status = stub->SubmitJob(Context().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "training.batch_size: must be 1..4096");
}

TEST_F(ServicesTest, LongPollThenRunWithWatchersSeeingReplayEqualToLive) {
  StartController();
  auto jobs = JobService::NewStub(Channel("client"));
  auto worker = WorkerService::NewStub(Channel("worker"));
  ASSERT_TRUE(Register(worker.get(), "w1").ok());

  // The worker polls first; the poll is answered by the submission.
  ftune::v1::AcquireJobResponse acquired;
  grpc::Status acquire_status;
  std::thread poller([&] {
    ftune::v1::AcquireJobRequest request;
    request.set_worker_id("w1");
    request.add_free_devices("cpu");
    request.set_wait_seconds(15);
    acquire_status = worker->AcquireJob(Context().get(), request, &acquired);
  });
  // Submit once the poll is parked, so it is the poll that gets answered.
  while (controller_->manager().waiting_acquires() == 0) std::this_thread::yield();
  ftune::v1::SubmitJobRequest submit;
  *submit.mutable_spec() = ValidSpec();
  ftune::v1::SubmitJobResponse submitted;
  ASSERT_TRUE(jobs->SubmitJob(Context().get(), submit, &submitted).ok());
  poller.join();
  ASSERT_TRUE(acquire_status.ok()) << acquire_status.error_message();
  ASSERT_EQ(acquired.job().id(), submitted.job().id());
  const std::string job_id = submitted.job().id();

  // 100 live watchers, attached before the run starts.
  constexpr int kWatchers = 100;
  std::vector<testing::WatchResult> live(kWatchers);
  std::vector<std::thread> readers;
  for (int i = 0; i < kWatchers; ++i) {
    readers.emplace_back([&, i] { live[i] = testing::WatchAll(jobs.get(), job_id, 0); });
  }
  while (controller_->manager().watcher_count() < kWatchers) std::this_thread::yield();

  for (int batch = 1; batch <= 10; ++batch) {
    ftune::v1::ReportEventsRequest report;
    report.set_job_id(job_id);
    report.set_lease_id(acquired.lease_id());
    report.set_worker_id(acquired.job().worker_id());
    report.set_batch_id(batch);
    for (int i = 0; i < 5; ++i) {
      report.add_events()->mutable_train_progress()->set_step(batch * 5 + i);
    }
    ftune::v1::ReportEventsResponse reported;
    ASSERT_TRUE(worker->ReportEvents(Context().get(), report, &reported).ok());
  }
  ftune::v1::CompleteJobRequest complete;
  complete.set_job_id(job_id);
  complete.set_lease_id(acquired.lease_id());
  complete.set_worker_id(acquired.job().worker_id());
  complete.set_outcome(ftune::v1::JOB_OUTCOME_SUCCEEDED);
  ftune::v1::CompleteJobResponse completed;
  ASSERT_TRUE(worker->CompleteJob(Context().get(), complete, &completed).ok());
  EXPECT_EQ(completed.job().state(), ftune::v1::JOB_STATE_SUCCEEDED);
  for (auto& t : readers) t.join();

  auto replay = testing::WatchAll(jobs.get(), job_id, 0);
  ASSERT_TRUE(replay.status.ok()) << replay.status.error_message();
  ASSERT_EQ(replay.events.size(), 2u + 1u + 50u + 1u);
  for (int i = 0; i < kWatchers; ++i) {
    ASSERT_TRUE(live[i].status.ok()) << i << ": " << live[i].status.error_message();
    ASSERT_EQ(live[i].events.size(), replay.events.size()) << i;
    for (size_t k = 0; k < replay.events.size(); ++k) {
      ASSERT_EQ(live[i].events[k].SerializeAsString(), replay.events[k].SerializeAsString());
    }
  }
  // Streams unsubscribe in OnDone, which runs just after the client saw the status.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (controller_->manager().watcher_count() > 0 && absl::Now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_EQ(controller_->manager().watcher_count(), 0u);

  ftune::v1::ListWorkersResponse workers;
  ASSERT_TRUE(jobs->ListWorkers(Context().get(), {}, &workers).ok());
  ASSERT_EQ(workers.workers_size(), 1);
  EXPECT_EQ(workers.workers(0).id(), "w1");
}

TEST_F(ServicesTest, EmptyLongPollReturnsNoJobAtTheDeadline) {
  ControllerConfig config;
  config.sweep_interval = absl::Milliseconds(20);
  StartController(config);
  auto worker = WorkerService::NewStub(Channel("worker"));
  ASSERT_TRUE(Register(worker.get(), "w1").ok());
  ftune::v1::AcquireJobRequest request;
  request.set_worker_id("w1");
  request.add_free_devices("cpu");
  request.set_wait_seconds(0.2);
  ftune::v1::AcquireJobResponse response;
  grpc::Status status = worker->AcquireJob(Context().get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(response.has_job());
}

TEST_F(ServicesTest, AbandonedLongPollIsWithdrawnAndLeasesNothing) {
  StartController();
  auto worker = WorkerService::NewStub(Channel("worker"));
  auto jobs = JobService::NewStub(Channel("client"));
  ASSERT_TRUE(Register(worker.get(), "w1").ok());
  ftune::v1::AcquireJobRequest request;
  request.set_worker_id("w1");
  request.add_free_devices("cpu");
  request.set_wait_seconds(30);
  ftune::v1::AcquireJobResponse response;
  // The caller gives up long before the poll would end.
  grpc::Status status =
      worker->AcquireJob(Context(absl::Milliseconds(300)).get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (controller_->manager().waiting_acquires() > 0 && absl::Now() < deadline) {
    std::this_thread::yield();
  }
  ASSERT_EQ(controller_->manager().waiting_acquires(), 0u);
  ftune::v1::SubmitJobRequest submit;
  *submit.mutable_spec() = ValidSpec();
  ftune::v1::SubmitJobResponse submitted;
  ASSERT_TRUE(jobs->SubmitJob(Context().get(), submit, &submitted).ok());
  EXPECT_EQ(submitted.job().state(), ftune::v1::JOB_STATE_QUEUED);
  ftune::v1::GetJobRequest get;
  get.set_job_id(submitted.job().id());
  ftune::v1::Job job;
  ASSERT_TRUE(jobs->GetJob(Context().get(), get, &job).ok());
  EXPECT_EQ(job.state(), ftune::v1::JOB_STATE_QUEUED);
}

TEST_F(ServicesTest, ShutdownEndsParkedPollsAndWatches) {
  StartController();
  auto worker = WorkerService::NewStub(Channel("worker"));
  auto jobs = JobService::NewStub(Channel("client"));
  ASSERT_TRUE(Register(worker.get(), "w1").ok());
  auto spec = ValidSpec();
  spec.set_device("cuda");  // never fits w1, so the job stays queued
  ftune::v1::SubmitJobRequest submit;
  *submit.mutable_spec() = spec;
  ftune::v1::SubmitJobResponse submitted;
  ASSERT_TRUE(jobs->SubmitJob(Context().get(), submit, &submitted).ok());

  grpc::Status poll_status;
  ftune::v1::AcquireJobResponse polled;
  std::thread poller([&] {
    ftune::v1::AcquireJobRequest request;
    request.set_worker_id("w1");
    request.add_free_devices("cpu");
    request.set_wait_seconds(60);
    poll_status = worker->AcquireJob(Context(absl::Seconds(60)).get(), request, &polled);
  });
  testing::WatchResult watched;
  std::thread watcher([&] { watched = testing::WatchAll(jobs.get(), submitted.job().id(), 0); });
  while (controller_->manager().waiting_acquires() == 0 ||
         controller_->manager().watcher_count() == 0) {
    std::this_thread::yield();
  }
  const absl::Time start = absl::Now();
  controller_->Shutdown(absl::Seconds(30));
  poller.join();
  watcher.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));  // not held up by the long calls
  EXPECT_TRUE(poll_status.ok());
  EXPECT_FALSE(polled.has_job());
  EXPECT_EQ(watched.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  // The watcher may be ended before or after the job's first event reached it; either way it
  // is told to resume after the last event it got (the status follows every sent message).
  const int64_t last_seen = watched.events.empty() ? 0 : watched.events.back().seq();
  EXPECT_TRUE(absl::StrContains(watched.status.error_message(),
                                absl::StrCat("resume with after_seq=", last_seen)))
      << watched.status.error_message();
}

TEST_F(ServicesTest, SecondControllerOnTheSameDataDirIsRefused) {
  StartController();
  ControllerConfig config;
  config.listen = "127.0.0.1:0";
  config.data_dir = dir_ + "/data";
  auto second = Controller::Start(config);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
}

// --- TLS, with a CA and certificates made by the openssl CLI ---

TEST_F(ServicesTest, MutualTlsWithTokens) {
  if (access(ftune::testing::kOpensslPath, X_OK) != 0) GTEST_SKIP() << "openssl CLI not installed";
  ASSERT_TRUE(ftune::testing::MakeTestPki(dir_).ok());
  ControllerConfig config;
  config.tls.cert_file = dir_ + "/server.pem";
  config.tls.key_file = dir_ + "/server.key";
  config.tls.ca_file = dir_ + "/ca.pem";
  StartController(config);

  auto submit = [&](ChannelOptions options) {
    options.address = controller_->address();
    options.token_file = dir_ + "/client.token";
    auto channel = MakeChannel(options);
    EXPECT_TRUE(channel.ok()) << channel.status();
    auto stub = JobService::NewStub(*channel);
    ftune::v1::SubmitJobRequest request;
    *request.mutable_spec() = ValidSpec();
    ftune::v1::SubmitJobResponse response;
    return stub->SubmitJob(Context(absl::Seconds(10)).get(), request, &response);
  };

  ChannelOptions mtls;
  mtls.tls = true;
  mtls.tls_files = {dir_ + "/client.pem", dir_ + "/client.key", dir_ + "/ca.pem"};
  grpc::Status ok = submit(mtls);
  EXPECT_TRUE(ok.ok()) << ok.error_message();

  ChannelOptions no_client_cert;
  no_client_cert.tls = true;
  no_client_cert.tls_files.ca_file = dir_ + "/ca.pem";
  EXPECT_FALSE(submit(no_client_cert).ok());

  ChannelOptions plaintext;
  EXPECT_FALSE(submit(plaintext).ok());
}

// The HTTP server (/metrics) takes the gRPC server's certificate, client CA and tokens.
TEST_F(ServicesTest, HttpsMetricsUseTheSameTlsAndTokens) {
  if (access(ftune::testing::kOpensslPath, X_OK) != 0) GTEST_SKIP() << "openssl CLI not installed";
  ASSERT_TRUE(ftune::testing::MakeTestPki(dir_).ok());
  ControllerConfig config;
  config.tls.cert_file = dir_ + "/server.pem";
  config.tls.key_file = dir_ + "/server.key";
  config.tls.ca_file = dir_ + "/ca.pem";
  config.http_listen = "127.0.0.1:0";
  StartController(config);
  ASSERT_NE(controller_->http_server(), nullptr);
  EXPECT_TRUE(controller_->http_server()->tls());

  auto get = [&](bool client_certificate, const std::string& token) {
    std::unique_ptr<httplib::SSLClient> client =
        client_certificate
            ? std::make_unique<httplib::SSLClient>("127.0.0.1", controller_->http_server()->port(),
                                                   dir_ + "/client.pem", dir_ + "/client.key")
            : std::make_unique<httplib::SSLClient>("127.0.0.1", controller_->http_server()->port());
    client->set_ca_cert_path((dir_ + "/ca.pem").c_str());
    client->enable_server_certificate_verification(true);
    httplib::Headers headers;
    if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
    httplib::Result result = client->Get("/metrics", headers);
    return result ? result->status : -1;
  };
  EXPECT_EQ(get(true, kClientToken), 200);
  EXPECT_EQ(get(true, kAdminToken), 200);
  EXPECT_EQ(get(true, kWorkerToken), 403);
  EXPECT_EQ(get(true, ""), 401);
  EXPECT_EQ(get(false, kClientToken), -1) << "no client certificate, no TLS session";
}

TEST_F(ServicesTest, TlsConfigErrorsNameTheFile) {
  TlsOptions only_cert;
  only_cert.cert_file = dir_ + "/missing.pem";
  EXPECT_EQ(MakeServerCredentials(only_cert).status().code(), absl::StatusCode::kInvalidArgument);
  only_cert.key_file = dir_ + "/missing.key";
  auto creds = MakeServerCredentials(only_cert);
  EXPECT_EQ(creds.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(creds.status().message(), "missing.pem"));
}

}  // namespace
}  // namespace ftune::server
