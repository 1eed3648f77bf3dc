// ftserve's REST API on loopback beside its gRPC services (ftune's and the Open Inference
// Protocol's), over one engine: every endpoint through a real HTTP client, answers equal to
// gRPC's, the shared batcher, bad bodies and content types, 404/413/415/429/503, 64
// concurrent requests and a slow client; the OIP over gRPC.
#include "server/serve/rest_api.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <future>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_server.h"
#include "common/http_server.h"
#include "common/metrics.h"
#include "ftune/v1/inference.grpc.pb.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/serve/inference_engine.h"
#include "server/serve/inference_service.h"
#include "server/serve/oip_grpc_service.h"
#include "server/serve/serve_metrics.h"
#include "tests/serve/serve_test_util.h"
#include "tests/support/process.h"
#include "tests/support/promtool.h"

namespace ftune::serve {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

constexpr int64_t kMaxRequestBytes = 1 << 20;

// An OIP infer body for `clips`, padded to the longest, with lengths when they differ.
json InferBody(const std::vector<std::vector<float>>& clips, double sample_rate = 16000) {
  size_t longest = 0;
  for (const auto& clip : clips) longest = std::max(longest, clip.size());
  json data = json::array();
  json lengths = json::array();
  for (const auto& clip : clips) {
    for (size_t i = 0; i < longest; ++i) data.push_back(i < clip.size() ? clip[i] : 0.0f);
    lengths.push_back(clip.size());
  }
  json input = {{"name", "waveform"},
                {"datatype", "FP32"},
                {"shape", {clips.size(), longest}},
                {"data", data},
                {"parameters", {{"sample_rate", sample_rate}}}};
  if (clips.size() > 1) input["parameters"]["lengths"] = lengths;
  return {{"id", "request-1"}, {"inputs", json::array({input})}};
}

std::vector<float> FloatsOf(const json& values) {
  std::vector<float> out;
  for (const json& v : values) out.push_back(v.get<float>());
  return out;
}

class RestApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("rest-model");
    SaveTinyModel(dir_, 5);
  }

  void TearDown() override { Stop(); }

  void Start(EngineOptions options = {}, std::shared_ptr<const TokenStore> tokens = nullptr) {
    options.device = "cpu";
    options.precision = "fp32";
    options.on_batch = [this](const BatchReport& batch) { metrics_.RecordBatch(batch); };
    auto engine = InferenceEngine::Create(options, {{"emotion", dir_}});
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    metrics_.WatchEngine(engine_.get());

    ServiceLimits limits;
    limits.max_audio_seconds = 8;
    limits.max_request_bytes = kMaxRequestBytes;
    auto authorizer = std::make_shared<const Authorizer>(tokens);
    grpc_service_ =
        std::make_unique<InferenceServiceImpl>(engine_.get(), limits, authorizer, &metrics_);
    oip_service_ = std::make_unique<OipGrpcService>(engine_.get(), limits, authorizer, &metrics_);
    auto grpc_server = GrpcServer::Start({}, {grpc_service_.get(), oip_service_.get()});
    ASSERT_TRUE(grpc_server.ok()) << grpc_server.status();
    grpc_server_ = std::move(*grpc_server);
    auto channel = grpc::CreateChannel(grpc_server_->address(), grpc::InsecureChannelCredentials());
    stub_ = ftune::v1::InferenceService::NewStub(channel);
    oip_stub_ = inference::GRPCInferenceService::NewStub(channel);

    rest_ = std::make_unique<RestApi>(engine_.get(), RestOptions{limits}, &metrics_);
    HttpServerOptions http_options;
    http_options.max_body_bytes = kMaxRequestBytes;
    http_options.tokens = tokens;
    std::vector<HttpRoute> routes = rest_->Routes();
    routes.push_back(MetricsRoute([this] { return registry_.Render(); }));
    auto http = HttpServer::Start(http_options, std::move(routes));
    ASSERT_TRUE(http.ok()) << http.status();
    http_ = std::move(*http);
  }

  void Stop() {
    if (http_) http_->Drain(absl::ZeroDuration());
    if (grpc_server_) grpc_server_->Shutdown(absl::Seconds(1));
    if (engine_) engine_->Shutdown();
    if (http_) http_->Stop();
  }

  httplib::Client Client() {
    httplib::Client client("127.0.0.1", http_->port());
    client.set_read_timeout(60, 0);
    return client;
  }

  httplib::Result PostJson(const std::string& path, const json& body) {
    return Client().Post(path.c_str(), body.dump(), "application/json");
  }

  ftune::v1::ClassifyResponse GrpcClassify(const ftune::v1::ClassifyRequest& request,
                                           grpc::Status* status = nullptr) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    ftune::v1::ClassifyResponse response;
    grpc::Status s = stub_->Classify(&context, request, &response);
    if (status != nullptr) *status = s;
    EXPECT_TRUE(status != nullptr || s.ok()) << s.error_message();
    return response;
  }

  ftune::v1::ClassifyResponse GrpcPcm(const std::vector<float>& clip, int rate = 16000) {
    ftune::v1::ClassifyRequest request;
    request.mutable_pcm()->set_sample_rate(rate);
    *request.mutable_pcm()->mutable_samples() = {clip.begin(), clip.end()};
    return GrpcClassify(request);
  }

  static json Json(const httplib::Result& result) {
    EXPECT_TRUE(result) << httplib::to_string(result.error());
    if (!result) return json();
    json body = json::parse(result->body, nullptr, false);
    EXPECT_FALSE(body.is_discarded()) << result->body;
    return body;
  }

  // The error of a failed call, checking its status and that the body is {"error": ...}.
  static std::string ErrorOf(const httplib::Result& result, int status) {
    EXPECT_TRUE(result);
    if (!result) return "";
    EXPECT_EQ(result->status, status) << result->body;
    json body = Json(result);
    EXPECT_TRUE(body.contains("error")) << result->body;
    return body.value("error", "");
  }

  std::string dir_;
  MetricsRegistry registry_;
  ServeMetrics metrics_{&registry_};
  std::unique_ptr<InferenceEngine> engine_;
  std::unique_ptr<InferenceServiceImpl> grpc_service_;
  std::unique_ptr<OipGrpcService> oip_service_;
  std::unique_ptr<GrpcServer> grpc_server_;
  std::unique_ptr<ftune::v1::InferenceService::Stub> stub_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> oip_stub_;
  std::unique_ptr<RestApi> rest_;
  std::unique_ptr<HttpServer> http_;
};

