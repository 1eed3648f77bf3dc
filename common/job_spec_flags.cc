#include "common/job_spec_flags.h"

#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <type_traits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/job_spec.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace ftune {

using v1::JobSpec;

namespace {

// An enum value name as typed: lower case, '-' between words ("crema-d"); '_' is accepted too.
std::string TypedName(const std::string& name) {
  std::string typed = absl::AsciiStrToLower(name);
  std::replace(typed.begin(), typed.end(), '_', '-');
  return typed;
}

// Matches `name` against the enum's value names without `prefix`, case-insensitively.
absl::StatusOr<int> ParseEnum(const google::protobuf::EnumDescriptor* descriptor,
                              const std::string& prefix, const std::string& flag,
                              const std::string& name) {
  std::vector<std::string> choices;
  const std::string wanted = TypedName(name);
  for (int i = 0; i < descriptor->value_count(); ++i) {
    std::string choice = descriptor->value(i)->name();
    if (absl::StartsWith(choice, prefix)) choice = choice.substr(prefix.size());
    choice = TypedName(choice);
    if (choice == "unspecified") continue;
    if (choice == wanted) return descriptor->value(i)->number();
    choices.push_back(choice);
  }
  return absl::InvalidArgumentError(
      absl::StrCat(flag, ": '", name, "' is not one of ", absl::StrJoin(choices, "|")));
}

template <typename Enum>
absl::StatusOr<Enum> ParseEnumAs(const google::protobuf::EnumDescriptor* descriptor,
                                 const std::string& prefix, const std::string& flag,
                                 const std::string& name) {
  ASSIGN_OR_RETURN(int v, ParseEnum(descriptor, prefix, flag, name));
  return static_cast<Enum>(v);
}

// "" (the flag given alone), true/false, 1/0, yes/no, on/off.
absl::StatusOr<bool> ParseBool(const std::string& flag, const std::string& text) {
  const std::string v = absl::AsciiStrToLower(text);
  if (v.empty() || v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return false;
  return absl::InvalidArgumentError(absl::StrCat(flag, ": '", text, "' is not true or false"));
}

// A plain (unquoted) YAML scalar as JSON: null, bool or number when it reads as one (YAML 1.2
// core schema), else a string. Quoted scalars are always strings.
nlohmann::json YamlScalarToJson(const YAML::Node& node) {
  const std::string& text = node.Scalar();
  if (node.Tag() == "!") return text;
  if (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL") {
    return nullptr;
  }
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  const char* begin = text.c_str();
  char* end = nullptr;
  errno = 0;
  const long long i = std::strtoll(begin, &end, 10);
  if (errno == 0 && end != begin && *end == '\0') return i;
  errno = 0;
  const double d = std::strtod(begin, &end);
  if (errno == 0 && end != begin && *end == '\0' && !absl::StartsWith(text, "0x") &&
      !absl::StartsWith(text, "0X")) {
    return d;
  }
  return text;
}

absl::StatusOr<nlohmann::json> YamlToJson(const YAML::Node& node, const std::string& where) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nlohmann::json(nullptr);
    case YAML::NodeType::Scalar:
      return YamlScalarToJson(node);
    case YAML::NodeType::Sequence: {
      nlohmann::json out = nlohmann::json::array();
      for (size_t i = 0; i < node.size(); ++i) {
        ASSIGN_OR_RETURN(nlohmann::json item,
                         YamlToJson(node[i], absl::StrCat(where, "[", i, "]")));
        out.push_back(std::move(item));
      }
      return out;
    }
    case YAML::NodeType::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& entry : node) {
        if (!entry.first.IsScalar()) {
          return absl::InvalidArgumentError(
              absl::StrCat(where.empty() ? "top level" : where, ": keys must be plain names"));
        }
        const std::string key = entry.first.Scalar();
        const std::string path = where.empty() ? key : absl::StrCat(where, ".", key);
        ASSIGN_OR_RETURN(nlohmann::json value, YamlToJson(entry.second, path));
        out[key] = std::move(value);
      }
      return out;
    }
  }
  return nlohmann::json(nullptr);
}

}  // namespace

