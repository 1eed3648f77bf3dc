// The positional convolution (hubert-base: 768 channels, 16 groups, kernel 128) under bf16
// autocast: ftune's time-major GEMM form (worker/model/time_major_conv.h) against
// torch::conv1d (oneDNN; what torchaudio and Hugging Face run), forward alone and forward +
// backward. The two alternate iteration by iteration, so host drift hits both alike; medians.
//   model_positional_conv_bench [--threads N] [--batch-size B] [--frames T] [--iters K]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <tuple>
#include <vector>

#include <torch/torch.h>

#include "CLI/CLI.hpp"
#include "worker/model/device.h"
#include "worker/model/time_major_conv.h"

namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Seconds(const std::function<void()>& fn) {
  const auto start = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"positional convolution: GEMM form vs torch::conv1d, bf16 autocast"};
  int threads = 2, batch = 4, frames = 149, iters = 7;
  app.add_option("--threads", threads, "intra-op threads");
  app.add_option("--batch-size", batch, "clips")->check(CLI::PositiveNumber);
  app.add_option("--frames", frames, "frames per clip (149: 3 s)")->check(CLI::PositiveNumber);
  app.add_option("--iters", iters, "timed iterations of each (after one warm-up)")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(threads);

  const int64_t channels = 768, groups = 16, kernel = 128, pad = kernel / 2;
  torch::Tensor x = torch::randn({batch, frames, channels}).requires_grad_(true);
  torch::Tensor weight = (torch::randn({channels, channels / groups, kernel}) * 0.01).requires_grad_(true);
  torch::Tensor bias = torch::zeros({channels}).requires_grad_(true);
  torch::Tensor upstream = torch::randn({batch, frames, channels});

  auto conv1d = [&] {
    torch::Tensor y = torch::conv1d(x.transpose(1, 2), weight, bias, 1, pad, 1, groups);
    return y.slice(2, 0, frames).transpose(1, 2);
  };
  auto gemm = [&] { return ftune::model::GroupedConvTimeMajor(x, weight, bias, groups, pad, frames); };
  using Pass = std::function<void()>;
  auto forward = [](const std::function<torch::Tensor()>& f) -> Pass {
    return [f] {
      torch::NoGradGuard no_grad;
      ftune::model::AutocastGuard autocast(torch::Device(torch::kCPU), torch::kBFloat16);
      f();
    };
  };
  auto training = [&](const std::function<torch::Tensor()>& f) -> Pass {
    return [f, &upstream] {
      torch::Tensor y;
      {
        ftune::model::AutocastGuard autocast(torch::Device(torch::kCPU), torch::kBFloat16);
        y = f();
      }
      y.backward(upstream.to(y.scalar_type()));
    };
  };

  std::printf("positional conv, batch %d x %d frames, bf16 autocast, %d threads, median ms\n", batch,
              frames, threads);
  std::printf("%-18s %10s %10s %8s\n", "pass", "conv1d", "ftune", "speedup");
  for (const auto& [name, theirs, ours] :
       std::vector<std::tuple<const char*, Pass, Pass>>{
           {"forward", forward(conv1d), forward(gemm)},
           {"forward+backward", training(conv1d), training(gemm)}}) {
    theirs();
    ours();
    std::vector<double> a, b;
    for (int i = 0; i < iters; ++i) {
      a.push_back(Seconds(theirs));
      b.push_back(Seconds(ours));
    }
    std::printf("%-18s %10.1f %10.1f %7.2fx\n", name, Median(a) * 1000, Median(b) * 1000, Median(a) / Median(b));
  }
  return 0;
}