TEST_F(RestApiTest, HealthAndServerMetadata) {
  Start();
  auto live = Client().Get("/v2/health/live");
  EXPECT_EQ(live->status, 200);
  EXPECT_EQ(Json(live)["live"], true);
  auto ready = Client().Get("/v2/health/ready");
  EXPECT_EQ(ready->status, 200);
  EXPECT_EQ(Json(ready)["ready"], true);
  json server = Json(Client().Get("/v2"));
  EXPECT_EQ(server["name"], "ftserve");
  EXPECT_FALSE(server["version"].get<std::string>().empty());
  EXPECT_EQ(server["extensions"], json::array({"binary_tensor_data"}));
}

TEST_F(RestApiTest, ModelMetadataNamesTheSignatureAndLabels) {
  Start();
  auto result = Client().Get("/v2/models/emotion");
  ASSERT_EQ(result->status, 200) << result->body;
  json model = Json(result);
  EXPECT_EQ(model["name"], "emotion");
  EXPECT_EQ(model["versions"], json::array({"1"}));
  EXPECT_EQ(model["inputs"][0]["name"], "waveform");
  EXPECT_EQ(model["inputs"][0]["datatype"], "FP32");
  EXPECT_EQ(model["inputs"][0]["shape"], json::array({-1, -1}));
  EXPECT_EQ(model["outputs"][0]["name"], "probabilities");
  EXPECT_EQ(model["outputs"][0]["shape"], json::array({-1, 3}));
  EXPECT_EQ(model["outputs"][1]["name"], "label");
  EXPECT_EQ(model["outputs"][1]["datatype"], "BYTES");
  EXPECT_EQ(model["parameters"]["labels"], json(kLabels));
  EXPECT_EQ(model["parameters"]["sample_rate"], 16000);

  EXPECT_EQ(Client().Get("/v2/models/emotion/versions/1")->status, 200);
  EXPECT_THAT(ErrorOf(Client().Get("/v2/models/emotion/versions/2"), 404), HasSubstr("version"));
  auto model_ready = Client().Get("/v2/models/emotion/ready");
  EXPECT_EQ(model_ready->status, 200);
  EXPECT_EQ(Json(model_ready)["ready"], true);
  EXPECT_EQ(Client().Get("/v2/models/emotion/versions/1/ready")->status, 200);
}

TEST_F(RestApiTest, UnknownModelIs404Everywhere) {
  Start();
  const std::string wav = EncodeWav(MakeClip(0.5, 0), 16000);
  EXPECT_THAT(ErrorOf(Client().Get("/v2/models/nope"), 404), HasSubstr("nope"));
  ErrorOf(Client().Get("/v2/models/nope/ready"), 404);
  ErrorOf(PostJson("/v2/models/nope/infer", InferBody({MakeClip(0.5, 0)})), 404);
  // Even with a body that would be refused.
  ErrorOf(Client().Post("/v2/models/nope/infer", "{", "application/json"), 404);
  EXPECT_THAT(ErrorOf(Client().Post("/v1/models/nope:classify", wav, "audio/wav"), 404),
              HasSubstr("emotion"));
}

