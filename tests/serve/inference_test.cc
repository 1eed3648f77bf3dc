#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "common/grpc_server.h"
#include "common/grpc_status.h"
#include "ftune/v1/inference.grpc.pb.h"
#include "server/serve/inference_engine.h"
#include "server/serve/inference_service.h"
#include "tests/serve/serve_test_util.h"
#include "tests/support/process.h"

namespace ftune::serve {
namespace {

using ::testing::TestWithParam;

constexpr float kTolerance = 1e-5f;

// Synchronous front to the engine's callback API.
absl::StatusOr<Classification> ClassifySync(InferenceEngine& engine, const std::string& model_id,
                                            std::vector<float> samples,
                                            absl::Duration timeout = absl::Seconds(60)) {
  std::promise<absl::StatusOr<Classification>> promise;
  auto future = promise.get_future();
  engine.Classify(model_id, std::move(samples), absl::Now() + timeout,
                  [&promise](absl::StatusOr<Classification> r) { promise.set_value(std::move(r)); });
  return future.get();
}

void ExpectNear(const std::vector<float>& a, const std::vector<float>& b, float tolerance) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], tolerance) << "label " << i;
}

class InferenceEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("serve-model");
    SaveTinyModel(dir_, 7);
  }

  std::unique_ptr<InferenceEngine> MakeEngine(EngineOptions options) {
    options.device = "cpu";
    if (options.precision == "auto") options.precision = "fp32";
    auto engine = InferenceEngine::Create(options, {{"emotion", dir_}});
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? std::move(*engine) : nullptr;
  }

  std::string dir_;
};

TEST_F(InferenceEngineTest, ClassifyEqualsTheInProcessModel) {
  auto engine = MakeEngine({});
  const std::vector<float> clip = MakeClip(1.3, 1);
  auto result = ClassifySync(*engine, "emotion", clip);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->model->id, "emotion");
  EXPECT_EQ(result->model->version, 1u);
  ExpectNear(result->probabilities, ReferenceProbabilities(dir_, clip), kTolerance);
}

TEST_F(InferenceEngineTest, EmptyIdPicksTheOnlyModelAndUnknownIdIsNotFound) {
  auto engine = MakeEngine({});
  EXPECT_TRUE(ClassifySync(*engine, "", MakeClip(0.5, 0)).ok());
  auto missing = ClassifySync(*engine, "nope", MakeClip(0.5, 0));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("emotion"), absl::string_view::npos);
}

// Four clips of different lengths go through one padded forward pass and each gets what it
// gets alone.
TEST_F(InferenceEngineTest, BatchedResultsEqualOneByOne) {
  EngineOptions batched;
  batched.max_batch = 4;
  batched.max_delay = absl::Seconds(60);  // the batch closes when the fourth clip arrives
  auto engine = MakeEngine(batched);
  std::vector<std::vector<float>> clips;
  for (int i = 0; i < 4; ++i) clips.push_back(MakeClip(0.6 + 0.35 * i, i));

  std::vector<std::promise<absl::StatusOr<Classification>>> promises(4);
  for (int i = 0; i < 4; ++i) {
    engine->Classify("emotion", clips[i], absl::Now() + absl::Seconds(120),
                     [&promises, i](absl::StatusOr<Classification> r) {
                       promises[i].set_value(std::move(r));
                     });
  }
  for (int i = 0; i < 4; ++i) {
    auto result = promises[i].get_future().get();
    ASSERT_TRUE(result.ok()) << result.status();
    ExpectNear(result->probabilities, ReferenceProbabilities(dir_, clips[i]), 1e-4f);
  }
}

