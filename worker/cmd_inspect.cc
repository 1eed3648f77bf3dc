// `ftworker inspect DIR [DIR...]`: what a dataset folder holds and what is wrong with it,
// before any job runs — the layout it was read as, counts per class, speaker and split,
// durations, formats, and every skipped file with its reason; several folders are read as the
// corpora of one multi-corpus job (--label-map as in a job). Exit code 0 when the dataset can
// be trained on, 1 when it cannot (the reason is printed), 2 when it cannot be read at all.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/job_spec.h"
#include "common/job_spec_flags.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "fmt/format.h"
#include "worker/commands.h"
#include "worker/data/dataset.h"
#include "worker/data/summary_json.h"

namespace ftune::worker {
namespace {

struct InspectFlags {
  std::vector<std::string> paths;
  std::vector<std::string> layouts;
  std::vector<std::string> splits;
  std::vector<std::string> eval_fractions;
  bool include_song = false;
  std::string labels;
  std::vector<std::string> label_map;
  uint64_t seed = 42;
  int threads = 0;
  bool json = false;
};

void PrintText(const ftune::v1::DatasetSummary& s, const std::vector<std::string>& labels) {
  fmt::print("dataset {}\nlayout {}, split {}\n", s.path(), s.layout(), s.split());
  for (const auto& corpus : s.corpora()) {
    fmt::print("  corpus {}: {} (layout {}, split {}): {} usable of {} files, {} train / {} eval\n",
               corpus.tag(), corpus.path(), corpus.layout(), corpus.split(), corpus.usable_files(),
               corpus.total_files(), corpus.train_files(), corpus.eval_files());
  }
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

// The datasets the flags name, as the dataset part of a JobSpec (the rules of job flags: a
// per-dataset flag is given once or once per folder).
absl::StatusOr<ftune::v1::JobSpec> DatasetsFromFlags(const InspectFlags& flags) {
  ftune::v1::JobSpec spec;
  SetDatasetPaths(flags.paths, &spec);
  if (!flags.layouts.empty()) {
    RETURN_IF_ERROR(ApplyPerDataset("--layout", flags.layouts, &spec, &SetDatasetLayout));
  }
  if (!flags.splits.empty()) {
    RETURN_IF_ERROR(ApplyPerDataset("--split", flags.splits, &spec, &SetDatasetSplit));
  }
  if (!flags.eval_fractions.empty()) {
    RETURN_IF_ERROR(
        ApplyPerDataset("--eval-fraction", flags.eval_fractions, &spec, &SetDatasetEvalFraction));
  }
  spec.mutable_dataset()->set_include_song(flags.include_song);
  for (auto& d : *spec.mutable_extra_datasets()) d.set_include_song(flags.include_song);
  if (!flags.labels.empty()) {
    for (absl::string_view label : absl::StrSplit(flags.labels, ',')) {
      spec.add_labels(std::string(label));
    }
  }
  ASSIGN_OR_RETURN(auto label_map, ParseLabelMap(flags.label_map));
  spec.mutable_label_map()->insert(label_map.begin(), label_map.end());
  RETURN_IF_ERROR(ValidateDatasets(spec));
  return spec;
}

int Inspect(const InspectFlags& flags) {
  auto fail = [&](const absl::Status& status) {
    if (flags.json) {
      std::cout << nlohmann::json{{"ok", false}, {"error", std::string(status.message())}}.dump(2)
                << "\n";
    } else {
      std::cerr << "ftworker inspect: " << status.message() << "\n";
    }
    return 2;
  };
  absl::StatusOr<ftune::v1::JobSpec> spec = DatasetsFromFlags(flags);
  if (!spec.ok()) return fail(spec.status());
  data::AudioCache cache(/*max_memory_bytes=*/64 << 20);
  auto dataset =
      data::ScanDataset(data::DatasetRequestFor(*spec, flags.seed), &cache, flags.threads);
  if (!dataset.ok()) return fail(dataset.status());
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
      "inspect",
      "Show what a dataset folder holds: layout, classes, speakers, splits, skipped files");
  cmd->add_option("DIR", flags->paths,
                  "Dataset folder (or CSV manifest); several = the corpora of one job")
      ->required();
  cmd->add_option("--layout", flags->layouts,
                  "auto|ravdess|folders|manifest|audiofolder|crema-d|tess|savee|emodb (once, or "
                  "once per DIR; default auto)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--split", flags->splits,
                  "auto|speaker|random|manifest (once, or once per DIR; default auto)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--eval-fraction", flags->eval_fractions,
                  "Share of clips (or speakers) held out for evaluation (once, or once per DIR; "
                  "default 0.2)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_flag("--include-song", flags->include_song, "RAVDESS: also use song recordings");
  cmd->add_option("--labels", flags->labels,
                  "Comma-separated label set and order (default: the labels found)");
  cmd->add_option("--label-map", flags->label_map,
                  "FROM=TO,... renames dataset labels before --labels, e.g. anger=angry")
      ->delimiter(',');
  cmd->add_option("--seed", flags->seed, "Seed of the split")->capture_default_str();
  cmd->add_option("--threads", flags->threads, "Decoding threads (0 = all cores)")
      ->capture_default_str();
  cmd->add_flag("--json", flags->json, "Print one JSON object instead of text");
  cmd->callback([flags, exit_code] { *exit_code = Inspect(*flags); });
}

}  // namespace ftune::worker