// The same clip through both protocols gets the same answer: the same engine computes it.
TEST_F(RestApiTest, InferAndClassifyEqualGrpc) {
  Start();
  const std::vector<float> clip = MakeClip(1.1, 2);
  const ftune::v1::ClassifyResponse by_grpc = GrpcPcm(clip);

  auto result = PostJson("/v2/models/emotion/infer", InferBody({clip}));
  ASSERT_EQ(result->status, 200) << result->body;
  json body = Json(result);
  EXPECT_EQ(body["id"], "request-1");
  EXPECT_EQ(body["model_name"], "emotion");
  EXPECT_EQ(body["model_version"], "1");
  ASSERT_EQ(body["outputs"].size(), 2u);
  const json& probabilities = body["outputs"][0];
  EXPECT_EQ(probabilities["name"], "probabilities");
  EXPECT_EQ(probabilities["datatype"], "FP32");
  EXPECT_EQ(probabilities["shape"], json::array({1, 3}));
  const std::vector<float> p = FloatsOf(probabilities["data"]);
  ASSERT_EQ(p.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(p[i], by_grpc.scores(i).probability()) << i;
  const json& label = body["outputs"][1];
  EXPECT_EQ(label["name"], "label");
  EXPECT_EQ(label["datatype"], "BYTES");
  EXPECT_EQ(label["shape"], json::array({1}));
  EXPECT_EQ(label["data"][0], by_grpc.label());

  // The curl way: an audio file as the body, with curl's default form Content-Type.
  const std::string wav = EncodeWav(clip, 16000);
  ftune::v1::ClassifyRequest file_request;
  file_request.set_audio_file(wav);
  const ftune::v1::ClassifyResponse file_by_grpc = GrpcClassify(file_request);
  auto classified =
      Client().Post("/v1/models/emotion:classify", wav, "application/x-www-form-urlencoded");
  ASSERT_EQ(classified->status, 200) << classified->body;
  json answer = Json(classified);
  EXPECT_EQ(answer["model"], "emotion");
  EXPECT_EQ(answer["label"], file_by_grpc.label());
  EXPECT_GT(answer["latency_ms"].get<double>(), 0);
  EXPECT_NEAR(answer["audio_seconds"].get<double>(), 1.1, 1e-3);
  // Every label, in the model's order.
  const nlohmann::ordered_json ordered = nlohmann::ordered_json::parse(classified->body);
  ASSERT_EQ(ordered["probabilities"].size(), 3u);
  int i = 0;
  for (const auto& [name, value] : ordered["probabilities"].items()) {
    EXPECT_EQ(name, kLabels[i]);
    EXPECT_EQ(value.get<float>(), file_by_grpc.scores(i).probability()) << name;
    ++i;
  }
  ASSERT_EQ(answer["top"].size(), 3u);
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(answer["top"][k]["label"], file_by_grpc.top(k).label());
    EXPECT_EQ(answer["top"][k]["probability"].get<float>(), file_by_grpc.top(k).probability());
  }

  // A multipart form (curl -F file=@clip.wav) and ?top_k.
  httplib::MultipartFormDataItems form = {{"file", wav, "clip.wav", "audio/wav"}};
  auto multipart = Client().Post("/v1/models/emotion:classify?top_k=1", form);
  ASSERT_EQ(multipart->status, 200) << multipart->body;
  json from_form = Json(multipart);
  EXPECT_EQ(from_form["label"], file_by_grpc.label());
  EXPECT_EQ(from_form["top"].size(), 1u);
}

TEST_F(RestApiTest, BatchWithLengthsAnswersEachClipAsAlone) {
  Start();
  std::vector<std::vector<float>> clips = {MakeClip(0.6, 0), MakeClip(1.4, 1), MakeClip(0.9, 2)};
  auto result = PostJson("/v2/models/emotion/infer", InferBody(clips));
  ASSERT_EQ(result->status, 200) << result->body;
  json body = Json(result);
  EXPECT_EQ(body["outputs"][0]["shape"], json::array({3, 3}));
  const std::vector<float> p = FloatsOf(body["outputs"][0]["data"]);
  ASSERT_EQ(p.size(), 9u);
  for (int row = 0; row < 3; ++row) {
    const std::vector<float> expected = ReferenceProbabilities(dir_, clips[row]);
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(p[row * 3 + i], expected[i], 1e-4) << row;
  }
  EXPECT_EQ(body["outputs"][1]["data"].size(), 3u);

  // Nested rows mean the same as flat data.
  json nested = InferBody({clips[0]});
  json rows = json::array({nested["inputs"][0]["data"]});
  nested["inputs"][0]["data"] = rows;
  auto nested_result = PostJson("/v2/models/emotion/infer", nested);
  ASSERT_EQ(nested_result->status, 200) << nested_result->body;
  const std::vector<float> nested_p = FloatsOf(Json(nested_result)["outputs"][0]["data"]);
  const std::vector<float> expected = ReferenceProbabilities(dir_, clips[0]);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(nested_p[i], expected[i], 1e-4);
}

