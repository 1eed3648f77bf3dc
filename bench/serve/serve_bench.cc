// Serving benchmark: p50/p99 latency and throughput of classification on loopback at several
// client concurrencies, per model preset and precision, with dynamic batching on, through
// each protocol side by side over the same engine and the same clip:
//   grpc-pcm   ftune.v1 Classify with float samples       rest-oip  OIP v2 infer, JSON
//   grpc-wav   ftune.v1 Classify with the WAV file        rest-wav  POST :classify, WAV body
// Each REST client keeps its connection open, as gRPC's channel does. For hubert-base it
// also runs the torchaudio reference forward (batch 1, fp32) in the same run for comparison.
// Prints figures; it is not a test.
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/grpc_server.h"
#include "common/http_server.h"
#include "ftune/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/serve/inference_engine.h"
#include "server/serve/inference_service.h"
#include "server/serve/rest_api.h"
#include "tests/support/wav.h"
#include "worker/model/checkpoint.h"

namespace {

struct Flags {
  std::string models = "tiny,hubert-base";
  std::string precisions = "fp32,bf16";
  std::string concurrency = "1,8,32";
  std::string protocols = "grpc-pcm,grpc-wav,rest-oip,rest-wav";
  int requests = 64;
  double seconds = 3;
  int max_batch = 8;
  double max_delay_ms = 5;
  int threads = 0;
  bool reference = true;
};

const std::vector<std::string> kLabels = {"neutral", "calm",    "happy",   "sad",
                                          "angry",   "fearful", "disgust", "surprised"};

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))];
}

std::vector<float> Clip(double seconds, int variant) {
  std::vector<float> out(static_cast<size_t>(seconds * 16000));
  for (size_t i = 0; i < out.size(); ++i) {
    const double t = i / 16000.0;
    out[i] = static_cast<float>(0.3 * std::sin(2 * M_PI * (140 + 20 * variant) * t * (1 + 0.2 * t)));
  }
  return out;
}

// One client's way to classify the clip once (true when answered OK). Each client thread
// makes its own, so REST clients have a connection each.
using Call = std::function<bool()>;
using MakeCall = std::function<Call()>;

struct Endpoints {
  ftune::v1::InferenceService::Stub* stub;
  int http_port;
  std::string model;
};

MakeCall CallFor(const std::string& protocol, const Endpoints& at, const std::vector<float>& clip) {
  if (protocol == "grpc-pcm" || protocol == "grpc-wav") {
    auto request = std::make_shared<ftune::v1::ClassifyRequest>();
    if (protocol == "grpc-pcm") {
      request->mutable_pcm()->set_sample_rate(16000);
      *request->mutable_pcm()->mutable_samples() = {clip.begin(), clip.end()};
    } else {
      request->set_audio_file(ftune::testing::EncodeWav(clip, 16000));
    }
    return [stub = at.stub, request]() -> Call {
      return [stub, request] {
        grpc::ClientContext context;
        ftune::v1::ClassifyResponse response;
        return stub->Classify(&context, *request, &response).ok();
      };
    };
  }
  std::string path, body, type;
  if (protocol == "rest-oip") {
    nlohmann::json input = {{"name", "waveform"},
                            {"datatype", "FP32"},
                            {"shape", {1, clip.size()}},
                            {"data", clip},
                            {"parameters", {{"sample_rate", 16000}}}};
    body = nlohmann::json{{"inputs", nlohmann::json::array({input})}}.dump();
    path = "/v2/models/" + at.model + "/infer";
    type = "application/json";
  } else if (protocol == "rest-wav") {
    body = ftune::testing::EncodeWav(clip, 16000);
    path = "/v1/models/" + at.model + ":classify";
    type = "audio/wav";
  } else {
    return nullptr;
  }
  auto shared = std::make_shared<const std::array<std::string, 3>>(
      std::array<std::string, 3>{path, body, type});
  return [port = at.http_port, shared]() -> Call {
    auto client = std::make_shared<httplib::Client>("127.0.0.1", port);
    client->set_keep_alive(true);
    client->set_read_timeout(300, 0);
    return [client, shared] {
      httplib::Result result =
          client->Post((*shared)[0].c_str(), (*shared)[1], (*shared)[2].c_str());
      return result && result->status == 200;
    };
  };
}

