// `ftworker bench`: times training steps of the real trainer on synthetic clips and prints
// samples/s (with --json, one object with at least samples_per_sec). With --inference it
// times forward passes as ftserve runs them (weights prepared once at the compute dtype,
// autocast on) and prints the median and p90 milliseconds per batch. With --world-size N it
// times data-parallel steps of N local ranks (batch size per rank) and prints their total
// samples/s.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "common/job_spec_flags.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "torch/csrc/autograd/profiler_legacy.h"
#include "torch/torch.h"
#include "worker/commands.h"
#include "worker/local_ranks.h"
#include "worker/data/audio.h"
#include "worker/model/checkpoint.h"
#include "worker/model/config.h"
#include "worker/model/device.h"
#include "worker/train/precision.h"
#include "worker/train/trainer.h"

namespace ftune::worker {
namespace {

struct BenchFlags {
  std::string model = "hubert-base";
  int batch_size = 4;
  double seconds = 3.0;
  int grad_accum = 1;
  std::string precision = "auto";
  int steps = 10;
  int warmup = 2;
  int threads = 0;
  int num_labels = 8;
  bool freeze_feature_encoder = true;
  // Time epochs 2+ of a real run: the frozen feature encoder's output is reused.
  bool reuse_features = false;
  std::string device = "cpu";
  // Chrome trace of the timed steps (chrome://tracing, bench/train/profile_summary.py).
  std::string profile;
  bool json = false;
  bool inference = false;
  int world_size = 1;
  LocalRankFlags ranks;
};

// Discards events: the benchmark prints its own figures.
class NullSink : public train::EventSink {
 public:
  void Emit(ftune::v1::JobEvent) override {}
};

absl::StatusOr<nlohmann::json> Bench(const BenchFlags& flags) {
  if (flags.batch_size < 1 || flags.grad_accum < 1 || flags.steps < 1 || flags.seconds <= 0 ||
      flags.num_labels < 2) {
    return absl::InvalidArgumentError(
        "--batch-size, --grad-accum, --steps must be >= 1, --seconds > 0, --labels >= 2");
  }
  auto precision = ParsePrecision(flags.precision);
  if (!precision.ok()) return precision.status();
  ftune::v1::JobSpec spec;
  spec.set_model(flags.model);
  spec.set_device(flags.ranks.rank >= 0 ? flags.ranks.rank_device : flags.device);
  spec.set_threads(flags.threads == 0 && flags.world_size > 1 && spec.device() == "cpu"
                       ? LocalRankThreads(flags.world_size)
                       : flags.threads);
  auto* t = spec.mutable_training();
  t->set_batch_size(flags.batch_size);
  t->set_grad_accum(flags.grad_accum);
  t->set_precision(*precision);
  t->set_freeze_feature_encoder(flags.freeze_feature_encoder);
  t->set_max_grad_norm(1.0);
  // The trainer needs somewhere for checkpoints; the benchmark never writes one.
  char tmpl[] = "/tmp/ftworker-bench-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return absl::InternalError("cannot create a temp folder");
  const std::string out_dir = tmpl;
  spec.set_output_dir(out_dir);
  auto config = train::ResolveTrainerConfig(spec);
  if (!config.ok()) return config.status();

  std::vector<std::string> labels;
  for (int i = 0; i < flags.num_labels; ++i) labels.push_back(fmt::format("class{}", i));
  auto loaded = model::LoadModel(flags.model, labels, 42);
  if (!loaded.ok()) return loaded.status();
  const std::string model_name = flags.model;
  data::Dataset dataset;
  dataset.labels = labels;
  // Only the label count and a non-empty training split matter: batches are made below.
  dataset.train.push_back(data::Clip{"synthetic", 0, "", flags.seconds});
  data::AudioCache audio;
  NullSink sink;
  train::CancelToken cancel;
  train::TrainerOptions options;
  options.resume = false;
  if (flags.ranks.rank >= 0) options.distributed = flags.ranks.Distributed(flags.world_size);
  auto trainer = train::Trainer::Create(*config, *std::move(loaded), std::move(dataset), &audio,
                                        &sink, &cancel, options);
  std::error_code ec;
  if (!trainer.ok()) {
    std::filesystem::remove_all(out_dir, ec);
    return trainer.status();
  }

  // Synthetic clips: normalised noise of the requested length, random labels.
  torch::manual_seed(0);
  const int64_t samples = static_cast<int64_t>(flags.seconds * data::kSampleRate);
  std::vector<data::Batch> batches;
  for (int i = 0; i < flags.grad_accum; ++i) {
    data::Batch b;
    b.audio = torch::randn({flags.batch_size, samples});
    b.lengths = torch::full({flags.batch_size}, samples, torch::kLong);
    b.labels = torch::randint(flags.num_labels, {flags.batch_size}, torch::kLong);
    for (int k = 0; k < flags.batch_size; ++k) {
      b.clip_indices.push_back(static_cast<int64_t>(i) * flags.batch_size + k);
    }
    batches.push_back(std::move(b));
  }
  for (int i = 0; i < flags.warmup; ++i) {
    auto stats = (*trainer)->TrainStep(batches, flags.reuse_features);
    if (!stats.ok()) return stats.status();
  }
  std::optional<torch::autograd::profiler::RecordProfile> profiler;
  if (!flags.profile.empty()) profiler.emplace(flags.profile);
  const auto start = std::chrono::steady_clock::now();
  double loss = 0;
  std::vector<double> step_seconds;
  for (int i = 0; i < flags.steps; ++i) {
    const auto step_start = std::chrono::steady_clock::now();
    auto stats = (*trainer)->TrainStep(batches, flags.reuse_features);
    if (!stats.ok()) return stats.status();
    loss = stats->loss;
    step_seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count());
  }
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // The median step resists the occasional stall of a shared host better than the mean.
  std::sort(step_seconds.begin(), step_seconds.end());
  const size_t mid = step_seconds.size() / 2;
  const double median = step_seconds.size() % 2 == 1
                            ? step_seconds[mid]
                            : (step_seconds[mid - 1] + step_seconds[mid]) / 2;
  profiler.reset();  // writes the trace
  std::filesystem::remove_all(out_dir, ec);
  const double clips = static_cast<double>(flags.steps) * flags.batch_size * flags.grad_accum *
                       flags.world_size;
  return nlohmann::json{
      {"model", model_name},
      {"world_size", flags.world_size},
      {"batch_size", flags.batch_size},
      {"seconds", flags.seconds},
      {"grad_accum", flags.grad_accum},
      {"precision", flags.precision},
      {"reuse_features", flags.reuse_features},
      {"threads", at::get_num_threads()},
      {"steps", flags.steps},
      {"step_ms", 1000.0 * elapsed / flags.steps},
      {"step_ms_median", 1000.0 * median},
      {"samples_per_sec", clips / elapsed},
      {"final_loss", loss},
  };
}

// Forward passes of one batch of synthetic clips, as ftserve serves them.
absl::StatusOr<nlohmann::json> InferenceBench(const BenchFlags& flags) {
  if (flags.batch_size < 1 || flags.steps < 1 || flags.seconds <= 0 || flags.num_labels < 2) {
    return absl::InvalidArgumentError(
        "--batch-size and --steps must be >= 1, --seconds > 0, --labels >= 2");
  }
  ASSIGN_OR_RETURN(torch::Device device, model::ParseDevice(flags.device));
  ASSIGN_OR_RETURN(train::RequestedPrecision requested,
                   train::ParseRequestedPrecision(flags.precision));
  ASSIGN_OR_RETURN(train::PrecisionChoice choice,
                   train::ChoosePrecision(requested, device.is_cuda(), train::HostCpuFeatures(),
                                          /*cuda_bf16=*/device.is_cuda()));
  model::SetIntraOpThreads(flags.threads);
  std::vector<std::string> labels;
  for (int i = 0; i < flags.num_labels; ++i) labels.push_back(fmt::format("class{}", i));
  ASSIGN_OR_RETURN(model::LoadedModel loaded, model::LoadModel(flags.model, labels, 42));
  model::HubertForSequenceClassification net = loaded.model;
  const bool reduced = choice.dtype != train::ComputeDtype::kFp32;
  std::vector<double> ms;
  try {
    net->to(device);
    net->eval();
    if (reduced) net->prepare_for_inference(train::TorchDtype(choice.dtype));
    torch::manual_seed(0);
    const int64_t samples = static_cast<int64_t>(flags.seconds * data::kSampleRate);
    const torch::Tensor audio = torch::randn({flags.batch_size, samples}).to(device);
    torch::NoGradGuard no_grad;
    std::optional<torch::autograd::profiler::RecordProfile> profiler;
    for (int i = 0; i < flags.warmup + flags.steps; ++i) {
      if (i == flags.warmup && !flags.profile.empty()) profiler.emplace(flags.profile);
      const auto start = std::chrono::steady_clock::now();
      model::AutocastGuard autocast(device, reduced);
      torch::Tensor probabilities = torch::softmax(net->forward(audio, {}).to(torch::kFloat), -1).cpu();
      if (i >= flags.warmup) {
        ms.push_back(1000 * std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
                                .count());
      }
    }
    profiler.reset();  // writes the trace
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("forward pass failed: ", e.what_without_backtrace()));
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  const double p90 = ms[std::min(ms.size() - 1, static_cast<size_t>(0.9 * (ms.size() - 1) + 0.5))];
  return nlohmann::json{
      {"model", flags.model},
      {"batch_size", flags.batch_size},
      {"seconds", flags.seconds},
      {"precision", train::ComputeDtypeName(choice.dtype)},
      {"device", device.str()},
      {"threads", at::get_num_threads()},
      {"steps", flags.steps},
      {"ms_median", median},
      {"ms_p90", p90},
      {"clips_per_sec", 1000.0 * flags.batch_size / median},
  };
}

int RunBench(const BenchFlags& flags) {
  LogConfig log{.level = "warn", .file = "", .name = "ftworker"};
  if (absl::Status s = SetUpLogging(log); !s.ok()) return 2;
  if (flags.world_size > 1 && flags.inference) {
    std::cerr << "ftworker bench: --world-size is for training steps, not --inference\n";
    return 2;
  }
  if (flags.world_size > 1 && flags.ranks.rank < 0) {
    return LaunchLocalRanks(flags.ranks, flags.world_size, flags.device);
  }
  auto result = flags.inference ? InferenceBench(flags) : Bench(flags);
  if (!result.ok()) {
    std::cerr << "ftworker bench: " << result.status().message() << "\n";
    return result.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  if (flags.ranks.rank > 0) return 0;  // rank 0 reports for all
  if (flags.json) {
    std::cout << result->dump() << std::endl;
  } else if (flags.inference) {
    std::cout << fmt::format(
        "{} inference batch {} x {:.1f}s {} on {} threads {}: median {:.1f} ms, p90 {:.1f} ms "
        "({:.2f} clips/s over {} passes)\n",
        (*result)["model"].get<std::string>(), flags.batch_size, flags.seconds,
        (*result)["precision"].get<std::string>(), (*result)["device"].get<std::string>(),
        (*result)["threads"].get<int>(), (*result)["ms_median"].get<double>(),
        (*result)["ms_p90"].get<double>(), (*result)["clips_per_sec"].get<double>(), flags.steps);
  } else {
    std::cout << fmt::format(
        "{} batch {} x {:.1f}s accum {}{} precision {} threads {}: {:.2f} samples/s "
        "({:.0f} ms/step over {} steps)\n",
        (*result)["model"].get<std::string>(), flags.batch_size, flags.seconds, flags.grad_accum,
        flags.world_size > 1 ? fmt::format(" x {} ranks", flags.world_size) : "",
        flags.precision, (*result)["threads"].get<int>(),
        (*result)["samples_per_sec"].get<double>(), (*result)["step_ms"].get<double>(),
        flags.steps);
  }
  return 0;
}

}  // namespace

void AddBenchCommand(CLI::App& app, int* exit_code);
FTWORKER_COMMAND("bench", AddBenchCommand);

void AddBenchCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<BenchFlags>();
  CLI::App* cmd = app.add_subcommand("bench", "Time training steps on synthetic clips");
  cmd->add_option("--model", flags->model, "Preset or Hugging Face folder")->capture_default_str();
  cmd->add_option("--batch-size", flags->batch_size, "Clips per forward pass")
      ->capture_default_str();
  cmd->add_option("--seconds", flags->seconds, "Clip length")->capture_default_str();
  cmd->add_option("--grad-accum", flags->grad_accum, "Forward passes per optimizer step")
      ->capture_default_str();
  cmd->add_option("--precision", flags->precision, "auto|fp32|fp16|bf16")->capture_default_str();
  cmd->add_option("--steps", flags->steps, "Timed optimizer steps")->capture_default_str();
  cmd->add_option("--warmup", flags->warmup, "Untimed steps first")->capture_default_str();
  cmd->add_option("--threads", flags->threads, "Intra-op threads (0 = all cores)")
      ->capture_default_str();
  cmd->add_option("--labels", flags->num_labels, "Number of classes")->capture_default_str();
  cmd->add_option("--freeze-feature-encoder", flags->freeze_feature_encoder, "true|false")
      ->capture_default_str();
  cmd->add_flag("--reuse-features", flags->reuse_features,
                "Reuse the frozen feature encoder's output, as epochs 2+ of a job do");
  cmd->add_option("--device", flags->device, "cpu|cuda|cuda:N")->capture_default_str();
  cmd->add_option("--profile", flags->profile,
                  "Write a Chrome trace of the timed steps (or passes) to this file (timings "
                  "include the profiler's overhead)");
  cmd->add_flag("--inference", flags->inference,
                "Time forward passes as ftserve runs them instead of training steps (--steps "
                "passes after --warmup)");
  cmd->add_option("--world-size", flags->world_size,
                  "Data-parallel ranks started on this machine (batch size per rank)")
      ->capture_default_str();
  flags->ranks.AddTo(cmd);
  cmd->add_flag("--json", flags->json, "Print one JSON object");
  cmd->callback([flags, exit_code] { *exit_code = RunBench(*flags); });
}

}  // namespace ftune::worker