TEST_F(RestApiTest, OtherSampleRatesAreResampledAndOutputsCanBeChosen) {
  Start();
  const std::vector<float> clip16 = MakeClip(1.0, 1);
  auto clip48 = data::Resample(clip16, 16000, 48000);
  ASSERT_TRUE(clip48.ok());
  json body = InferBody({*clip48}, 48000);
  body["outputs"] = json::array({{{"name", "probabilities"}}});
  auto result = PostJson("/v2/models/emotion/infer", body);
  ASSERT_EQ(result->status, 200) << result->body;
  json answer = Json(result);
  ASSERT_EQ(answer["outputs"].size(), 1u);
  EXPECT_EQ(answer["outputs"][0]["name"], "probabilities");
  const std::vector<float> expected = ReferenceProbabilities(dir_, clip16);
  const std::vector<float> p = FloatsOf(answer["outputs"][0]["data"]);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(p[i], expected[i], 1e-2);
}

// Triton's binary tensor extension: the JSON header, then raw FP32 input; outputs in binary.
TEST_F(RestApiTest, BinaryTensorDataInAndOut) {
  Start();
  const std::vector<float> clip = MakeClip(0.8, 3);
  json header = {{"inputs",
                  {{{"name", "waveform"},
                    {"datatype", "FP32"},
                    {"shape", {1, clip.size()}},
                    {"parameters", {{"binary_data_size", clip.size() * 4}}}}}},
                 {"parameters", {{"binary_data_output", true}}}};
  const std::string text = header.dump();
  std::string body = text;
  body.append(reinterpret_cast<const char*>(clip.data()), clip.size() * 4);
  httplib::Headers headers = {{"Inference-Header-Content-Length", std::to_string(text.size())}};
  auto result =
      Client().Post("/v2/models/emotion/infer", headers, body, "application/octet-stream");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  size_t json_bytes = std::stoul(result->get_header_value("Inference-Header-Content-Length"));
  json answer = json::parse(result->body.substr(0, json_bytes));
  ASSERT_EQ(answer["outputs"].size(), 2u);
  const size_t p_bytes = answer["outputs"][0]["parameters"]["binary_data_size"].get<size_t>();
  ASSERT_EQ(p_bytes, 12u);
  std::vector<float> p(3);
  std::memcpy(p.data(), result->body.data() + json_bytes, p_bytes);
  const ftune::v1::ClassifyResponse by_grpc = GrpcPcm(clip);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(p[i], by_grpc.scores(i).probability());
  const size_t label_offset = json_bytes + p_bytes;
  uint32_t length = 0;
  std::memcpy(&length, result->body.data() + label_offset, 4);
  EXPECT_EQ(result->body.substr(label_offset + 4, length), by_grpc.label());
}

struct BadInferCase {
  std::string name;
  std::function<std::string()> body;  // the request body
  std::string message_part;
};

void PrintTo(const BadInferCase& c, std::ostream* os) { *os << c.name; }

json ValidBody() { return InferBody({MakeClip(0.3, 0)}); }

std::string With(std::function<void(json&)> edit) {
  json body = ValidBody();
  edit(body);
  return body.dump();
}

class BadInferTest : public RestApiTest, public ::testing::WithParamInterface<BadInferCase> {};

TEST_P(BadInferTest, Is400WithAReason) {
  Start();
  auto result = Client().Post("/v2/models/emotion/infer", GetParam().body(), "application/json");
  EXPECT_THAT(ErrorOf(result, 400), HasSubstr(GetParam().message_part));
}

INSTANTIATE_TEST_SUITE_P(
    Bodies, BadInferTest,
    ::testing::Values(
        BadInferCase{"NotJson", [] { return std::string("{\"inputs\": ["); }, "not JSON"},
        BadInferCase{"NotAnObject", [] { return std::string("[1, 2]"); }, "JSON object"},
        BadInferCase{"NoInputs", [] { return std::string("{}"); }, "inputs"},
        BadInferCase{"TwoInputs",
                     [] { return With([](json& b) { b["inputs"].push_back(b["inputs"][0]); }); },
                     "one tensor"},
        BadInferCase{"WrongName",
                     [] { return With([](json& b) { b["inputs"][0]["name"] = "audio"; }); },
                     "'waveform'"},
        BadInferCase{"WrongDatatype",
                     [] { return With([](json& b) { b["inputs"][0]["datatype"] = "INT16"; }); },
                     "FP32"},
        BadInferCase{"ShapeDisagreesWithData",
                     [] { return With([](json& b) {
                            b["inputs"][0]["shape"] = {1, 7};
                          }); },
                     "needs 7"},
        BadInferCase{"RankThree",
                     [] { return With([](json& b) {
                            b["inputs"][0]["shape"] = {1, 1, 4800};
                          }); },
                     "[B, N]"},
        BadInferCase{"NonNumericData",
                     [] { return With([](json& b) { b["inputs"][0]["data"][5] = "x"; }); },
                     "non-number"},
        BadInferCase{"NoData", [] { return With([](json& b) { b["inputs"][0].erase("data"); }); },
                     "no data"},
        BadInferCase{"LengthsOfTheWrongSize",
                     [] {
                       return With([](json& b) {
                         b["inputs"][0]["parameters"]["lengths"] = {10, 20};
                       });
                     },
                     "lengths"},
        BadInferCase{"LengthBeyondTheRow",
                     [] {
                       return With(
                           [](json& b) { b["inputs"][0]["parameters"]["lengths"] = {999999}; });
                     },
                     "lengths[0]"},
        BadInferCase{
            "SampleRateZero",
            [] { return With([](json& b) { b["inputs"][0]["parameters"]["sample_rate"] = 0; }); },
            "sample_rate"},
        BadInferCase{"UnknownOutput",
                     [] {
                       return With([](json& b) {
                         b["outputs"] = json::array({{{"name", "logits"}}});
                       });
                     },
                     "logits"},
        BadInferCase{"NumericId", [] { return With([](json& b) { b["id"] = 5; }); }, "id"},
        BadInferCase{"TooShortForOneFrame",
                     [] {
                       return With([](json& b) {
                         b["inputs"][0]["shape"] = {1, 10};
                         b["inputs"][0]["data"] = std::vector<float>(10, 0.1f);
                       });
                     },
                     "too short"},
        BadInferCase{"TooLong",
                     [] { return InferBody({std::vector<float>(16000 * 9, 0.0f)}).dump(); },
                     "limit"}),
    [](const ::testing::TestParamInfo<BadInferCase>& info) { return info.param.name; });