// Group-norm encoders normalise over time, so padding would change every row; the batcher
// must still answer each clip as if it were alone.
TEST(InferenceEngineGroupNormTest, BatchedResultsEqualOneByOne) {
  const std::string dir = testing::MakeTempDir("serve-group");
  SaveTinyGroupNormModel(dir, 11);
  EngineOptions options;
  options.device = "cpu";
  options.precision = "fp32";
  options.max_batch = 3;
  options.max_delay = absl::Seconds(60);
  auto engine = InferenceEngine::Create(options, {{"base-like", dir}});
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<std::vector<float>> clips = {MakeClip(0.5, 0), MakeClip(1.4, 1), MakeClip(0.9, 2)};
  std::vector<std::promise<absl::StatusOr<Classification>>> promises(3);
  for (int i = 0; i < 3; ++i) {
    (*engine)->Classify("base-like", clips[i], absl::Now() + absl::Seconds(120),
                        [&promises, i](absl::StatusOr<Classification> r) {
                          promises[i].set_value(std::move(r));
                        });
  }
  for (int i = 0; i < 3; ++i) {
    auto result = promises[i].get_future().get();
    ASSERT_TRUE(result.ok()) << result.status();
    ExpectNear(result->probabilities, ReferenceProbabilities(dir, clips[i]), 1e-4f);
  }
}

TEST_F(InferenceEngineTest, AClipShorterThanOneFrameIsInvalid) {
  auto engine = MakeEngine({});
  auto result = ClassifySync(*engine, "emotion", std::vector<float>(100, 0.1f));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_TRUE(ClassifySync(*engine, "emotion", MakeClip(0.5, 0)).ok());
}

TEST_F(InferenceEngineTest, FullQueueIsResourceExhausted) {
  EngineOptions options;
  options.max_batch = 64;
  options.max_delay = absl::Seconds(60);  // nothing leaves the queue while we fill it
  options.queue_limit = 2;
  auto engine = MakeEngine(options);
  std::vector<std::promise<absl::StatusOr<Classification>>> promises(2);
  for (int i = 0; i < 2; ++i) {
    engine->Classify("emotion", MakeClip(0.4, i), absl::Now() + absl::Seconds(120),
                     [&promises, i](absl::StatusOr<Classification> r) {
                       promises[i].set_value(std::move(r));
                     });
  }
  auto third = ClassifySync(*engine, "emotion", MakeClip(0.4, 2));
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted) << third.status();
  engine->Shutdown();
  for (auto& p : promises) {
    auto r = p.get_future().get();  // answered (computed or refused), never dropped
    EXPECT_TRUE(r.ok() || r.status().code() == absl::StatusCode::kUnavailable) << r.status();
  }
}

TEST_F(InferenceEngineTest, ExpiredDeadlineIsNotComputed) {
  auto engine = MakeEngine({});
  auto result = ClassifySync(*engine, "emotion", MakeClip(0.4, 0), -absl::Seconds(1));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(InferenceEngineTest, ReloadSwitchesVersionsAndABrokenFolderKeepsTheOldOne) {
  auto engine = MakeEngine({});
  const std::vector<float> clip = MakeClip(1.0, 2);
  const std::vector<float> before = ReferenceProbabilities(dir_, clip);

  SaveTinyModel(dir_, 99);  // a retrained model lands in the same folder
  const std::vector<float> after = ReferenceProbabilities(dir_, clip);
  ASSERT_GT(std::abs(before[0] - after[0]) + std::abs(before[1] - after[1]), 1e-4);
  auto reloaded = engine->Reload("emotion");
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ((*reloaded)->version, 2u);
  auto result = ClassifySync(*engine, "emotion", clip);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->model->version, 2u);
  ExpectNear(result->probabilities, after, kTolerance);

  std::ofstream(std::filesystem::path(dir_) / "config.json") << "{ not json";
  auto broken = engine->Reload("emotion");
  EXPECT_FALSE(broken.ok());
  auto still = ClassifySync(*engine, "emotion", clip);
  ASSERT_TRUE(still.ok());
  EXPECT_EQ(still->model->version, 2u);
  ExpectNear(still->probabilities, after, kTolerance);
  const auto models = engine->ListModels();
  ASSERT_EQ(models.size(), 1u);
  EXPECT_FALSE(models[0].last_reload_error.empty());
}

TEST(InferenceEngineCreateTest, ABadFolderIsAnErrorNamingIt) {
  const std::string dir = testing::MakeTempDir("serve-empty");
  EngineOptions options;
  options.device = "cpu";
  auto engine = InferenceEngine::Create(options, {{"m", dir}});
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(engine.status().message().find(dir), absl::string_view::npos) << engine.status();
}

