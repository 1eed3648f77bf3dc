#include "worker/train/job_flags.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "google/protobuf/util/json_util.h"

namespace ftune::train {

using ftune::v1::JobSpec;

// One command-line flag: where CLI11 stores it and how it lands in the spec when given.
struct JobSpecFlags::Flag {
  CLI::Option* option = nullptr;
  std::function<absl::Status(JobSpec*)> apply;
};

namespace {

template <typename Enum>
absl::StatusOr<Enum> ParseEnum(const std::string& what, const std::string& name,
                               const std::vector<std::pair<const char*, Enum>>& table) {
  const std::string lower = absl::AsciiStrToLower(name);
  std::string names;
  for (const auto& [n, v] : table) {
    if (lower == n) return v;
    absl::StrAppend(&names, names.empty() ? "" : "|", n);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--", what, ": '", name, "' is not one of ", names));
}

}  // namespace

absl::StatusOr<ftune::v1::DatasetLayout> ParseLayout(const std::string& name) {
  return ParseEnum<ftune::v1::DatasetLayout>(
      "layout", name,
      {{"auto", ftune::v1::DATASET_LAYOUT_AUTO},
       {"ravdess", ftune::v1::DATASET_LAYOUT_RAVDESS},
       {"folders", ftune::v1::DATASET_LAYOUT_FOLDERS},
       {"manifest", ftune::v1::DATASET_LAYOUT_MANIFEST}});
}

absl::StatusOr<ftune::v1::SplitStrategy> ParseSplit(const std::string& name) {
  return ParseEnum<ftune::v1::SplitStrategy>(
      "split", name,
      {{"auto", ftune::v1::SPLIT_STRATEGY_AUTO},
       {"speaker", ftune::v1::SPLIT_STRATEGY_SPEAKER},
       {"random", ftune::v1::SPLIT_STRATEGY_RANDOM},
       {"manifest", ftune::v1::SPLIT_STRATEGY_MANIFEST}});
}

absl::StatusOr<ftune::v1::LrSchedule> ParseSchedule(const std::string& name) {
  return ParseEnum<ftune::v1::LrSchedule>("schedule", name,
                                          {{"linear", ftune::v1::LR_SCHEDULE_LINEAR},
                                           {"cosine", ftune::v1::LR_SCHEDULE_COSINE},
                                           {"constant", ftune::v1::LR_SCHEDULE_CONSTANT}});
}

absl::StatusOr<ftune::v1::Precision> ParsePrecision(const std::string& name) {
  return ParseEnum<ftune::v1::Precision>("precision", name,
                                         {{"auto", ftune::v1::PRECISION_AUTO},
                                          {"fp32", ftune::v1::PRECISION_FP32},
                                          {"fp16", ftune::v1::PRECISION_FP16},
                                          {"bf16", ftune::v1::PRECISION_BF16}});
}

absl::StatusOr<JobSpec> ParseJobSpecJson(const std::string& json) {
  JobSpec spec;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(json, &spec, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("not a JobSpec: ", status.ToString()));
  }
  return spec;
}

void JobSpecFlags::Register(CLI::App* cmd) {
  cmd->add_option("--spec", spec_file_, "JobSpec JSON file (protobuf JSON); flags override it")
      ->check(CLI::ExistingFile);

  // Adds a flag stored in a shared value and applied with `set` when given.
  auto add = [this, cmd](const std::string& name, const std::string& help, auto value,
                         auto set) {
    auto storage = std::make_shared<decltype(value)>(value);
    auto flag = std::make_shared<Flag>();
    flag->option = cmd->add_option(name, *storage, help);
    flag->apply = [storage, set](JobSpec* spec) -> absl::Status { return set(*storage, spec); };
    // Keep the storage alive as long as the flag.
    flags_.push_back(flag);
    return flag->option;
  };
  auto ok = [] { return absl::OkStatus(); };

  cmd->option_defaults()->group("Job");
  add("--dataset", "Dataset folder or manifest file (on the worker)", std::string(),
      [ok](const std::string& v, JobSpec* s) { s->mutable_dataset()->set_path(v); return ok(); });
  add("--layout", "auto|ravdess|folders|manifest", std::string(),
      [](const std::string& v, JobSpec* s) -> absl::Status {
        ASSIGN_OR_RETURN(auto e, ParseLayout(v));
        s->mutable_dataset()->set_layout(e);
        return absl::OkStatus();
      });
  add("--split", "auto|speaker|random|manifest", std::string(),
      [](const std::string& v, JobSpec* s) -> absl::Status {
        ASSIGN_OR_RETURN(auto e, ParseSplit(v));
        s->mutable_dataset()->set_split(e);
        return absl::OkStatus();
      });
  add("--eval-fraction", "Fraction held out for evaluation (default 0.2)", 0.0,
      [ok](double v, JobSpec* s) { s->mutable_dataset()->set_eval_fraction(v); return ok(); });
  {
    auto storage = std::make_shared<bool>(false);
    auto flag = std::make_shared<Flag>();
    flag->option = cmd->add_flag("--include-song", *storage, "RAVDESS: also use song recordings");
    flag->apply = [storage](JobSpec* s) {
      s->mutable_dataset()->set_include_song(*storage);
      return absl::OkStatus();
    };
    flags_.push_back(flag);
  }
  add("--model", "Preset (tiny, hubert-base, hubert-large) or Hugging Face folder",
      std::string(), [ok](const std::string& v, JobSpec* s) { s->set_model(v); return ok(); });
  add("--labels", "Label set and order, comma-separated (default: from the dataset)",
      std::vector<std::string>(),
      [ok](const std::vector<std::string>& v, JobSpec* s) {
        s->clear_labels();
        for (const std::string& l : v) s->add_labels(l);
        return ok();
      })
      ->delimiter(',');
  add("--epochs", "Passes over the training set (default 3)", 0u,
      [ok](unsigned v, JobSpec* s) { s->mutable_training()->set_epochs(v); return ok(); });
  add("--batch-size", "Clips per forward pass (default 8)", 0u,
      [ok](unsigned v, JobSpec* s) { s->mutable_training()->set_batch_size(v); return ok(); });
  add("--grad-accum", "Forward passes per optimizer step (default 1)", 0u,
      [ok](unsigned v, JobSpec* s) { s->mutable_training()->set_grad_accum(v); return ok(); });
  add("--learning-rate", "Peak AdamW learning rate (default 5e-5)", 0.0,
      [ok](double v, JobSpec* s) { s->mutable_training()->set_learning_rate(v); return ok(); });
  add("--warmup-steps", "Linear warmup in optimizer steps (wins over --warmup-ratio)", 0u,
      [ok](unsigned v, JobSpec* s) { s->mutable_training()->set_warmup_steps(v); return ok(); });
  add("--warmup-ratio", "Linear warmup as a fraction of all steps (default 0)", 0.0,
      [ok](double v, JobSpec* s) { s->mutable_training()->set_warmup_ratio(v); return ok(); });
  add("--schedule", "linear|cosine|constant (default linear)", std::string(),
      [](const std::string& v, JobSpec* s) -> absl::Status {
        ASSIGN_OR_RETURN(auto e, ParseSchedule(v));
        s->mutable_training()->set_schedule(e);
        return absl::OkStatus();
      });
  add("--weight-decay", "AdamW weight decay, not on biases/norms (default 0)", 0.0,
      [ok](double v, JobSpec* s) { s->mutable_training()->set_weight_decay(v); return ok(); });
  add("--max-grad-norm", "Gradient clip norm, 0 disables (default 1)", 0.0,
      [ok](double v, JobSpec* s) { s->mutable_training()->set_max_grad_norm(v); return ok(); });
  add("--precision", "auto|fp32|fp16|bf16 (default auto)", std::string(),
      [](const std::string& v, JobSpec* s) -> absl::Status {
        ASSIGN_OR_RETURN(auto e, ParsePrecision(v));
        s->mutable_training()->set_precision(e);
        return absl::OkStatus();
      });
  add("--freeze-feature-encoder",
      "true|false (default: true for checkpoint folders, false for random-init presets)", true,
      [ok](bool v, JobSpec* s) { s->mutable_training()->set_freeze_feature_encoder(v); return ok(); });
  add("--freeze-layers", "Keep the first K transformer layers fixed", 0u,
      [ok](unsigned v, JobSpec* s) { s->mutable_training()->set_freeze_layers(v); return ok(); });
  {
    auto storage = std::make_shared<bool>(false);
    auto flag = std::make_shared<Flag>();
    flag->option = cmd->add_flag("--freeze-backbone", *storage, "Train only the classifier head");
    flag->apply = [storage](JobSpec* s) {
      s->mutable_training()->set_freeze_backbone(*storage);
      return absl::OkStatus();
    };
    flags_.push_back(flag);
  }
  {
    auto storage = std::make_shared<bool>(false);
    auto flag = std::make_shared<Flag>();
    flag->option =
        cmd->add_flag("--group-by-length", *storage, "Batch clips of similar length together");
    flag->apply = [storage](JobSpec* s) {
      s->mutable_training()->set_group_by_length(*storage);
      return absl::OkStatus();
    };
    flags_.push_back(flag);
  }
  add("--max-seconds", "Crop clips longer than this (0 = no limit)", 0.0,
      [ok](double v, JobSpec* s) { s->mutable_training()->set_max_seconds(v); return ok(); });
  add("--eval-every-steps", "Evaluate every N optimizer steps (0 = each epoch)", 0u,
      [ok](unsigned v, JobSpec* s) { s->mutable_training()->set_eval_every_steps(v); return ok(); });
  add("--checkpoint-every-steps", "Checkpoint every N optimizer steps (0 = each epoch)", 0u,
      [ok](unsigned v, JobSpec* s) { s->mutable_training()->set_checkpoint_every_steps(v); return ok(); });
  add("--keep-last", "Step checkpoints kept besides best/ (default 2)", 0u,
      [ok](unsigned v, JobSpec* s) { s->mutable_training()->set_keep_last(v); return ok(); });
  add("--metric-for-best", "accuracy|macro_f1|eval_loss (default accuracy)", std::string(),
      [ok](const std::string& v, JobSpec* s) { s->mutable_training()->set_metric_for_best(v); return ok(); });
  add("--early-stopping-patience", "Stop after N evaluations without improvement", 0u,
      [ok](unsigned v, JobSpec* s) {
        s->mutable_training()->set_early_stopping_patience(v);
        return ok();
      });
  add("--early-stopping-threshold", "Smallest improvement that counts (default 0)", 0.0,
      [ok](double v, JobSpec* s) {
        s->mutable_training()->set_early_stopping_threshold(v);
        return ok();
      });
  add("--log-every-steps", "train_progress every N optimizer steps (default 10)", 0u,
      [ok](unsigned v, JobSpec* s) { s->mutable_training()->set_log_every_steps(v); return ok(); });
  add("--seed", "Seed for init, split, shuffling and cropping (default 42)", uint64_t{0},
      [ok](uint64_t v, JobSpec* s) { s->mutable_training()->set_seed(v); return ok(); });
  add("--device", "auto|cpu|cuda|cuda:N (default auto)", std::string(),
      [ok](const std::string& v, JobSpec* s) { s->set_device(v); return ok(); });
  add("--threads", "Intra-op CPU threads (0 = all cores)", 0u,
      [ok](unsigned v, JobSpec* s) { s->set_threads(v); return ok(); });
  add("--output-dir", "Checkpoint folder (on the worker)", std::string(),
      [ok](const std::string& v, JobSpec* s) { s->set_output_dir(v); return ok(); });
  add("--priority", "Higher runs first", 0,
      [ok](int v, JobSpec* s) { s->set_priority(v); return ok(); });
  add("--max-restarts", "Requeues after a lost worker before failing (default 3)", 0u,
      [ok](unsigned v, JobSpec* s) { s->set_max_restarts(v); return ok(); });
  add("--name", "Free-form job name", std::string(),
      [ok](const std::string& v, JobSpec* s) { s->set_name(v); return ok(); });
  cmd->option_defaults()->group("Options");
}

absl::StatusOr<JobSpec> JobSpecFlags::BuildSpec() const {
  JobSpec spec;
  if (!spec_file_.empty()) {
    std::ifstream in(spec_file_);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read --spec ", spec_file_));
    std::stringstream text;
    text << in.rdbuf();
    auto parsed = ParseJobSpecJson(text.str());
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--spec ", spec_file_, ": ", parsed.status().message()));
    }
    spec = *std::move(parsed);
  }
  for (const auto& flag : flags_) {
    if (flag->option->count() == 0) continue;
    RETURN_IF_ERROR(flag->apply(&spec));
  }
  return spec;
}

}  // namespace ftune::train