TEST_F(RestApiTest, WrongContentTypesAndBadAudio) {
  Start();
  EXPECT_THAT(
      ErrorOf(Client().Post("/v2/models/emotion/infer", ValidBody().dump(), "text/plain"), 415),
      HasSubstr("application/json"));
  const std::string wav = EncodeWav(MakeClip(0.5, 0), 16000);
  EXPECT_THAT(
      ErrorOf(Client().Post("/v1/models/emotion:classify", "{\"audio\": 1}", "application/json"),
              415),
      HasSubstr("--data-binary"));
  EXPECT_THAT(ErrorOf(Client().Post("/v1/models/emotion:classify", std::string(3000, '\x7f'),
                                    "application/octet-stream"),
                      400),
              HasSubstr("cannot be decoded"));
  EXPECT_THAT(
      ErrorOf(Client().Post("/v1/models/emotion:classify", wav.substr(0, 30), "audio/wav"), 400),
      HasSubstr("cannot be decoded"));
  EXPECT_THAT(ErrorOf(Client().Post("/v1/models/emotion:classify", "", "audio/wav"), 400),
              HasSubstr("empty"));
  EXPECT_THAT(ErrorOf(Client().Post("/v1/models/emotion:classify?top_k=0", wav, "audio/wav"), 400),
              HasSubstr("top_k"));
  // GET where POST is meant.
  ErrorOf(Client().Get("/v2/models/emotion/infer"), 405);
}

TEST_F(RestApiTest, OversizedBodyIs413) {
  Start();
  const std::string wav = EncodeWav(MakeClip(40, 0), 16000);  // 1.28 MB > 1 MiB
  ASSERT_GT(static_cast<int64_t>(wav.size()), kMaxRequestBytes);
  EXPECT_THAT(ErrorOf(Client().Post("/v1/models/emotion:classify", wav, "audio/wav"), 413),
              HasSubstr("larger than"));
}

