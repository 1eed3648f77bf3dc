#include "client/spec_flags.h"

#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <sstream>
#include <type_traits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/job_spec.h"

namespace ftune::ctl {

namespace v1 = ::ftune::v1;
using google::protobuf::EnumDescriptor;

namespace {

// Matches `name` against the enum's value names without `prefix`, case-insensitively.
absl::StatusOr<int> ParseEnum(const EnumDescriptor* descriptor, const std::string& prefix,
                              const std::string& flag, const std::string& name) {
  std::vector<std::string> choices;
  const std::string wanted = absl::AsciiStrToLower(name);
  for (int i = 0; i < descriptor->value_count(); ++i) {
    std::string choice = descriptor->value(i)->name();
    if (absl::StartsWith(choice, prefix)) choice = choice.substr(prefix.size());
    choice = absl::AsciiStrToLower(choice);
    if (choice == "unspecified") continue;
    if (choice == wanted) return descriptor->value(i)->number();
    choices.push_back(choice);
  }
  return absl::InvalidArgumentError(
      absl::StrCat(flag, ": '", name, "' is not one of ", absl::StrJoin(choices, ", ")));
}

}  // namespace

absl::StatusOr<v1::DatasetLayout> ParseLayout(const std::string& name) {
  absl::StatusOr<int> v =
      ParseEnum(v1::DatasetLayout_descriptor(), "DATASET_LAYOUT_", "--layout", name);
  if (!v.ok()) return v.status();
  return static_cast<v1::DatasetLayout>(*v);
}

absl::StatusOr<v1::SplitStrategy> ParseSplit(const std::string& name) {
  absl::StatusOr<int> v =
      ParseEnum(v1::SplitStrategy_descriptor(), "SPLIT_STRATEGY_", "--split", name);
  if (!v.ok()) return v.status();
  return static_cast<v1::SplitStrategy>(*v);
}

absl::StatusOr<v1::Precision> ParsePrecision(const std::string& name) {
  absl::StatusOr<int> v = ParseEnum(v1::Precision_descriptor(), "PRECISION_", "--precision", name);
  if (!v.ok()) return v.status();
  return static_cast<v1::Precision>(*v);
}

absl::StatusOr<v1::LrSchedule> ParseSchedule(const std::string& name) {
  absl::StatusOr<int> v =
      ParseEnum(v1::LrSchedule_descriptor(), "LR_SCHEDULE_", "--schedule", name);
  if (!v.ok()) return v.status();
  return static_cast<v1::LrSchedule>(*v);
}

absl::StatusOr<v1::JobState> ParseJobState(const std::string& name) {
  absl::StatusOr<int> v = ParseEnum(v1::JobState_descriptor(), "JOB_STATE_", "--state", name);
  if (!v.ok()) return v.status();
  return static_cast<v1::JobState>(*v);
}

std::string JobStateName(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  if (absl::StartsWith(name, "JOB_STATE_")) name = name.substr(10);
  return absl::AsciiStrToLower(name);
}

absl::StatusOr<v1::JobSpec> ParseJobSpecJson(const std::string& json) {
  v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(json, &spec, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(std::string(status.message()));
  }
  return spec;
}

template <typename T>
void SpecFlags::Option(CLI::App* cmd, const std::string& name, const std::string& help,
                       std::function<absl::Status(const T&, v1::JobSpec*)> set) {
  auto value = std::make_shared<T>();
  CLI::Option* option = cmd->add_option(name, *value, help);
  // A flag given twice: the last one wins, as in most tools.
  if constexpr (!std::is_same_v<T, std::vector<std::string>>) {
    option->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
  setters_.emplace_back(option, [value, set](v1::JobSpec* spec) { return set(*value, spec); });
}

void SpecFlags::Flag(CLI::App* cmd, const std::string& name, const std::string& help,
                     std::function<void(bool, v1::JobSpec*)> set) {
  auto value = std::make_shared<bool>(false);
  CLI::Option* option = cmd->add_flag(name, *value, help + " (--flag=false to turn off)");
  setters_.emplace_back(option, [value, set](v1::JobSpec* spec) {
    set(*value, spec);
    return absl::OkStatus();
  });
}

void SpecFlags::AddTo(CLI::App* cmd) {
  using S = v1::JobSpec;
  auto ok = [] { return absl::OkStatus(); };
  cmd->add_option("-f,--file", spec_file_,
                  "JobSpec as JSON (protobuf mapping); flags given here override it");

  // Dataset.
  Option<std::string>(cmd, "--dataset", "Dataset folder or manifest on the worker",
                      [ok](const std::string& v, S* s) {
                        s->mutable_dataset()->set_path(v);
                        return ok();
                      });
  Option<std::string>(cmd, "--layout", "auto|ravdess|folders|manifest",
                      [](const std::string& v, S* s) -> absl::Status {
                        absl::StatusOr<v1::DatasetLayout> e = ParseLayout(v);
                        if (!e.ok()) return e.status();
                        s->mutable_dataset()->set_layout(*e);
                        return absl::OkStatus();
                      });
  Option<std::string>(cmd, "--split", "auto|speaker|random|manifest",
                      [](const std::string& v, S* s) -> absl::Status {
                        absl::StatusOr<v1::SplitStrategy> e = ParseSplit(v);
                        if (!e.ok()) return e.status();
                        s->mutable_dataset()->set_split(*e);
                        return absl::OkStatus();
                      });
  Option<double>(cmd, "--eval-fraction", "Share held out for evaluation (default 0.2)",
                 [ok](const double& v, S* s) {
                   s->mutable_dataset()->set_eval_fraction(v);
                   return ok();
                 });
  Flag(cmd, "--include-song", "RAVDESS: also use the song recordings",
       [](bool v, S* s) { s->mutable_dataset()->set_include_song(v); });

  // Model and labels.
  Option<std::string>(cmd, "--model",
                      "Preset (tiny, hubert-base, hubert-large) or Hugging Face folder",
                      [ok](const std::string& v, S* s) {
                        s->set_model(v);
                        return ok();
                      });
  Option<std::vector<std::string>>(cmd, "--labels", "Label set and order, comma-separated",
                                   [ok](const std::vector<std::string>& v, S* s) {
                                     s->clear_labels();
                                     for (const auto& label : v) s->add_labels(label);
                                     return ok();
                                   });
  setters_.back().first->delimiter(',');

  // Training.
  auto u32 = [this, cmd](const std::string& name, const std::string& help,
                         void (v1::TrainingConfig::*set)(uint32_t)) {
    Option<uint32_t>(cmd, name, help, [set](const uint32_t& v, S* s) {
      (s->mutable_training()->*set)(v);
      return absl::OkStatus();
    });
  };
  auto f64 = [this, cmd](const std::string& name, const std::string& help,
                         void (v1::TrainingConfig::*set)(double)) {
    Option<double>(cmd, name, help, [set](const double& v, S* s) {
      (s->mutable_training()->*set)(v);
      return absl::OkStatus();
    });
  };
  using T = v1::TrainingConfig;
  u32("--epochs", "Passes over the training set (default 3)", &T::set_epochs);
  u32("--batch-size", "Clips per forward pass (default 8)", &T::set_batch_size);
  u32("--grad-accum", "Forward passes per optimizer step (default 1)", &T::set_grad_accum);
  f64("--learning-rate", "Peak AdamW learning rate (default 5e-5)", &T::set_learning_rate);
  u32("--warmup-steps", "Linear warmup in optimizer steps", &T::set_warmup_steps);
  f64("--warmup-ratio", "Linear warmup as a share of all steps (default 0)", &T::set_warmup_ratio);
  Option<std::string>(cmd, "--schedule", "linear|cosine|constant",
                      [](const std::string& v, S* s) -> absl::Status {
                        absl::StatusOr<v1::LrSchedule> e = ParseSchedule(v);
                        if (!e.ok()) return e.status();
                        s->mutable_training()->set_schedule(*e);
                        return absl::OkStatus();
                      });
  f64("--weight-decay", "AdamW weight decay (default 0)", &T::set_weight_decay);
  f64("--max-grad-norm", "Gradient-norm clip, 0 = off (default 1)", &T::set_max_grad_norm);
  Option<std::string>(cmd, "--precision", "auto|fp32|fp16|bf16",
                      [](const std::string& v, S* s) -> absl::Status {
                        absl::StatusOr<v1::Precision> e = ParsePrecision(v);
                        if (!e.ok()) return e.status();
                        s->mutable_training()->set_precision(*e);
                        return absl::OkStatus();
                      });
  Flag(cmd, "--freeze-feature-encoder", "Keep the convolutional encoder fixed (default on)",
       [](bool v, S* s) { s->mutable_training()->set_freeze_feature_encoder(v); });
  u32("--freeze-layers", "Keep the first K transformer layers fixed", &T::set_freeze_layers);
  Flag(cmd, "--freeze-backbone", "Train only the classification head",
       [](bool v, S* s) { s->mutable_training()->set_freeze_backbone(v); });
  f64("--max-seconds", "Crop clips to this length, 0 = no limit", &T::set_max_seconds);
  u32("--eval-every-steps", "Evaluate every N steps, 0 = each epoch", &T::set_eval_every_steps);
  u32("--checkpoint-every-steps", "Checkpoint every N steps, 0 = each epoch",
      &T::set_checkpoint_every_steps);
  u32("--keep-last", "Step checkpoints kept besides best/ (default 2)", &T::set_keep_last);
  Option<std::string>(cmd, "--metric-for-best", "accuracy|macro_f1|eval_loss",
                      [ok](const std::string& v, S* s) {
                        s->mutable_training()->set_metric_for_best(v);
                        return ok();
                      });
  u32("--early-stopping-patience", "Stop after N evaluations without improvement",
      &T::set_early_stopping_patience);
  f64("--early-stopping-threshold", "Smallest improvement that counts",
      &T::set_early_stopping_threshold);
  Option<uint64_t>(cmd, "--seed", "Seed for everything random (default 42)",
                   [ok](const uint64_t& v, S* s) {
                     s->mutable_training()->set_seed(v);
                     return ok();
                   });
  u32("--log-every-steps", "Progress event every N steps (default 10)", &T::set_log_every_steps);
  Flag(cmd, "--group-by-length", "Batch clips of similar length together",
       [](bool v, S* s) { s->mutable_training()->set_group_by_length(v); });

  // Placement and bookkeeping.
  Option<std::string>(cmd, "--device", "auto|cpu|cuda|cuda:N", [ok](const std::string& v, S* s) {
    s->set_device(v);
    return ok();
  });
  Option<uint32_t>(cmd, "--threads", "Intra-op CPU threads, 0 = all cores",
                   [ok](const uint32_t& v, S* s) {
                     s->set_threads(v);
                     return ok();
                   });
  Option<std::string>(cmd, "--output-dir", "Checkpoint folder on the worker (required)",
                      [ok](const std::string& v, S* s) {
                        s->set_output_dir(v);
                        return ok();
                      });
  Option<int32_t>(cmd, "--priority", "Higher runs first", [ok](const int32_t& v, S* s) {
    s->set_priority(v);
    return ok();
  });
  Option<uint32_t>(cmd, "--max-restarts", "Requeues after a lost worker (default 3)",
                   [ok](const uint32_t& v, S* s) {
                     s->set_max_restarts(v);
                     return ok();
                   });
  Option<std::string>(cmd, "--request-id", "Idempotency key: resubmitting returns the job",
                      [ok](const std::string& v, S* s) {
                        s->set_client_request_id(v);
                        return ok();
                      });
  Option<std::string>(cmd, "--name", "Name shown by ftctl", [ok](const std::string& v, S* s) {
    s->set_name(v);
    return ok();
  });
}

absl::StatusOr<v1::JobSpec> SpecFlags::Build() const {
  v1::JobSpec spec;
  if (!spec_file_.empty()) {
    std::ifstream in(spec_file_);
    if (!in) {
      return absl::InvalidArgumentError(absl::StrCat("cannot read spec file '", spec_file_, "'"));
    }
    std::stringstream text;
    text << in.rdbuf();
    absl::StatusOr<v1::JobSpec> parsed = ParseJobSpecJson(text.str());
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec file '", spec_file_, "': ", parsed.status().message()));
    }
    spec = *std::move(parsed);
  }
  for (const auto& [option, set] : setters_) {
    if (option->count() == 0) continue;
    if (absl::Status s = set(&spec); !s.ok()) return s;
  }
  if (absl::Status s = ValidateJobSpec(spec); !s.ok()) return s;
  return spec;
}

}  // namespace ftune::ctl