absl::StatusOr<v1::DatasetLayout> ParseLayout(const std::string& name) {
  return ParseEnumAs<v1::DatasetLayout>(v1::DatasetLayout_descriptor(), "DATASET_LAYOUT_",
                                        "--layout", name);
}

absl::StatusOr<v1::SplitStrategy> ParseSplit(const std::string& name) {
  return ParseEnumAs<v1::SplitStrategy>(v1::SplitStrategy_descriptor(), "SPLIT_STRATEGY_",
                                        "--split", name);
}

absl::StatusOr<v1::Precision> ParsePrecision(const std::string& name) {
  return ParseEnumAs<v1::Precision>(v1::Precision_descriptor(), "PRECISION_", "--precision", name);
}

absl::StatusOr<v1::LrSchedule> ParseSchedule(const std::string& name) {
  return ParseEnumAs<v1::LrSchedule>(v1::LrSchedule_descriptor(), "LR_SCHEDULE_", "--schedule",
                                     name);
}

absl::StatusOr<v1::ReportTo> ParseReportTo(const std::string& name) {
  return ParseEnumAs<v1::ReportTo>(v1::ReportTo_descriptor(), "REPORT_TO_", "--report-to", name);
}

absl::StatusOr<std::map<std::string, std::string>> ParseLabelMap(
    const std::vector<std::string>& entries) {
  std::map<std::string, std::string> map;
  for (const std::string& entry : entries) {
    const size_t eq = entry.find('=');
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("--label-map: '", entry, "' is not FROM=TO (e.g. anger=angry)"));
    }
    const std::string from(absl::StripAsciiWhitespace(entry.substr(0, eq)));
    const std::string to(absl::StripAsciiWhitespace(entry.substr(eq + 1)));
    if (from.empty() || to.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--label-map: '", entry, "' needs a label on both sides of '='"));
    }
    auto [it, inserted] = map.emplace(from, to);
    if (!inserted && it->second != to) {
      return absl::InvalidArgumentError(
          absl::StrCat("--label-map: '", from, "' is mapped twice (", it->second, ", ", to, ")"));
    }
  }
  return map;
}

void SetDatasetPaths(const std::vector<std::string>& paths, JobSpec* spec) {
  if (paths.empty()) return;
  spec->mutable_dataset()->set_path(paths[0]);
  auto* extra = spec->mutable_extra_datasets();
  while (extra->size() > static_cast<int>(paths.size()) - 1) extra->RemoveLast();
  for (size_t i = 1; i < paths.size(); ++i) {
    v1::DatasetSpec* d =
        static_cast<int>(i) - 1 < extra->size() ? extra->Mutable(i - 1) : extra->Add();
    d->set_path(paths[i]);
  }
}

absl::Status SetDatasetLayout(const std::string& value, v1::DatasetSpec* dataset) {
  ASSIGN_OR_RETURN(v1::DatasetLayout layout, ParseLayout(value));
  dataset->set_layout(layout);
  return absl::OkStatus();
}

absl::Status SetDatasetSplit(const std::string& value, v1::DatasetSpec* dataset) {
  ASSIGN_OR_RETURN(v1::SplitStrategy split, ParseSplit(value));
  dataset->set_split(split);
  return absl::OkStatus();
}

absl::Status SetDatasetEvalFraction(const std::string& value, v1::DatasetSpec* dataset) {
  double fraction = 0;
  if (!absl::SimpleAtod(value, &fraction)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--eval-fraction: '", value, "' is not a number"));
  }
  dataset->set_eval_fraction(fraction);
  return absl::OkStatus();
}