TEST_F(RestApiTest, FullQueueIs429LikeGrpcsResourceExhausted) {
  EngineOptions options;
  options.max_batch = 64;
  options.max_delay = absl::Seconds(60);  // nothing leaves the queue while the test runs
  options.queue_limit = 1;
  Start(options);
  std::promise<absl::StatusOr<Classification>> parked;
  engine_->Classify(
      "emotion", MakeClip(0.4, 0), absl::Now() + absl::Seconds(120),
      [&parked](absl::StatusOr<Classification> r) { parked.set_value(std::move(r)); });

  EXPECT_THAT(ErrorOf(PostJson("/v2/models/emotion/infer", InferBody({MakeClip(0.4, 1)})), 429),
              HasSubstr("retry later"));
  ErrorOf(
      Client().Post("/v1/models/emotion:classify", EncodeWav(MakeClip(0.4, 1), 16000), "audio/wav"),
      429);
  grpc::Status grpc_status;
  ftune::v1::ClassifyRequest request;
  request.set_audio_file(EncodeWav(MakeClip(0.4, 1), 16000));
  GrpcClassify(request, &grpc_status);
  EXPECT_EQ(grpc_status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  engine_->Shutdown();  // answers the parked clip: computed, or refused as shutting down
  auto answer = parked.get_future().get();
  EXPECT_TRUE(answer.ok() || absl::IsUnavailable(answer.status())) << answer.status();
}

TEST_F(RestApiTest, NotReadyIs503) {
  Start();
  engine_->Shutdown();
  EXPECT_EQ(Client().Get("/v2/health/live")->status, 200);
  ErrorOf(Client().Get("/v2/health/ready"), 503);
  ErrorOf(Client().Get("/v2/models/emotion/ready"), 503);
  EXPECT_THAT(ErrorOf(PostJson("/v2/models/emotion/infer", InferBody({MakeClip(0.4, 0)})), 503),
              HasSubstr("shutting down"));
  ErrorOf(
      Client().Post("/v1/models/emotion:classify", EncodeWav(MakeClip(0.4, 0), 16000), "audio/wav"),
      503);
}

// A batch closes only when two clips are queued: one from REST and one from gRPC make it.
TEST_F(RestApiTest, RestAndGrpcShareTheDynamicBatcher) {
  EngineOptions options;
  options.max_batch = 2;
  options.max_delay = absl::Seconds(60);
  Start(options);
  const std::vector<float> rest_clip = MakeClip(0.7, 1);
  const std::vector<float> grpc_clip = MakeClip(1.2, 2);
  auto rest = std::async(std::launch::async, [&] {
    return PostJson("/v2/models/emotion/infer", InferBody({rest_clip}));
  });
  auto by_grpc = std::async(std::launch::async, [&] { return GrpcPcm(grpc_clip); });
  auto rest_result = rest.get();
  ASSERT_EQ(rest_result->status, 200) << rest_result->body;
  const std::vector<float> p = FloatsOf(Json(rest_result)["outputs"][0]["data"]);
  const std::vector<float> expected = ReferenceProbabilities(dir_, rest_clip);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(p[i], expected[i], 1e-4);
  const ftune::v1::ClassifyResponse grpc_answer = by_grpc.get();
  const std::vector<float> grpc_expected = ReferenceProbabilities(dir_, grpc_clip);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(grpc_answer.scores(i).probability(), grpc_expected[i], 1e-4);
  }
  const std::string metrics = registry_.Render();
  EXPECT_THAT(metrics, HasSubstr("ftune_serve_batch_size_count{model=\"emotion\"} 1\n"));
  EXPECT_THAT(metrics, HasSubstr("ftune_serve_batch_size_sum{model=\"emotion\"} 2\n"));
}

TEST_F(RestApiTest, SixtyFourConcurrentRequestsEachGetTheirOwnAnswer) {
  EngineOptions options;
  options.max_batch = 8;
  options.max_delay = absl::Milliseconds(20);
  options.queue_limit = 128;
  Start(options);
  constexpr int kClients = 64;
  constexpr int kDistinct = 4;
  std::vector<std::vector<float>> clips;
  std::vector<std::vector<float>> expected;
  for (int c = 0; c < kDistinct; ++c) {
    clips.push_back(MakeClip(0.4 + 0.15 * c, c));
    expected.push_back(ReferenceProbabilities(dir_, clips.back()));
  }
  std::vector<std::future<std::string>> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.push_back(std::async(std::launch::async, [&, c]() -> std::string {
      const int k = c % kDistinct;
      httplib::Result result = c % 2 == 0
                                   ? PostJson("/v2/models/emotion/infer", InferBody({clips[k]}))
                                   : Client().Post("/v1/models/emotion:classify",
                                                   EncodeWav(clips[k], 16000), "audio/wav");
      if (!result) return "no answer: " + httplib::to_string(result.error());
      if (result->status != 200) return absl::StrCat(result->status, " ", result->body);
      json body = json::parse(result->body);
      std::vector<float> p;
      if (c % 2 == 0) {
        p = FloatsOf(body["outputs"][0]["data"]);
      } else {
        for (const std::string& label : kLabels) p.push_back(body["probabilities"][label]);
      }
      // The WAV's 16-bit quantisation moves the answer a little.
      const float tolerance = c % 2 == 0 ? 1e-4f : 3e-3f;
      for (int i = 0; i < 3; ++i) {
        if (std::abs(p[i] - expected[k][i]) > tolerance) {
          return absl::StrCat("client ", c, " label ", i, ": ", p[i], " vs ", expected[k][i]);
        }
      }
      return "";
    }));
  }
  for (auto& client : clients) EXPECT_EQ(client.get(), "");
  EXPECT_THAT(registry_.Render(),
              HasSubstr(absl::StrCat("ftune_serve_requests_total{model=\"emotion\",protocol="
                                     "\"rest\",code=\"OK\"} ",
                                     kClients, "\n")));
}

