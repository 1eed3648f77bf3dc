#include "common/job_spec.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ftune {
namespace {

using ftune::v1::JobSpec;

absl::Status Bad(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

bool InRange(double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; }

// Corpora one job may train on together.
constexpr int kMaxExtraDatasets = 63;

// `field` is "dataset" or "extra_datasets[i]".
absl::Status ValidateDataset(const ftune::v1::DatasetSpec& d, const std::string& field) {
  if (d.path().empty()) return Bad(absl::StrCat(field, ".path"), "required");
  if (!ftune::v1::DatasetLayout_IsValid(d.layout())) {
    return Bad(absl::StrCat(field, ".layout"), "unknown value");
  }
  if (!ftune::v1::SplitStrategy_IsValid(d.split())) {
    return Bad(absl::StrCat(field, ".split"), "unknown value");
  }
  if (d.has_eval_fraction() &&
      !(std::isfinite(d.eval_fraction()) && d.eval_fraction() > 0 && d.eval_fraction() < 1)) {
    return Bad(absl::StrCat(field, ".eval_fraction"), "must be between 0 and 1 (exclusive)");
  }
  return absl::OkStatus();
}

absl::Status ValidateTraining(const ftune::v1::TrainingConfig& t) {
  if (t.epochs() > 1000) return Bad("training.epochs", "must be 1..1000");
  if (t.batch_size() > 4096) return Bad("training.batch_size", "must be 1..4096");
  if (t.grad_accum() > 1024) return Bad("training.grad_accum", "must be 1..1024");
  if (t.has_learning_rate() && !(InRange(t.learning_rate(), 0, 1) && t.learning_rate() > 0)) {
    return Bad("training.learning_rate", "must be in (0, 1]");
  }
  if (t.warmup_steps() > 10'000'000) return Bad("training.warmup_steps", "must be <= 10000000");
  if (t.has_warmup_ratio() && !(InRange(t.warmup_ratio(), 0, 1) && t.warmup_ratio() < 1)) {
    return Bad("training.warmup_ratio", "must be in [0, 1)");
  }
  if (!ftune::v1::LrSchedule_IsValid(t.schedule())) return Bad("training.schedule", "unknown value");
  if (t.has_weight_decay() && !InRange(t.weight_decay(), 0, 10)) {
    return Bad("training.weight_decay", "must be in [0, 10]");
  }
  if (t.has_max_grad_norm() && !InRange(t.max_grad_norm(), 0, 1e6)) {
    return Bad("training.max_grad_norm", "must be in [0, 1e6] (0 disables clipping)");
  }
  if (!ftune::v1::Precision_IsValid(t.precision())) return Bad("training.precision", "unknown value");
  if (t.freeze_layers() > 256) return Bad("training.freeze_layers", "must be 0..256");
  if (t.has_max_seconds() && t.max_seconds() != 0 && !InRange(t.max_seconds(), 0.025, 3600)) {
    return Bad("training.max_seconds",
               "must be 0 (no limit) or in [0.025, 3600]: a crop under 25 ms gives the model no "
               "frame");
  }
  if (t.has_keep_last() && t.keep_last() > 1000) return Bad("training.keep_last", "must be 0..1000");
  if (!t.metric_for_best().empty() && t.metric_for_best() != "accuracy" &&
      t.metric_for_best() != "macro_f1" && t.metric_for_best() != "eval_loss") {
    return Bad("training.metric_for_best", "must be accuracy, macro_f1 or eval_loss");
  }
  if (t.early_stopping_patience() > 10000) {
    return Bad("training.early_stopping_patience", "must be 0..10000");
  }
  if (t.has_early_stopping_threshold() && !InRange(t.early_stopping_threshold(), 0, 1e6)) {
    return Bad("training.early_stopping_threshold", "must be >= 0");
  }
  if (t.log_every_steps() > 1'000'000) return Bad("training.log_every_steps", "must be <= 1000000");
  return absl::OkStatus();
}

}  // namespace

bool IsValidDeviceName(const std::string& device) {
  if (device.empty() || device == "auto" || device == "cpu" || device == "cuda") return true;
  absl::string_view rest = device;
  if (!absl::ConsumePrefix(&rest, "cuda:") || rest.empty() || rest.size() > 3) return false;
  int index = 0;
  for (char c : rest) {
    if (c < '0' || c > '9') return false;
  }
  return absl::SimpleAtoi(rest, &index) && index >= 0;
}

absl::Status ValidateDatasets(const JobSpec& spec) {
  if (!spec.has_dataset()) return Bad("dataset.path", "required");
  if (absl::Status s = ValidateDataset(spec.dataset(), "dataset"); !s.ok()) return s;
  if (spec.extra_datasets_size() > kMaxExtraDatasets) {
    return Bad("extra_datasets", absl::StrCat("at most ", kMaxExtraDatasets, " besides dataset"));
  }
  std::set<std::string> paths = {spec.dataset().path()};
  for (int i = 0; i < spec.extra_datasets_size(); ++i) {
    const std::string field = absl::StrCat("extra_datasets[", i, "]");
    const ftune::v1::DatasetSpec& d = spec.extra_datasets(i);
    if (absl::Status s = ValidateDataset(d, field); !s.ok()) return s;
    if (!paths.insert(d.path()).second) {
      return Bad(absl::StrCat(field, ".path"), absl::StrCat("'", d.path(), "' is listed twice"));
    }
  }
  for (const auto& [from, to] : spec.label_map()) {
    if (from.empty()) return Bad("label_map", "an entry maps an empty label");
    if (to.empty()) {
      return Bad(absl::StrCat("label_map['", from, "']"),
                 "maps to an empty label (to leave a class out, list the labels to keep in "
                 "labels)");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateJobSpec(const JobSpec& spec) {
  if (absl::Status s = ValidateDatasets(spec); !s.ok()) return s;
  if (spec.model().empty()) return Bad("model", "required (a preset or a checkpoint folder)");
  std::set<std::string> seen;
  for (int i = 0; i < spec.labels_size(); ++i) {
    const std::string& label = spec.labels(i);
    if (label.empty()) return Bad(absl::StrCat("labels[", i, "]"), "empty label");
    if (!seen.insert(label).second) {
      return Bad(absl::StrCat("labels[", i, "]"), absl::StrCat("'", label, "' listed twice"));
    }
  }
  if (spec.labels_size() == 1) return Bad("labels", "need at least two labels");
  if (absl::Status s = ValidateTraining(spec.training()); !s.ok()) return s;
  if (!IsValidDeviceName(spec.device())) {
    return Bad("device", absl::StrCat("'", spec.device(), "' is not auto, cpu, cuda or cuda:N"));
  }
  if (spec.threads() > 1024) return Bad("threads", "must be 0..1024 (0 = all cores)");
  if (spec.world_size() > kMaxWorldSize) {
    return Bad("world_size", absl::StrCat("must be 0..", kMaxWorldSize, " (0 or 1 = one device)"));
  }
  if (spec.world_size() > 1 && absl::StartsWith(spec.device(), "cuda:")) {
    return Bad("device", absl::StrCat("'", spec.device(), "' names one device, but world_size ",
                                      spec.world_size(),
                                      " needs one per rank: use auto, cpu or cuda"));
  }
  if (spec.output_dir().empty()) return Bad("output_dir", "required");
  if (spec.has_max_restarts() && spec.max_restarts() > 100) {
    return Bad("max_restarts", "must be 0..100");
  }
  if (spec.client_request_id().size() > 256) {
    return Bad("client_request_id", "longer than 256 characters");
  }
  if (spec.name().size() > 256) return Bad("name", "longer than 256 characters");
  if (!ftune::v1::ReportTo_IsValid(spec.report_to())) return Bad("report_to", "unknown value");
  return absl::OkStatus();
}

const std::vector<std::string>& ModelPresetNames() {
  static const auto* names = new std::vector<std::string>{"tiny", "hubert-base", "hubert-large"};
  return *names;
}

bool IsModelPreset(const std::string& model) {
  const auto& names = ModelPresetNames();
  return std::find(names.begin(), names.end(), model) != names.end();
}

const Recipe& RecipeFor(const std::string& model) {
  // Hugging Face Trainer's defaults; its examples freeze the feature encoder of pretrained
  // speech models.
  static constexpr Recipe kFineTune{"fine-tune", 3, 5e-5, 0.0, true};
  // Measured on the 8-emotion demo corpus (bench/learn): from random weights lr 5e-5 barely
  // moves in 3 epochs; 1e-3 with 10% warmup learns on every seed tried, and keeps improving
  // to about 20 epochs.
  static constexpr Recipe kFromScratch{"from-scratch", 20, 1e-3, 0.1, false};
  return IsModelPreset(model) ? kFromScratch : kFineTune;
}

std::string DescribeRecipe(const JobSpec& spec) {
  const Recipe& r = RecipeFor(spec.model());
  const ftune::v1::TrainingConfig& t = spec.training();
  std::string line = absl::StrCat(
      r.name, " recipe (",
      IsModelPreset(spec.model()) ? absl::StrCat("random-init preset '", spec.model(), "'")
                                  : std::string("checkpoint folder"),
      "): ", r.epochs, " epochs, learning_rate ", r.learning_rate, ", warmup_ratio ",
      r.warmup_ratio, ", linear decay, feature encoder ",
      r.freeze_feature_encoder ? "frozen" : "trained");
  std::vector<std::string> own;
  if (t.epochs() != 0 && t.epochs() != r.epochs) own.push_back(absl::StrCat("epochs ", t.epochs()));
  if (t.has_learning_rate() && t.learning_rate() != r.learning_rate) {
    own.push_back(absl::StrCat("learning_rate ", t.learning_rate()));
  }
  if (t.warmup_steps() > 0) {
    own.push_back(absl::StrCat("warmup_steps ", t.warmup_steps()));
  } else if (t.has_warmup_ratio() && t.warmup_ratio() != r.warmup_ratio) {
    own.push_back(absl::StrCat("warmup_ratio ", t.warmup_ratio()));
  }
  if (t.schedule() != ftune::v1::LR_SCHEDULE_LINEAR) {
    own.push_back(absl::StrCat("schedule ", t.schedule() == ftune::v1::LR_SCHEDULE_COSINE
                                                ? "cosine"
                                                : "constant"));
  }
  if (t.has_freeze_feature_encoder() && t.freeze_feature_encoder() != r.freeze_feature_encoder) {
    own.push_back(absl::StrCat("freeze_feature_encoder ",
                               t.freeze_feature_encoder() ? "true" : "false"));
  }
  if (!own.empty()) absl::StrAppend(&line, "; set by the job: ", absl::StrJoin(own, ", "));
  return line;
}

std::vector<std::string> DatasetPaths(const JobSpec& spec) {
  std::vector<std::string> paths = {spec.dataset().path()};
  for (const auto& d : spec.extra_datasets()) paths.push_back(d.path());
  return paths;
}

JobSpec WithDefaults(const JobSpec& spec) {
  JobSpec out = spec;
  ftune::v1::DatasetSpec* d = out.mutable_dataset();
  if (!d->has_eval_fraction()) d->set_eval_fraction(0.2);
  for (ftune::v1::DatasetSpec& extra : *out.mutable_extra_datasets()) {
    if (!extra.has_eval_fraction()) extra.set_eval_fraction(0.2);
  }
  ftune::v1::TrainingConfig* t = out.mutable_training();
  const Recipe& recipe = RecipeFor(spec.model());
  if (t->epochs() == 0) t->set_epochs(recipe.epochs);
  if (t->batch_size() == 0) t->set_batch_size(8);
  if (t->grad_accum() == 0) t->set_grad_accum(1);
  if (!t->has_learning_rate()) t->set_learning_rate(recipe.learning_rate);
  if (!t->has_warmup_ratio()) t->set_warmup_ratio(recipe.warmup_ratio);
  if (!t->has_weight_decay()) t->set_weight_decay(0);
  if (!t->has_max_grad_norm()) t->set_max_grad_norm(1.0);
  // freeze_feature_encoder stays unset: the trainer picks by model (frozen for pretrained
  // folders, trainable for random-init presets).
  if (!t->has_max_seconds()) t->set_max_seconds(0);
  if (!t->has_keep_last()) t->set_keep_last(2);
  if (t->metric_for_best().empty()) t->set_metric_for_best("accuracy");
  if (!t->has_early_stopping_threshold()) t->set_early_stopping_threshold(0);
  if (!t->has_seed()) t->set_seed(42);
  if (t->log_every_steps() == 0) t->set_log_every_steps(10);
  if (out.device().empty()) out.set_device("auto");
  if (!out.has_max_restarts()) out.set_max_restarts(3);
  if (out.world_size() == 0) out.set_world_size(1);
  return out;
}

}  // namespace ftune