// The gRPC service on a loopback port, in process.
class InferenceServiceTest : public InferenceEngineTest {
 protected:
  void SetUp() override {
    InferenceEngineTest::SetUp();
    EngineOptions options;
    options.max_batch = 4;
    options.max_delay = absl::Milliseconds(2);
    engine_ = MakeEngine(options);
    ServiceLimits limits;
    limits.max_audio_seconds = 3;
    service_ = std::make_unique<InferenceServiceImpl>(engine_.get(), limits,
                                                      std::make_shared<const Authorizer>(nullptr));
    auto server = GrpcServer::Start({}, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    stub_ = ftune::v1::InferenceService::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    server_->Shutdown(absl::Seconds(1));
    engine_->Shutdown();
  }

  grpc::Status Call(const ftune::v1::ClassifyRequest& request,
                    ftune::v1::ClassifyResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    return stub_->Classify(&context, request, response);
  }

  std::unique_ptr<InferenceEngine> engine_;
  std::unique_ptr<InferenceServiceImpl> service_;
  std::unique_ptr<GrpcServer> server_;
  std::unique_ptr<ftune::v1::InferenceService::Stub> stub_;
};

TEST_F(InferenceServiceTest, WavFileAnswersEveryLabelAndTopK) {
  const std::vector<float> clip = MakeClip(1.2, 1);
  ftune::v1::ClassifyRequest request;
  request.set_audio_file(EncodeWav(clip, 16000));
  request.set_top_k(2);
  ftune::v1::ClassifyResponse response;
  grpc::Status status = Call(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.scores_size(), 3);
  ASSERT_EQ(response.top_size(), 2);
  EXPECT_EQ(response.model_id(), "emotion");
  EXPECT_EQ(response.label(), response.top(0).label());
  EXPECT_GE(response.top(0).probability(), response.top(1).probability());
  EXPECT_GT(response.latency_ms(), 0);
  EXPECT_NEAR(response.audio_seconds(), 1.2, 1e-3);
  float sum = 0;
  for (const auto& s : response.scores()) sum += s.probability();
  EXPECT_NEAR(sum, 1.0f, 1e-5);
  // 16-bit quantisation of the WAV moves the answer only slightly.
  const std::vector<float> expected = ReferenceProbabilities(dir_, clip);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(response.scores(i).label(), kLabels[i]);
    EXPECT_NEAR(response.scores(i).probability(), expected[i], 2e-3);
  }
}

TEST_F(InferenceServiceTest, PcmAtAnotherRateIsResampled) {
  const std::vector<float> clip16 = MakeClip(1.0, 2);
  auto clip48 = data::Resample(clip16, 16000, 48000);
  ASSERT_TRUE(clip48.ok());
  ftune::v1::ClassifyRequest request;
  request.mutable_pcm()->set_sample_rate(48000);
  *request.mutable_pcm()->mutable_samples() = {clip48->begin(), clip48->end()};
  ftune::v1::ClassifyResponse response;
  ASSERT_TRUE(Call(request, &response).ok());
  EXPECT_NEAR(response.audio_seconds(), 1.0, 0.01);
  const std::vector<float> expected = ReferenceProbabilities(dir_, clip16);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(response.scores(i).probability(), expected[i], 1e-2);
}

struct BadRequestCase {
  std::string name;
  std::function<void(ftune::v1::ClassifyRequest*)> fill;
  grpc::StatusCode code;
  std::string message_part;
};

// Keeps ctest's test names readable (gtest would print the struct's bytes).
void PrintTo(const BadRequestCase& c, std::ostream* os) { *os << c.name; }

class BadRequestTest : public InferenceServiceTest,
                       public ::testing::WithParamInterface<BadRequestCase> {};

TEST_P(BadRequestTest, IsRefusedWithAReason) {
  ftune::v1::ClassifyRequest request;
  GetParam().fill(&request);
  ftune::v1::ClassifyResponse response;
  grpc::Status status = Call(request, &response);
  EXPECT_EQ(status.error_code(), GetParam().code) << status.error_message();
  EXPECT_NE(status.error_message().find(GetParam().message_part), std::string::npos)
      << status.error_message();
}