absl::Status ApplyPerDataset(
    const std::string& flag, const std::vector<std::string>& values, JobSpec* spec,
    const std::function<absl::Status(const std::string&, v1::DatasetSpec*)>& set) {
  const size_t datasets = 1 + spec->extra_datasets_size();
  if (values.size() != 1 && values.size() != datasets) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": given ", values.size(), " times for ", datasets,
        " datasets; give it once (for every dataset) or once per --dataset, in the same order"));
  }
  for (size_t i = 0; i < datasets; ++i) {
    v1::DatasetSpec* d = i == 0 ? spec->mutable_dataset() : spec->mutable_extra_datasets(i - 1);
    RETURN_IF_ERROR(set(values.size() == 1 ? values[0] : values[i], d));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::JobState> ParseJobState(const std::string& name) {
  return ParseEnumAs<v1::JobState>(v1::JobState_descriptor(), "JOB_STATE_", "--state", name);
}

std::string JobStateName(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  if (absl::StartsWith(name, "JOB_STATE_")) name = name.substr(10);
  return absl::AsciiStrToLower(name);
}

absl::StatusOr<JobSpec> ParseJobSpecJson(const std::string& json) {
  JobSpec spec;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(json, &spec, options);
  if (!status.ok()) return absl::InvalidArgumentError(std::string(status.message()));
  return spec;
}

absl::StatusOr<JobSpec> ParseJobSpecYaml(const std::string& yaml) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("not YAML: ", e.what()));
  }
  if (!root.IsMap()) {
    return absl::InvalidArgumentError("a job spec is a mapping of field names to values");
  }
  ASSIGN_OR_RETURN(nlohmann::json json, YamlToJson(root, ""));
  std::string text;
  try {
    text = json.dump();
  } catch (const nlohmann::json::exception& e) {  // invalid UTF-8 (found by fuzzing)
    return absl::InvalidArgumentError(absl::StrCat("not a valid job spec: ", e.what()));
  }
  return ParseJobSpecJson(text);
}

absl::StatusOr<JobSpec> ReadJobSpecFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read spec file '", path, "'"));
  std::stringstream text;
  text << in.rdbuf();
  const std::string lower = absl::AsciiStrToLower(path);
  const bool yaml = absl::EndsWith(lower, ".yaml") || absl::EndsWith(lower, ".yml");
  absl::StatusOr<JobSpec> spec = yaml ? ParseJobSpecYaml(text.str()) : ParseJobSpecJson(text.str());
  if (!spec.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec file '", path, "': ", spec.status().message()));
  }
  return spec;
}

