// Forward latency of a random-init hubert-base on 3 s clips (batch 1 and 8, fp32 and CPU
// bf16 autocast), next to the torchaudio peer (hubert_reference_bench.py) run in the same
// invocation, with speedups (torchaudio ms / ftune ms: > 1 means ftune is faster), then the
// matrix-product floor of the forward pass on this host (matrix_floor.py). Prints figures only.
//   model_hubert_bench [--threads N] [--iters-b1 K] [--iters-b8 K] [--no-reference]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "CLI/CLI.hpp"
#include "nlohmann/json.hpp"
#include "worker/model/checkpoint.h"
#include "worker/model/device.h"

namespace {

using Clock = std::chrono::steady_clock;

double MedianSeconds(const std::function<void()>& fn, int iters) {
  fn();  // warm-up
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    const auto start = Clock::now();
    fn();
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

std::string RunCapture(const std::string& command) {
  std::string out;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  if (!pipe) return out;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe.get())) > 0) out.append(buffer, n);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hubert-base forward latency, ftune vs torchaudio"};
  int threads = 2, iters_b1 = 3, iters_b8 = 1;
  bool no_reference = false;
  std::string script = FTUNE_HUBERT_REFERENCE_BENCH;
  app.add_option("--threads", threads, "intra-op threads for both implementations");
  app.add_option("--iters-b1", iters_b1, "timed iterations at batch 1 (after one warm-up)")
      ->check(CLI::PositiveNumber);
  app.add_option("--iters-b8", iters_b8, "timed iterations at batch 8 (after one warm-up)")
      ->check(CLI::PositiveNumber);
  app.add_option("--reference-script", script, "torchaudio peer script");
  app.add_flag("--no-reference", no_reference, "skip the torchaudio peer");
  CLI11_PARSE(app, argc, argv);

  torch::set_num_threads(threads);
  auto loaded = ftune::model::LoadModel("hubert-base", {"a", "b", "c", "d"}, 0);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.status().ToString().c_str());
    return 1;
  }
  auto& model = loaded->model;
  model->eval();
  const int64_t samples = 3 * 16000;

  std::map<std::string, double> ours;
  for (int batch : {1, 8}) {
    torch::Tensor x = torch::randn({batch, samples});
    const int iters = batch == 1 ? iters_b1 : iters_b8;
    torch::NoGradGuard no_grad;
    ours["fp32_b" + std::to_string(batch)] = MedianSeconds([&] { model->forward(x, {}); }, iters);
    ours["bf16_b" + std::to_string(batch)] = MedianSeconds(
        [&] {
          ftune::model::AutocastGuard autocast(torch::Device(torch::kCPU), true);
          model->forward(x, {});
        },
        iters);
  }
  // Served as ftserve serves it: weights converted once (prepare_for_inference), autocast on.
  model->prepare_for_inference(torch::kBFloat16);
  for (int batch : {1, 8}) {
    torch::Tensor x = torch::randn({batch, samples});
    const int iters = batch == 1 ? iters_b1 : iters_b8;
    torch::NoGradGuard no_grad;
    ours["bf16served_b" + std::to_string(batch)] = MedianSeconds(
        [&] {
          ftune::model::AutocastGuard autocast(torch::Device(torch::kCPU), true);
          model->forward(x, {});
        },
        iters);
  }

  nlohmann::json ref;
  if (!no_reference) {
    const std::string out = RunCapture("/usr/bin/python3 " + script + " --threads " + std::to_string(threads) +
                                       " --iters-b1 " + std::to_string(iters_b1) + " --iters-b8 " +
                                       std::to_string(iters_b8));
    ref = nlohmann::json::parse(out, nullptr, false);
    if (ref.is_discarded()) {
      std::fprintf(stderr, "reference peer failed: %s\n", out.c_str());
      ref = nlohmann::json();
    }
  }

  std::printf("hubert-base forward, 3 s clip (48000 samples), %d threads, median ms per batch\n", threads);
  std::printf("%-14s %10s %14s %8s %14s\n", "case", "ftune ms", "torchaudio ms", "speedup", "ftune clips/s");
  for (const char* key :
       {"fp32_b1", "bf16_b1", "bf16served_b1", "fp32_b8", "bf16_b8", "bf16served_b8"}) {
    const double ms = ours[key] * 1000;
    const int batch = std::string(key).back() == '8' ? 8 : 1;
    std::string ref_ms = "-", speedup = "-";
    if (ref.is_object() && ref["results"].contains(key) && ref["results"][key].is_number()) {
      const double r = ref["results"][key].get<double>() * 1000;
      ref_ms = std::to_string(static_cast<int>(r + 0.5));
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%.2fx", r / ms);
      speedup = buf;
    } else if (ref.is_object() && ref["errors"].contains(key)) {
      ref_ms = "fails";
    }
    std::printf("%-14s %10.1f %14s %8s %14.2f\n", key, ms, ref_ms.c_str(), speedup.c_str(), batch / ours[key]);
  }
  if (ref.is_object()) {
    for (const auto& [key, error] : ref["errors"].items()) {
      std::printf("torchaudio %s: %s\n", key.c_str(), error.get<std::string>().c_str());
    }
  }
  if (!no_reference) {
    // What no implementation of these matrix products can beat on this host, measured now.
    std::fputs(RunCapture("/usr/bin/python3 " + std::string(FTUNE_MATRIX_FLOOR) + " --mode infer --threads " +
                          std::to_string(threads))
                   .c_str(),
               stdout);
  }
  return 0;
}
