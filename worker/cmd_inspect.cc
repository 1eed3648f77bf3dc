// `ftworker inspect DIR`: what a dataset folder holds and what is wrong with it, before any
// job runs — counts per class, speaker and split, durations, formats, and every skipped file
// with its reason. Exit code 0 when the dataset can be trained on, 1 when it cannot (the
// reason is printed), 2 when it cannot be read at all.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/logging.h"
#include "fmt/format.h"
#include "worker/commands.h"
#include "worker/data/dataset.h"
#include "worker/data/summary_json.h"

namespace ftune::worker {
namespace {

struct InspectFlags {
  std::string path;
  std::string layout = "auto";
  std::string split = "auto";
  double eval_fraction = 0.2;
  bool include_song = false;
  std::string labels;
  uint64_t seed = 42;
  int threads = 0;
  bool json = false;
};

void PrintText(const ftune::v1::DatasetSummary& s, const std::vector<std::string>& labels) {
  fmt::print("dataset {}\nlayout {}, split {}\n", s.path(), s.layout(), s.split());
  fmt::print("files: {} total, {} usable, {} skipped\n", s.total_files(), s.usable_files(),
             s.skipped_size());
  if (s.usable_files() > 0) {
    fmt::print("duration: min {:.2f} s, median {:.2f} s, max {:.2f} s, total {:.1f} s\n",
               s.min_seconds(), s.median_seconds(), s.max_seconds(), s.total_seconds());
    std::map<uint32_t, uint32_t> rates(s.sample_rates().begin(), s.sample_rates().end());
    std::map<uint32_t, uint32_t> channels(s.channels().begin(), s.channels().end());
    std::vector<std::string> parts;
    for (const auto& [rate, n] : rates) parts.push_back(fmt::format("{} Hz x{}", rate, n));
    fmt::print("sample rates: {}\n", absl::StrJoin(parts, ", "));
    parts.clear();
    for (const auto& [c, n] : channels) parts.push_back(fmt::format("{} ch x{}", c, n));
    fmt::print("channels: {}\n", absl::StrJoin(parts, ", "));
  }
  auto count = [](const auto& map, const std::string& key) -> uint32_t {
    auto it = map.find(key);
    return it == map.end() ? 0 : it->second;
  };
  fmt::print("\nclasses ({}):\n  {:<20} {:>6} {:>6} {:>6}\n", labels.size(), "label", "all",
             "train", "eval");
  for (const auto& label : labels) {
    fmt::print("  {:<20} {:>6} {:>6} {:>6}\n", label, count(s.classes(), label),
               count(s.train_classes(), label), count(s.eval_classes(), label));
  }
  if (s.speakers_size() > 0) {
    std::map<std::string, uint32_t> speakers(s.speakers().begin(), s.speakers().end());
    std::set<std::string> eval(s.eval_speakers().begin(), s.eval_speakers().end());
    std::set<std::string> train(s.train_speakers().begin(), s.train_speakers().end());
    fmt::print("\nspeakers ({}):\n", speakers.size());
    for (const auto& [speaker, n] : speakers) {
      const char* where = train.count(speaker) && eval.count(speaker) ? "train+eval"
                          : eval.count(speaker)                      ? "eval"
                                                                     : "train";
      fmt::print("  {:<20} {:>6}  {}\n", speaker, n, where);
    }
  }
  fmt::print("\nsplits: train {} files", s.train_files());
  if (s.train_speakers_size() > 0) fmt::print(" ({} speakers)", s.train_speakers_size());
  fmt::print(", eval {} files", s.eval_files());
  if (s.eval_speakers_size() > 0) {
    fmt::print(" (speakers {})", absl::StrJoin(s.eval_speakers(), ", "));
  }
  fmt::print("\n");
  if (s.skipped_size() > 0) {
    fmt::print("\nskipped ({}):\n", s.skipped_size());
    for (const auto& f : s.skipped()) fmt::print("  {}: {}\n", f.path(), f.reason());
  }
}

int Inspect(const InspectFlags& flags) {
  ftune::v1::DatasetSpec spec;
  spec.set_path(flags.path);
  static const std::map<std::string, ftune::v1::DatasetLayout> kLayouts = {
      {"auto", ftune::v1::DATASET_LAYOUT_AUTO},
      {"ravdess", ftune::v1::DATASET_LAYOUT_RAVDESS},
      {"folders", ftune::v1::DATASET_LAYOUT_FOLDERS},
      {"manifest", ftune::v1::DATASET_LAYOUT_MANIFEST}};
  static const std::map<std::string, ftune::v1::SplitStrategy> kSplits = {
      {"auto", ftune::v1::SPLIT_STRATEGY_AUTO},
      {"speaker", ftune::v1::SPLIT_STRATEGY_SPEAKER},
      {"random", ftune::v1::SPLIT_STRATEGY_RANDOM},
      {"manifest", ftune::v1::SPLIT_STRATEGY_MANIFEST}};
  spec.set_layout(kLayouts.at(flags.layout));
  spec.set_split(kSplits.at(flags.split));
  spec.set_eval_fraction(flags.eval_fraction);
  spec.set_include_song(flags.include_song);
  std::vector<std::string> labels;
  if (!flags.labels.empty()) labels = absl::StrSplit(flags.labels, ',');

  data::AudioCache cache(/*max_memory_bytes=*/64 << 20);
  auto dataset = data::ScanDataset(spec, labels, flags.seed, &cache, flags.threads);
  if (!dataset.ok()) {
    if (flags.json) {
      std::cout << nlohmann::json{{"ok", false},
                                  {"error", std::string(dataset.status().message())}}
                       .dump(2)
                << "\n";
    } else {
      std::cerr << "ftworker inspect: " << dataset.status().message() << "\n";
    }
    return 2;
  }
  const absl::Status valid = data::ValidateDataset(*dataset);
  if (flags.json) {
    nlohmann::json out = data::SummaryToJson(dataset->summary);
    out["ok"] = valid.ok();
    out["error"] = valid.ok() ? nlohmann::json(nullptr) : nlohmann::json(valid.message());
    std::cout << out.dump(2) << "\n";
  } else {
    PrintText(dataset->summary, dataset->labels);
    if (!valid.ok()) fmt::print("\nnot usable for training: {}\n", valid.message());
  }
  return valid.ok() ? 0 : 1;
}

}  // namespace

void AddInspectCommand(CLI::App& app, int* exit_code);
FTWORKER_COMMAND("inspect", AddInspectCommand);

void AddInspectCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<InspectFlags>();
  CLI::App* cmd = app.add_subcommand(
      "inspect", "Show what a dataset folder holds: classes, speakers, splits, skipped files");
  cmd->add_option("DIR", flags->path, "Dataset folder (or CSV manifest)")->required();
  cmd->add_option("--layout", flags->layout, "Dataset layout")
      ->check(CLI::IsMember({"auto", "ravdess", "folders", "manifest"}))
      ->capture_default_str();
  cmd->add_option("--split", flags->split, "Train/eval split strategy")
      ->check(CLI::IsMember({"auto", "speaker", "random", "manifest"}))
      ->capture_default_str();
  cmd->add_option("--eval-fraction", flags->eval_fraction,
                  "Fraction of clips (or speakers) held out for evaluation")
      ->check(CLI::Range(0.0, 0.99))
      ->capture_default_str();
  cmd->add_flag("--include-song", flags->include_song, "RAVDESS: also use song recordings");
  cmd->add_option("--labels", flags->labels,
                  "Comma-separated label set and order (default: the labels found)");
  cmd->add_option("--seed", flags->seed, "Seed of the split")->capture_default_str();
  cmd->add_option("--threads", flags->threads, "Decoding threads (0 = all cores)")
      ->capture_default_str();
  cmd->add_flag("--json", flags->json, "Print one JSON object instead of text");
  cmd->callback([flags, exit_code] { *exit_code = Inspect(*flags); });
}

}  // namespace ftune::worker