template <typename T, typename Set>
CLI::Option* JobSpecFlags::Add(CLI::App* cmd, const std::string& name, const std::string& help,
                               Set set) {
  auto value = std::make_shared<T>();
  CLI::Option* option = cmd->add_option(name, *value, help);
  if constexpr (!std::is_same_v<T, std::vector<std::string>>) {
    // A flag given twice: the last one wins, as in most tools.
    option->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
  setters_.emplace_back(option, [value, set](JobSpec* spec) -> absl::Status {
    if constexpr (std::is_same_v<decltype(set(*value, spec)), void>) {
      set(*value, spec);
      return absl::OkStatus();
    } else {
      return set(*value, spec);
    }
  });
  return option;
}

void JobSpecFlags::AddTo(CLI::App* cmd) {
  using T = v1::TrainingConfig;
  cmd->add_option("-f,--spec", spec_file_,
                  "JobSpec file, YAML (.yaml/.yml) or JSON, proto field names; flags override it");

  // A true/false flag: `--x`, `--x true`, `--x=false`.
  auto boolean = [this, cmd](const std::string& name, const std::string& help,
                             std::function<void(bool, JobSpec*)> set) {
    Add<std::string>(cmd, name, help,
                     [name, set](const std::string& v, JobSpec* s) -> absl::Status {
                       ASSIGN_OR_RETURN(bool b, ParseBool(name, v));
                       set(b, s);
                       return absl::OkStatus();
                     })
        ->expected(0, 1)
        ->type_name("[true|false]");
  };
  // An enum flag: `parse` turns the typed name into the value that `set` stores.
  auto enumerated = [this, cmd](const std::string& name, const std::string& help, auto parse,
                                auto set) {
    Add<std::string>(cmd, name, help, [parse, set](const std::string& v, JobSpec* s) {
      auto e = parse(v);
      if (!e.ok()) return e.status();
      set(*e, s);
      return absl::OkStatus();
    });
  };
  auto u32 = [this, cmd](const std::string& name, const std::string& help,
                         void (T::*set)(uint32_t)) {
    Add<uint32_t>(cmd, name, help,
                  [set](uint32_t v, JobSpec* s) { (s->mutable_training()->*set)(v); });
  };
  auto f64 = [this, cmd](const std::string& name, const std::string& help, void (T::*set)(double)) {
    Add<double>(cmd, name, help, [set](double v, JobSpec* s) { (s->mutable_training()->*set)(v); });
  };

  // A dataset flag: given once it applies to every --dataset, or once per --dataset in order.
  auto per_dataset = [this, cmd](
                         const std::string& name, const std::string& help,
                         std::function<absl::Status(const std::string&, v1::DatasetSpec*)> set) {
    Add<std::vector<std::string>>(cmd, name, help,
                                  [name, set](const std::vector<std::string>& v, JobSpec* s) {
                                    return ApplyPerDataset(name, v, s, set);
                                  })
        ->expected(1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  };

  cmd->option_defaults()->group("Job");
  // Dataset.
  Add<std::vector<std::string>>(
      cmd, "--dataset",
      "Dataset folder or manifest (on the worker); repeat it to train on several corpora",
      [](const std::vector<std::string>& v, JobSpec* s) { SetDatasetPaths(v, s); })
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  per_dataset("--layout",
              "auto|ravdess|folders|manifest|audiofolder|crema-d|tess|savee|emodb (once, or once "
              "per --dataset)",
              &SetDatasetLayout);
  per_dataset("--split", "auto|speaker|random|manifest (once, or once per --dataset)",
              &SetDatasetSplit);
  per_dataset("--eval-fraction",
              "Share held out for evaluation (default 0.2; once, or once per --dataset)",
              &SetDatasetEvalFraction);
  boolean("--include-song", "RAVDESS: also use the song recordings", [](bool v, JobSpec* s) {
    s->mutable_dataset()->set_include_song(v);
    for (v1::DatasetSpec& d : *s->mutable_extra_datasets()) d.set_include_song(v);
  });
  Add<std::vector<std::string>>(
      cmd, "--label-map",
      "FROM=TO,... renames dataset labels before --labels, e.g. anger=angry,fear=fearful",
      [](const std::vector<std::string>& v, JobSpec* s) -> absl::Status {
        ASSIGN_OR_RETURN(auto map, ParseLabelMap(v));
        s->clear_label_map();
        s->mutable_label_map()->insert(map.begin(), map.end());
        return absl::OkStatus();
      })
      ->delimiter(',');

  // Model and labels.
  Add<std::string>(cmd, "--model",
                   "Preset (tiny, hubert-base, hubert-large) or Hugging Face folder",
                   [](const std::string& v, JobSpec* s) { s->set_model(v); });
  Add<std::vector<std::string>>(cmd, "--labels",
                                "Label set and order, comma-separated (default: from the dataset)",
                                [](const std::vector<std::string>& v, JobSpec* s) {
                                  s->clear_labels();
                                  for (const std::string& label : v) s->add_labels(label);
                                })
      ->delimiter(',');

  // Training.
  u32("--epochs", "Passes over the training set (default 3)", &T::set_epochs);
  u32("--batch-size", "Clips per forward pass (default 8)", &T::set_batch_size);
  u32("--grad-accum", "Forward passes per optimizer step (default 1)", &T::set_grad_accum);
  f64("--learning-rate", "Peak AdamW learning rate (default 5e-5)", &T::set_learning_rate);
  u32("--warmup-steps", "Linear warmup in optimizer steps (wins over --warmup-ratio)",
      &T::set_warmup_steps);
  f64("--warmup-ratio", "Linear warmup as a share of all steps (default 0)", &T::set_warmup_ratio);
  enumerated("--schedule", "linear|cosine|constant (default linear)", &ParseSchedule,
             [](v1::LrSchedule e, JobSpec* s) { s->mutable_training()->set_schedule(e); });
  f64("--weight-decay", "AdamW weight decay, not on biases/norms (default 0)",
      &T::set_weight_decay);
  f64("--max-grad-norm", "Gradient-norm clip, 0 = off (default 1)", &T::set_max_grad_norm);
  enumerated("--precision", "auto|fp32|fp16|bf16 (default auto)", &ParsePrecision,
             [](v1::Precision e, JobSpec* s) { s->mutable_training()->set_precision(e); });
  boolean("--freeze-feature-encoder",
          "Keep the CNN encoder fixed (default: frozen for checkpoint folders, trained for "
          "random-init presets)",
          [](bool v, JobSpec* s) { s->mutable_training()->set_freeze_feature_encoder(v); });
  u32("--freeze-layers", "Keep the first K transformer layers fixed", &T::set_freeze_layers);
  boolean("--freeze-backbone", "Train only the classification head",
          [](bool v, JobSpec* s) { s->mutable_training()->set_freeze_backbone(v); });
  boolean("--group-by-length", "Batch clips of similar length together",
          [](bool v, JobSpec* s) { s->mutable_training()->set_group_by_length(v); });
  f64("--max-seconds", "Crop clips to this length, 0 = no limit", &T::set_max_seconds);
  u32("--eval-every-steps", "Evaluate every N optimizer steps, 0 = each epoch",
      &T::set_eval_every_steps);
  u32("--checkpoint-every-steps", "Checkpoint every N optimizer steps, 0 = each epoch",
      &T::set_checkpoint_every_steps);
  u32("--keep-last", "Step checkpoints kept besides best/ (default 2)", &T::set_keep_last);
  Add<std::string>(
      cmd, "--metric-for-best", "accuracy|macro_f1|eval_loss (default accuracy)",
      [](const std::string& v, JobSpec* s) { s->mutable_training()->set_metric_for_best(v); });
  u32("--early-stopping-patience", "Stop after N evaluations without improvement",
      &T::set_early_stopping_patience);
  f64("--early-stopping-threshold", "Smallest improvement that counts (default 0)",
      &T::set_early_stopping_threshold);
  Add<uint64_t>(cmd, "--seed", "Seed for init, split, shuffling and cropping (default 42)",
                [](uint64_t v, JobSpec* s) { s->mutable_training()->set_seed(v); });
  u32("--log-every-steps", "Progress event every N optimizer steps (default 10)",
      &T::set_log_every_steps);

  // Placement and bookkeeping.
  Add<std::string>(cmd, "--device", "auto|cpu|cuda|cuda:N (default auto)",
                   [](const std::string& v, JobSpec* s) { s->set_device(v); });
  Add<uint32_t>(cmd, "--threads", "Intra-op CPU threads, 0 = all cores",
                [](uint32_t v, JobSpec* s) { s->set_threads(v); });
  Add<uint32_t>(cmd, "--world-size",
                "Data-parallel ranks, one device each; batch size is per rank (default 1)",
                [](uint32_t v, JobSpec* s) { s->set_world_size(v); });
  Add<std::string>(cmd, "--output-dir", "Checkpoint folder on the worker (required)",
                   [](const std::string& v, JobSpec* s) { s->set_output_dir(v); });
  Add<int32_t>(cmd, "--priority", "Higher runs first",
               [](int32_t v, JobSpec* s) { s->set_priority(v); });
  Add<uint32_t>(cmd, "--max-restarts", "Requeues after a lost worker before failing (default 3)",
                [](uint32_t v, JobSpec* s) { s->set_max_restarts(v); });
  Add<std::string>(cmd, "--request-id", "Idempotency key: resubmitting returns the same job",
                   [](const std::string& v, JobSpec* s) { s->set_client_request_id(v); });
  Add<std::string>(cmd, "--name", "Free-form job name (also the TensorBoard run's)",
                   [](const std::string& v, JobSpec* s) { s->set_name(v); });
  enumerated("--report-to",
             "tensorboard|none: TensorBoard event files under OUTPUT/runs/ (default tensorboard)",
             &ParseReportTo, [](v1::ReportTo e, JobSpec* s) { s->set_report_to(e); });
  cmd->option_defaults()->group("Options");
}

absl::StatusOr<JobSpec> JobSpecFlags::Build() const {
  JobSpec spec;
  if (!spec_file_.empty()) {
    ASSIGN_OR_RETURN(spec, ReadJobSpecFile(spec_file_));
  }
  for (const auto& [option, set] : setters_) {
    if (option->count() == 0) continue;
    RETURN_IF_ERROR(set(&spec));
  }
  RETURN_IF_ERROR(ValidateJobSpec(spec));
  return spec;
}

}  // namespace ftune