// A client that sends its audio slowly holds one connection; the others are answered.
TEST_F(RestApiTest, ASlowClientDoesNotHoldUpOthers) {
  Start();
  const std::string wav = EncodeWav(MakeClip(0.6, 1), 16000);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(http_->port()));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string head = absl::StrCat(
      "POST /v1/models/emotion:classify HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
      "Content-Length: ",
      wav.size(), "\r\nConnection: close\r\n\r\n");
  const std::string first = head + wav.substr(0, 100);
  ASSERT_EQ(send(fd, first.data(), first.size(), MSG_NOSIGNAL), static_cast<ssize_t>(first.size()));

  for (int i = 0; i < 4; ++i) {
    auto other = Client().Post("/v1/models/emotion:classify", wav, "audio/wav");
    ASSERT_TRUE(other);
    EXPECT_EQ(other->status, 200);
  }
  const std::string rest = wav.substr(100);
  ASSERT_EQ(send(fd, rest.data(), rest.size(), MSG_NOSIGNAL), static_cast<ssize_t>(rest.size()));
  timeval tv{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string reply;
  char buffer[4096];
  for (ssize_t n; (n = recv(fd, buffer, sizeof(buffer), 0)) > 0;) reply.append(buffer, n);
  close(fd);
  EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 200")) << reply;
  EXPECT_THAT(reply, HasSubstr("\"label\":"));
}

TEST_F(RestApiTest, TokensGuardInferenceButNotHealth) {
  auto tokens = TokenStore::Parse("client client-token-1\nworker worker-token-1\n", "test");
  ASSERT_TRUE(tokens.ok());
  Start({}, std::move(*tokens));
  EXPECT_EQ(Client().Get("/v2/health/ready")->status, 200);
  ErrorOf(PostJson("/v2/models/emotion/infer", InferBody({MakeClip(0.4, 0)})), 401);
  ErrorOf(Client().Get("/metrics"), 401);
  httplib::Headers worker = {{"Authorization", "Bearer worker-token-1"}};
  ErrorOf(Client().Get("/v2/models/emotion", worker), 403);
  httplib::Headers client = {{"Authorization", "Bearer client-token-1"}};
  EXPECT_EQ(Client()
                .Post("/v2/models/emotion/infer", client, InferBody({MakeClip(0.4, 0)}).dump(),
                      "application/json")
                ->status,
            200);
  EXPECT_EQ(Client().Get("/metrics", client)->status, 200);
}