INSTANTIATE_TEST_SUITE_P(
    Inputs, BadRequestTest,
    ::testing::Values(
        BadRequestCase{"NoAudio", [](auto*) {}, grpc::StatusCode::INVALID_ARGUMENT, "no audio"},
        BadRequestCase{"EmptyFile", [](auto* r) { r->set_audio_file(""); },
                       grpc::StatusCode::INVALID_ARGUMENT, "empty"},
        BadRequestCase{"GarbageBytes",
                       [](auto* r) { r->set_audio_file(std::string(4000, '\x7f') + "garbage"); },
                       grpc::StatusCode::INVALID_ARGUMENT, "cannot be decoded"},
        BadRequestCase{"TruncatedWav",
                       [](auto* r) { r->set_audio_file(EncodeWav(MakeClip(1, 0), 16000).substr(0, 30)); },
                       grpc::StatusCode::INVALID_ARGUMENT, "cannot be decoded"},
        BadRequestCase{"TooLong",
                       [](auto* r) { r->set_audio_file(EncodeWav(MakeClip(4, 0), 16000)); },
                       grpc::StatusCode::INVALID_ARGUMENT, "limit"},
        BadRequestCase{"PcmRateZero",
                       [](auto* r) { r->mutable_pcm()->add_samples(0.1f); },
                       grpc::StatusCode::INVALID_ARGUMENT, "sample_rate"},
        BadRequestCase{"PcmEmpty",
                       [](auto* r) { r->mutable_pcm()->set_sample_rate(16000); },
                       grpc::StatusCode::INVALID_ARGUMENT, "empty"},
        BadRequestCase{"PcmNaN",
                       [](auto* r) {
                         r->mutable_pcm()->set_sample_rate(16000);
                         r->mutable_pcm()->add_samples(std::nanf(""));
                       },
                       grpc::StatusCode::INVALID_ARGUMENT, "NaN"},
        BadRequestCase{"UnknownModel",
                       [](auto* r) {
                         r->set_model_id("other");
                         r->set_audio_file(EncodeWav(MakeClip(0.5, 0), 16000));
                       },
                       grpc::StatusCode::NOT_FOUND, "other"}),
    [](const ::testing::TestParamInfo<BadRequestCase>& info) { return info.param.name; });

TEST_F(InferenceServiceTest, ConcurrentClientsEachGetTheirOwnAnswer) {
  constexpr int kClients = 6;
  constexpr int kCallsEach = 3;
  std::vector<std::vector<float>> expected;
  for (int c = 0; c < kClients; ++c) {
    expected.push_back(ReferenceProbabilities(dir_, MakeClip(0.5 + 0.2 * c, c)));
  }
  std::vector<std::thread> clients;
  std::vector<int> failures(kClients, 0);
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      const std::vector<float> clip = MakeClip(0.5 + 0.2 * c, c);
      for (int k = 0; k < kCallsEach; ++k) {
        ftune::v1::ClassifyRequest request;
        request.mutable_pcm()->set_sample_rate(16000);
        *request.mutable_pcm()->mutable_samples() = {clip.begin(), clip.end()};
        ftune::v1::ClassifyResponse response;
        if (!Call(request, &response).ok()) {
          ++failures[c];
          continue;
        }
        for (int i = 0; i < 3; ++i) {
          if (std::abs(response.scores(i).probability() - expected[c][i]) > 1e-4) ++failures[c];
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(failures[c], 0) << "client " << c;
}

TEST_F(InferenceServiceTest, ListAndReloadModels) {
  grpc::ClientContext list_context;
  ftune::v1::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(&list_context, {}, &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).id(), "emotion");
  EXPECT_EQ(models.models(0).labels_size(), 3);
  EXPECT_EQ(models.models(0).sample_rate(), 16000u);
  EXPECT_GT(models.models(0).parameters(), 0u);

  grpc::ClientContext reload_context;
  ftune::v1::ReloadModelRequest reload;
  reload.set_model_id("emotion");
  ftune::v1::ModelInfo info;
  ASSERT_TRUE(stub_->ReloadModel(&reload_context, reload, &info).ok());
  EXPECT_EQ(info.version(), 2u);
}

}  // namespace
}  // namespace ftune::serve