int Run(const Flags& flags) {
  const std::vector<std::string> models = absl::StrSplit(flags.models, ',');
  const std::vector<std::string> precisions = absl::StrSplit(flags.precisions, ',');
  std::vector<int> levels;
  for (absl::string_view c : absl::StrSplit(flags.concurrency, ',')) {
    levels.push_back(std::stoi(std::string(c)));
  }
  const std::string root =
      (std::filesystem::temp_directory_path() / absl::StrCat("ftune-serve-bench-", getpid())).string();
  const std::vector<std::string> protocols = absl::StrSplit(flags.protocols, ',');
  std::printf("ftserve benchmark: %.1f s clips, max_batch %d, max_delay %.1f ms, %d requests per level\n",
              flags.seconds, flags.max_batch, flags.max_delay_ms, flags.requests);
  std::printf("%-12s %-5s %-9s %5s %10s %10s %10s\n", "model", "prec", "protocol", "conc", "p50 ms",
              "p99 ms", "req/s");
  for (const std::string& preset : models) {
    const std::string dir = root + "/" + preset;
    std::filesystem::create_directories(dir);
    auto loaded = ftune::model::LoadModel(preset, kLabels, 1);
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s: %s\n", preset.c_str(), std::string(loaded.status().message()).c_str());
      return 1;
    }
    if (auto s = ftune::model::SaveModelFolder(loaded->model, loaded->preprocessor, dir); !s.ok()) {
      std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
      return 1;
    }
    for (const std::string& precision : precisions) {
      ftune::serve::EngineOptions options;
      options.device = "cpu";
      options.precision = precision;
      options.max_batch = flags.max_batch;
      options.max_delay = absl::Microseconds(static_cast<int64_t>(flags.max_delay_ms * 1000));
      options.queue_limit = 4096;
      options.threads = flags.threads;
      auto engine = ftune::serve::InferenceEngine::Create(options, {{preset, dir}});
      if (!engine.ok()) {
        std::fprintf(stderr, "%s\n", std::string(engine.status().message()).c_str());
        return 1;
      }
      ftune::serve::InferenceServiceImpl service(engine->get(), {},
                                                 std::make_shared<const ftune::Authorizer>(nullptr));
      auto server = ftune::GrpcServer::Start({}, {&service});
      if (!server.ok()) return 1;
      ftune::serve::RestApi rest(engine->get(), {});
      auto http = ftune::HttpServer::Start({}, rest.Routes());
      if (!http.ok()) {
        std::fprintf(stderr, "%s\n", std::string(http.status().message()).c_str());
        return 1;
      }
      auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
      auto stub = ftune::v1::InferenceService::NewStub(channel);
      const std::vector<float> clip = Clip(flags.seconds, 0);
      const Endpoints endpoints{stub.get(), (*http)->port(), preset};
      for (const std::string& protocol : protocols) {
        MakeCall make_call = CallFor(protocol, endpoints, clip);
        if (!make_call) {
          std::fprintf(stderr, "unknown protocol '%s'\n", protocol.c_str());
          return 2;
        }
        make_call()();  // warm-up
        for (int level : levels) {
          const int per_client = std::max(1, flags.requests / level);
          std::vector<std::vector<double>> latencies(level);
          std::vector<int> errors(level, 0);
          const absl::Time start = absl::Now();
          std::vector<std::thread> clients;
          for (int c = 0; c < level; ++c) {
            clients.emplace_back([&, c] {
              Call call = make_call();
              for (int k = 0; k < per_client; ++k) {
                const absl::Time t0 = absl::Now();
                if (!call()) ++errors[c];
                latencies[c].push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
              }
            });
          }
          for (auto& t : clients) t.join();
          const double wall = absl::ToDoubleSeconds(absl::Now() - start);
          std::vector<double> all;
          int failed = 0;
          for (int c = 0; c < level; ++c) {
            all.insert(all.end(), latencies[c].begin(), latencies[c].end());
            failed += errors[c];
          }
          std::printf("%-12s %-5s %-9s %5d %10.1f %10.1f %10.2f%s\n", preset.c_str(),
                      precision.c_str(), protocol.c_str(), level, Percentile(all, 0.5),
                      Percentile(all, 0.99), all.size() / wall,
                      failed ? absl::StrCat("  (", failed, " failed)").c_str() : "");
          std::fflush(stdout);
        }
      }
      (*http)->Drain(absl::ZeroDuration());
      (*server)->Shutdown(absl::Seconds(1));
      (*engine)->Shutdown();
      (*http)->Stop();
    }
    if (preset == "hubert-base" && flags.reference) {
      const std::string command = absl::StrCat(
          "/usr/bin/python3 ", FTUNE_HUBERT_REFERENCE_BENCH, " --threads ",
          flags.threads > 0 ? flags.threads : static_cast<int>(std::thread::hardware_concurrency()),
          " --iters-b1 5 --iters-b8 1");
      std::printf("reference (torchaudio hubert-base forward, no serving): %s\n", command.c_str());
      std::fflush(stdout);
      if (std::system(command.c_str()) != 0) std::printf("reference run failed\n");
    }
  }
  std::filesystem::remove_all(root);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ftserve latency/throughput benchmark (prints figures)"};
  Flags flags;
  app.add_option("--models", flags.models, "Comma-separated presets")->capture_default_str();
  app.add_option("--precisions", flags.precisions, "fp32,bf16")->capture_default_str();
  app.add_option("--concurrency", flags.concurrency, "Client counts")->capture_default_str();
  app.add_option("--protocols", flags.protocols,
                 "grpc-pcm, grpc-wav (ftune gRPC), rest-oip (OIP JSON), rest-wav (:classify)")
      ->capture_default_str();
  app.add_option("--requests", flags.requests, "Requests per concurrency level")->capture_default_str();
  app.add_option("--seconds", flags.seconds, "Clip length")->capture_default_str();
  app.add_option("--max-batch", flags.max_batch, "Dynamic batch size")->capture_default_str();
  app.add_option("--max-delay-ms", flags.max_delay_ms, "Batching delay")->capture_default_str();
  app.add_option("--threads", flags.threads, "Intra-op threads (0 = all cores)")->capture_default_str();
  app.add_flag("!--no-reference", flags.reference, "Skip the torchaudio reference run");
  CLI11_PARSE(app, argc, argv);
  return Run(flags);
}