TEST_F(RestApiTest, MetricsCountBothProtocolsAndPassPromtool) {
  Start();
  GrpcPcm(MakeClip(0.5, 0));
  ASSERT_EQ(PostJson("/v2/models/emotion/infer", InferBody({MakeClip(0.5, 0)}))->status, 200);
  ErrorOf(PostJson("/v2/models/emotion/infer", json::object()), 400);
  ErrorOf(PostJson("/v2/models/other/infer", InferBody({MakeClip(0.5, 0)})), 404);
  auto result = Client().Get("/metrics");
  ASSERT_EQ(result->status, 200);
  const std::string& text = result->body;
  EXPECT_THAT(text, HasSubstr("ftune_serve_requests_total{model=\"emotion\",protocol=\"grpc\","
                              "code=\"OK\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("ftune_serve_requests_total{model=\"emotion\",protocol=\"rest\","
                              "code=\"OK\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("ftune_serve_requests_total{model=\"emotion\",protocol=\"rest\","
                              "code=\"INVALID_ARGUMENT\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("ftune_serve_requests_total{model=\"unknown\",protocol=\"rest\","
                              "code=\"NOT_FOUND\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("ftune_serve_request_duration_seconds_count{model=\"emotion\","
                              "protocol=\"rest\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("ftune_serve_queue_depth{model=\"emotion\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("ftune_serve_batch_size_count{model=\"emotion\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("ftune_serve_model_load_seconds{model=\"emotion\"} "));
  EXPECT_THAT(text, HasSubstr("ftune_serve_model_version{model=\"emotion\"} 1\n"));
  auto lint = testing::PromtoolCheckMetrics(text);
  EXPECT_TRUE(lint.ok()) << lint << "\n" << text;
}

// --- The Open Inference Protocol over gRPC ---

std::unique_ptr<grpc::ClientContext> OipContext() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  return context;
}

inference::ModelInferRequest OipRequest(const std::vector<float>& clip, bool raw) {
  inference::ModelInferRequest request;
  request.set_model_name("emotion");
  request.set_id("grpc-1");
  auto* input = request.add_inputs();
  input->set_name("waveform");
  input->set_datatype("FP32");
  input->add_shape(1);
  input->add_shape(static_cast<int64_t>(clip.size()));
  (*input->mutable_parameters())["sample_rate"].set_int64_param(16000);
  if (raw) {
    request.add_raw_input_contents(reinterpret_cast<const char*>(clip.data()), clip.size() * 4);
  } else {
    *input->mutable_contents()->mutable_fp32_contents() = {clip.begin(), clip.end()};
  }
  return request;
}

TEST_F(RestApiTest, OipGrpcRawAndTypedTensorsEqualFtuneGrpc) {
  Start();
  const std::vector<float> clip = MakeClip(0.9, 1);
  const ftune::v1::ClassifyResponse by_grpc = GrpcPcm(clip);

  inference::ModelInferResponse raw;
  grpc::Status status = oip_stub_->ModelInfer(OipContext().get(), OipRequest(clip, true), &raw);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(raw.model_name(), "emotion");
  EXPECT_EQ(raw.model_version(), "1");
  EXPECT_EQ(raw.id(), "grpc-1");
  ASSERT_EQ(raw.outputs_size(), 2);
  EXPECT_EQ(raw.outputs(0).name(), "probabilities");
  EXPECT_THAT(raw.outputs(0).shape(), ::testing::ElementsAre(1, 3));
  ASSERT_EQ(raw.raw_output_contents_size(), 2);
  ASSERT_EQ(raw.raw_output_contents(0).size(), 12u);
  std::vector<float> p(3);
  std::memcpy(p.data(), raw.raw_output_contents(0).data(), 12);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(p[i], by_grpc.scores(i).probability());
  const std::string& labels = raw.raw_output_contents(1);
  EXPECT_EQ(labels.substr(4), by_grpc.label());
  EXPECT_EQ(static_cast<uint8_t>(labels[0]), by_grpc.label().size());

  inference::ModelInferResponse typed;
  ASSERT_TRUE(oip_stub_->ModelInfer(OipContext().get(), OipRequest(clip, false), &typed).ok());
  EXPECT_EQ(typed.raw_output_contents_size(), 0);
  ASSERT_EQ(typed.outputs(0).contents().fp32_contents_size(), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(typed.outputs(0).contents().fp32_contents(i), by_grpc.scores(i).probability());
  }
  EXPECT_EQ(typed.outputs(1).contents().bytes_contents(0), by_grpc.label());
}

TEST_F(RestApiTest, OipGrpcHealthMetadataAndErrors) {
  Start();
  inference::ServerLiveResponse live;
  ASSERT_TRUE(oip_stub_->ServerLive(OipContext().get(), {}, &live).ok());
  EXPECT_TRUE(live.live());
  inference::ServerReadyResponse ready;
  ASSERT_TRUE(oip_stub_->ServerReady(OipContext().get(), {}, &ready).ok());
  EXPECT_TRUE(ready.ready());
  inference::ServerMetadataResponse server;
  ASSERT_TRUE(oip_stub_->ServerMetadata(OipContext().get(), {}, &server).ok());
  EXPECT_EQ(server.name(), "ftserve");

  inference::ModelMetadataRequest metadata_request;
  metadata_request.set_name("emotion");
  inference::ModelMetadataResponse metadata;
  ASSERT_TRUE(oip_stub_->ModelMetadata(OipContext().get(), metadata_request, &metadata).ok());
  EXPECT_EQ(metadata.platform(), "ftune_hubert_classifier");
  ASSERT_EQ(metadata.inputs_size(), 1);
  EXPECT_EQ(metadata.inputs(0).name(), "waveform");
  ASSERT_EQ(metadata.outputs_size(), 2);
  EXPECT_THAT(metadata.outputs(0).shape(), ::testing::ElementsAre(-1, 3));

  inference::ModelReadyRequest model_ready;
  model_ready.set_name("missing");
  inference::ModelReadyResponse model_ready_response;
  EXPECT_EQ(
      oip_stub_->ModelReady(OipContext().get(), model_ready, &model_ready_response).error_code(),
      grpc::StatusCode::NOT_FOUND);

  inference::ModelInferRequest bad = OipRequest(MakeClip(0.5, 0), true);
  bad.mutable_inputs(0)->set_datatype("FP64");
  inference::ModelInferResponse response;
  grpc::Status status = oip_stub_->ModelInfer(OipContext().get(), bad, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("FP32"));
}

TEST_F(RestApiTest, OipGrpcBatchWithLengths) {
  Start();
  const std::vector<std::vector<float>> clips = {MakeClip(0.5, 0), MakeClip(0.8, 2)};
  std::vector<float> padded(clips[1].size() * 2, 0.0f);
  std::copy(clips[0].begin(), clips[0].end(), padded.begin());
  std::copy(clips[1].begin(), clips[1].end(), padded.begin() + clips[1].size());
  inference::ModelInferRequest request = OipRequest(padded, true);
  request.mutable_inputs(0)->set_shape(0, 2);
  request.mutable_inputs(0)->set_shape(1, static_cast<int64_t>(clips[1].size()));
  (*request.mutable_parameters())["lengths"].set_string_param(
      absl::StrCat(clips[0].size(), ",", clips[1].size()));
  inference::ModelInferResponse response;
  grpc::Status status = oip_stub_->ModelInfer(OipContext().get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<float> p(6);
  ASSERT_EQ(response.raw_output_contents(0).size(), 24u);
  std::memcpy(p.data(), response.raw_output_contents(0).data(), 24);
  for (int row = 0; row < 2; ++row) {
    const std::vector<float> expected = ReferenceProbabilities(dir_, clips[row]);
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(p[row * 3 + i], expected[i], 1e-4) << row;
  }
}

}  // namespace
}  // namespace ftune::serve
