// Serving benchmark: p50/p99 latency and throughput of Classify through gRPC on loopback at
// several client concurrencies, per model preset and precision, with dynamic batching on.
// For hubert-base it also runs the torchaudio reference forward (batch 1, fp32) in the same
// run for comparison. Prints figures; it is not a test.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/grpc_server.h"
#include "ftune/v1/inference.grpc.pb.h"
#include "server/serve/inference_engine.h"
#include "server/serve/inference_service.h"
#include "worker/model/checkpoint.h"

namespace {

struct Flags {
  std::string models = "tiny,hubert-base";
  std::string precisions = "fp32,bf16";
  std::string concurrency = "1,8,32";
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

int Run(const Flags& flags) {
  const std::vector<std::string> models = absl::StrSplit(flags.models, ',');
  const std::vector<std::string> precisions = absl::StrSplit(flags.precisions, ',');
  std::vector<int> levels;
  for (absl::string_view c : absl::StrSplit(flags.concurrency, ',')) {
    levels.push_back(std::stoi(std::string(c)));
  }
  const std::string root =
      (std::filesystem::temp_directory_path() / absl::StrCat("ftune-serve-bench-", getpid())).string();
  std::printf("ftserve benchmark: %.1f s clips, max_batch %d, max_delay %.1f ms, %d requests per level\n",
              flags.seconds, flags.max_batch, flags.max_delay_ms, flags.requests);
  std::printf("%-12s %-5s %5s %10s %10s %10s\n", "model", "prec", "conc", "p50 ms", "p99 ms", "req/s");
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
      auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
      auto stub = ftune::v1::InferenceService::NewStub(channel);
      const std::vector<float> clip = Clip(flags.seconds, 0);
      ftune::v1::ClassifyRequest request;
      request.mutable_pcm()->set_sample_rate(16000);
      *request.mutable_pcm()->mutable_samples() = {clip.begin(), clip.end()};
      {  // warm-up
        grpc::ClientContext context;
        ftune::v1::ClassifyResponse response;
        stub->Classify(&context, request, &response);
      }
      for (int level : levels) {
        const int per_client = std::max(1, flags.requests / level);
        std::vector<std::vector<double>> latencies(level);
        std::vector<int> errors(level, 0);
        const absl::Time start = absl::Now();
        std::vector<std::thread> clients;
        for (int c = 0; c < level; ++c) {
          clients.emplace_back([&, c] {
            for (int k = 0; k < per_client; ++k) {
              grpc::ClientContext context;
              ftune::v1::ClassifyResponse response;
              const absl::Time t0 = absl::Now();
              if (!stub->Classify(&context, request, &response).ok()) ++errors[c];
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
        std::printf("%-12s %-5s %5d %10.1f %10.1f %10.2f%s\n", preset.c_str(), precision.c_str(),
                    level, Percentile(all, 0.5), Percentile(all, 0.99), all.size() / wall,
                    failed ? absl::StrCat("  (", failed, " failed)").c_str() : "");
        std::fflush(stdout);
      }
      (*server)->Shutdown(absl::Seconds(1));
      (*engine)->Shutdown();
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
  app.add_option("--requests", flags.requests, "Requests per concurrency level")->capture_default_str();
  app.add_option("--seconds", flags.seconds, "Clip length")->capture_default_str();
  app.add_option("--max-batch", flags.max_batch, "Dynamic batch size")->capture_default_str();
  app.add_option("--max-delay-ms", flags.max_delay_ms, "Batching delay")->capture_default_str();
  app.add_option("--threads", flags.threads, "Intra-op threads (0 = all cores)")->capture_default_str();
  app.add_flag("!--no-reference", flags.reference, "Skip the torchaudio reference run");
  CLI11_PARSE(app, argc, argv);
  return Run(flags);
}
