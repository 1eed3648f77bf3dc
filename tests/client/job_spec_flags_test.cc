#include "common/job_spec_flags.h"

#include <gtest/gtest.h>

#include <fstream>

#include "absl/strings/match.h"
#include "tests/support/process.h"

namespace ftune {
namespace {

namespace v1 = ::ftune::v1;

// Parses `args` as `ftctl submit ARGS` / `ftworker train ARGS` would and builds the spec.
absl::StatusOr<v1::JobSpec> Parse(std::vector<std::string> args) {
  CLI::App app;
  JobSpecFlags flags;
  flags.AddTo(&app);
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  return flags.Build();
}

std::vector<std::string> Required() {
  return {"--dataset", "/data/ravdess", "--model", "tiny", "--output-dir", "/runs/1"};
}

std::vector<std::string> With(std::vector<std::string> more) {
  std::vector<std::string> args = Required();
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

TEST(JobSpecFlagsTest, FlagsFillTheirJobSpecFields) {
  auto spec = Parse(With({"--model",
                          "tiny",
                          "--layout",
                          "ravdess",
                          "--split",
                          "speaker",
                          "--eval-fraction",
                          "0.25",
                          "--include-song",
                          "--labels",
                          "neutral,happy,sad",
                          "--epochs",
                          "4",
                          "--batch-size",
                          "16",
                          "--grad-accum",
                          "2",
                          "--learning-rate",
                          "3e-5",
                          "--warmup-ratio",
                          "0.1",
                          "--schedule",
                          "cosine",
                          "--weight-decay",
                          "0.01",
                          "--max-grad-norm",
                          "0.5",
                          "--precision",
                          "bf16",
                          "--freeze-feature-encoder=false",
                          "--freeze-layers",
                          "2",
                          "--max-seconds",
                          "4",
                          "--eval-every-steps",
                          "50",
                          "--checkpoint-every-steps",
                          "100",
                          "--keep-last",
                          "3",
                          "--metric-for-best",
                          "macro_f1",
                          "--early-stopping-patience",
                          "2",
                          "--early-stopping-threshold",
                          "0.01",
                          "--log-every-steps",
                          "5",
                          "--warmup-steps",
                          "12",
                          "--freeze-backbone",
                          "--group-by-length",
                          "true",
                          "--seed",
                          "7",
                          "--device",
                          "cpu",
                          "--threads",
                          "2",
                          "--priority",
                          "5",
                          "--max-restarts",
                          "1",
                          "--request-id",
                          "req-1",
                          "--name",
                          "first run"}));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->dataset().path(), "/data/ravdess");
  EXPECT_EQ(spec->dataset().layout(), v1::DATASET_LAYOUT_RAVDESS);
  EXPECT_EQ(spec->dataset().split(), v1::SPLIT_STRATEGY_SPEAKER);
  EXPECT_DOUBLE_EQ(spec->dataset().eval_fraction(), 0.25);
  EXPECT_TRUE(spec->dataset().include_song());
  EXPECT_EQ(spec->model(), "tiny");
  ASSERT_EQ(spec->labels_size(), 3);
  EXPECT_EQ(spec->labels(2), "sad");
  const v1::TrainingConfig& t = spec->training();
  EXPECT_EQ(t.epochs(), 4u);
  EXPECT_EQ(t.batch_size(), 16u);
  EXPECT_EQ(t.grad_accum(), 2u);
  EXPECT_DOUBLE_EQ(t.learning_rate(), 3e-5);
  EXPECT_DOUBLE_EQ(t.warmup_ratio(), 0.1);
  EXPECT_EQ(t.schedule(), v1::LR_SCHEDULE_COSINE);
  EXPECT_DOUBLE_EQ(t.weight_decay(), 0.01);
  EXPECT_DOUBLE_EQ(t.max_grad_norm(), 0.5);
  EXPECT_EQ(t.precision(), v1::PRECISION_BF16);
  ASSERT_TRUE(t.has_freeze_feature_encoder());
  EXPECT_FALSE(t.freeze_feature_encoder());
  EXPECT_EQ(t.freeze_layers(), 2u);
  EXPECT_DOUBLE_EQ(t.max_seconds(), 4);
  EXPECT_EQ(t.eval_every_steps(), 50u);
  EXPECT_EQ(t.checkpoint_every_steps(), 100u);
  EXPECT_EQ(t.keep_last(), 3u);
  EXPECT_EQ(t.metric_for_best(), "macro_f1");
  EXPECT_EQ(t.early_stopping_patience(), 2u);
  EXPECT_DOUBLE_EQ(t.early_stopping_threshold(), 0.01);
  EXPECT_EQ(t.log_every_steps(), 5u);
  EXPECT_EQ(t.warmup_steps(), 12u);
  EXPECT_TRUE(t.freeze_backbone());
  EXPECT_TRUE(t.group_by_length());
  EXPECT_EQ(t.seed(), 7u);
  EXPECT_EQ(spec->device(), "cpu");
  EXPECT_EQ(spec->threads(), 2u);
  EXPECT_EQ(spec->output_dir(), "/runs/1");
  EXPECT_EQ(spec->priority(), 5);
  EXPECT_EQ(spec->max_restarts(), 1u);
  EXPECT_EQ(spec->client_request_id(), "req-1");
  EXPECT_EQ(spec->name(), "first run");
}

TEST(JobSpecFlagsTest, TheLastOfARepeatedFlagWins) {
  auto spec = Parse(With({"--epochs", "2", "--epochs", "5"}));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->training().epochs(), 5u);
}

TEST(JobSpecFlagsTest, UnsetFlagsLeaveFieldsUnset) {
  auto spec = Parse(Required());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_FALSE(spec->training().has_learning_rate());
  EXPECT_FALSE(spec->training().has_freeze_feature_encoder());
  EXPECT_FALSE(spec->has_max_restarts());
  EXPECT_EQ(spec->training().epochs(), 0u);
}

TEST(JobSpecFlagsTest, FlagsOverrideTheSpecFile) {
  const std::string dir = testing::MakeTempDir("spec");
  const std::string file = dir + "/spec.json";
  std::ofstream(file) << R"({"dataset": {"path": "/data/a", "layout": "DATASET_LAYOUT_FOLDERS"},
    "model": "hubert-base", "output_dir": "/runs/a",
    "training": {"epochs": 5, "learningRate": 1e-4}, "labels": ["x", "y"]})";
  auto spec = Parse({"-f", file, "--epochs", "2", "--model", "tiny"});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->dataset().path(), "/data/a");
  EXPECT_EQ(spec->dataset().layout(), v1::DATASET_LAYOUT_FOLDERS);
  EXPECT_EQ(spec->model(), "tiny");
  EXPECT_EQ(spec->training().epochs(), 2u);
  EXPECT_DOUBLE_EQ(spec->training().learning_rate(), 1e-4);
  EXPECT_EQ(spec->labels_size(), 2);
  EXPECT_EQ(spec->output_dir(), "/runs/a");
}

TEST(JobSpecFlagsTest, BadEnumNamesTheFlagAndTheChoices) {
  auto spec = Parse(With({"--precision", "fp8"}));
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "--precision")) << spec.status();
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "bf16")) << spec.status();
  EXPECT_TRUE(Parse(With({"--layout", "RAVDESS"})).ok()) << "case does not matter";
  EXPECT_FALSE(Parse(With({"--schedule", "step"})).ok());
  EXPECT_FALSE(Parse(With({"--split", "speakers"})).ok());
}

TEST(JobSpecFlagsTest, InvalidSpecNamesTheField) {
  auto spec = Parse({"--dataset", "/data", "--model", "tiny"});
  ASSERT_FALSE(spec.ok());
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "output_dir")) << spec.status();

  spec = Parse(With({"--device", "tpu"}));
  ASSERT_FALSE(spec.ok());
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "device")) << spec.status();

  spec = Parse(With({"--eval-fraction", "1.5"}));
  ASSERT_FALSE(spec.ok());
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "eval_fraction")) << spec.status();
}

TEST(JobSpecFlagsTest, NonNumbersAreParseErrors) {
  EXPECT_FALSE(Parse(With({"--epochs", "three"})).ok());
  EXPECT_FALSE(Parse(With({"--learning-rate", "fast"})).ok());
  EXPECT_FALSE(Parse(With({"--no-such-flag", "1"})).ok());
}

TEST(JobSpecFlagsTest, BadSpecFilesNameTheFile) {
  const std::string dir = testing::MakeTempDir("spec");
  auto spec = Parse({"-f", dir + "/missing.json"});
  ASSERT_FALSE(spec.ok());
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "missing.json"));

  std::ofstream(dir + "/typo.json") << R"({"dataset": {"path": "/d"}, "output_dir": "/o",
      "trainng": {}})";
  spec = Parse({"-f", dir + "/typo.json"});
  ASSERT_FALSE(spec.ok());
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "typo.json")) << spec.status();
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "trainng")) << spec.status();

  std::ofstream(dir + "/broken.json") << "{ not json";
  EXPECT_FALSE(Parse({"-f", dir + "/broken.json"}).ok());
}

TEST(JobSpecFlagsTest, BooleanFlagsTakeAnOptionalValue) {
  auto alone = Parse(With({"--freeze-feature-encoder"}));
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_TRUE(alone->training().freeze_feature_encoder());
  auto spaced = Parse(With({"--freeze-feature-encoder", "false", "--include-song", "true"}));
  ASSERT_TRUE(spaced.ok()) << spaced.status();
  ASSERT_TRUE(spaced->training().has_freeze_feature_encoder());
  EXPECT_FALSE(spaced->training().freeze_feature_encoder());
  EXPECT_TRUE(spaced->dataset().include_song());
  auto equals = Parse(With({"--include-song=no"}));
  ASSERT_TRUE(equals.ok()) << equals.status();
  EXPECT_FALSE(equals->dataset().include_song());
  auto bad = Parse(With({"--freeze-backbone", "maybe"}));
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "--freeze-backbone")) << bad.status();
}

TEST(JobSpecFlagsTest, YamlSpecFileWithFlagsOnTop) {
  const std::string dir = testing::MakeTempDir("spec");
  const std::string file = dir + "/spec.yaml";
  std::ofstream(file) << R"(# a job
dataset:
  path: /data/ravdess
  layout: DATASET_LAYOUT_RAVDESS
  include_song: true
  eval_fraction: 0.25
model: hubert-base
labels: [neutral, "1", happy]
output_dir: /runs/y
training:
  epochs: 5
  learning_rate: 3.0e-5
  freeze_feature_encoder: false
  precision: PRECISION_BF16
  seed: 7
name: 'yaml run'
priority: -2
)";
  auto spec = Parse({"--spec", file, "--epochs", "2"});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->dataset().path(), "/data/ravdess");
  EXPECT_EQ(spec->dataset().layout(), v1::DATASET_LAYOUT_RAVDESS);
  EXPECT_TRUE(spec->dataset().include_song());
  EXPECT_DOUBLE_EQ(spec->dataset().eval_fraction(), 0.25);
  EXPECT_EQ(spec->model(), "hubert-base");
  ASSERT_EQ(spec->labels_size(), 3);
  EXPECT_EQ(spec->labels(1), "1");
  EXPECT_EQ(spec->training().epochs(), 2u);
  EXPECT_DOUBLE_EQ(spec->training().learning_rate(), 3e-5);
  ASSERT_TRUE(spec->training().has_freeze_feature_encoder());
  EXPECT_FALSE(spec->training().freeze_feature_encoder());
  EXPECT_EQ(spec->training().precision(), v1::PRECISION_BF16);
  EXPECT_EQ(spec->training().seed(), 7u);
  EXPECT_EQ(spec->name(), "yaml run");
  EXPECT_EQ(spec->priority(), -2);

  // .yml is YAML too, and the same document read as JSON is the same spec.
  std::ofstream(dir + "/short.yml") << "dataset: {path: /d}\nmodel: tiny\noutput_dir: /o\n";
  auto yml = Parse({"-f", dir + "/short.yml"});
  ASSERT_TRUE(yml.ok()) << yml.status();
  std::ofstream(dir + "/short.json") << R"({"dataset": {"path": "/d"}, "model": "tiny",
      "output_dir": "/o"})";
  auto json = Parse({"-f", dir + "/short.json"});
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(yml->SerializeAsString(), json->SerializeAsString());
}

TEST(JobSpecFlagsTest, BadYamlNamesTheFileAndTheField) {
  const std::string dir = testing::MakeTempDir("spec");
  std::ofstream(dir + "/typo.yaml") << "dataset: {path: /d}\noutput_dir: /o\ntraining:\n"
                                       "  epochs: 2\n  lerning_rate: 1e-4\n";
  auto spec = Parse({"-f", dir + "/typo.yaml"});
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "typo.yaml")) << spec.status();
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "lerning_rate")) << spec.status();

  std::ofstream(dir + "/type.yaml") << "dataset: {path: /d}\noutput_dir: /o\n"
                                       "training: {epochs: many}\n";
  spec = Parse({"-f", dir + "/type.yaml"});
  ASSERT_FALSE(spec.ok());
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "epochs")) << spec.status();

  std::ofstream(dir + "/enum.yaml") << "dataset: {path: /d, layout: RAVDESS}\noutput_dir: /o\n";
  spec = Parse({"-f", dir + "/enum.yaml"});
  ASSERT_FALSE(spec.ok());
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "layout")) << spec.status();

  std::ofstream(dir + "/broken.yaml") << "dataset: [unclosed\n";
  spec = Parse({"-f", dir + "/broken.yaml"});
  ASSERT_FALSE(spec.ok());
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "broken.yaml")) << spec.status();

  std::ofstream(dir + "/list.yaml") << "- model\n- tiny\n";
  EXPECT_FALSE(Parse({"-f", dir + "/list.yaml"}).ok());

  // Validation after the file: a bad value names the field.
  std::ofstream(dir + "/range.yaml") << "dataset: {path: /d}\nmodel: tiny\noutput_dir: /o\n"
                                        "training: {batch_size: 100000}\n";
  spec = Parse({"-f", dir + "/range.yaml"});
  ASSERT_FALSE(spec.ok());
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "batch_size")) << spec.status();
}

TEST(JobSpecFlagsTest, JobStateNames) {
  EXPECT_EQ(*ParseJobState("running"), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(*ParseJobState("CANCELLED"), v1::JOB_STATE_CANCELLED);
  EXPECT_FALSE(ParseJobState("done").ok());
  EXPECT_EQ(JobStateName(v1::JOB_STATE_SUCCEEDED), "succeeded");
}

}  // namespace
}  // namespace ftune

namespace ftune {
namespace {

// Several corpora: --dataset repeats; a per-dataset flag given once applies to all, given once
// per --dataset to each in order.
TEST(JobSpecFlagsTest, RepeatedDatasetsAndPerDatasetFlags) {
  auto spec = Parse({"--dataset",       "/data/ravdess",
                     "--dataset",       "/data/crema",
                     "--dataset",       "/data/tess",
                     "--model",         "tiny",
                     "--output-dir",    "/runs/m",
                     "--layout",        "ravdess",
                     "--layout",        "crema-d",
                     "--layout",        "TESS",
                     "--split",         "speaker",
                     "--eval-fraction", "0.3",
                     "--label-map",     "anger=angry,fear=fearful",
                     "--label-map",     "ps=surprised"});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->dataset().path(), "/data/ravdess");
  EXPECT_EQ(spec->dataset().layout(), v1::DATASET_LAYOUT_RAVDESS);
  ASSERT_EQ(spec->extra_datasets_size(), 2);
  EXPECT_EQ(spec->extra_datasets(0).path(), "/data/crema");
  EXPECT_EQ(spec->extra_datasets(0).layout(), v1::DATASET_LAYOUT_CREMA_D);
  EXPECT_EQ(spec->extra_datasets(1).layout(), v1::DATASET_LAYOUT_TESS);
  for (const v1::DatasetSpec* d :
       {&spec->dataset(), &spec->extra_datasets(0), &spec->extra_datasets(1)}) {
    EXPECT_EQ(d->split(), v1::SPLIT_STRATEGY_SPEAKER);
    EXPECT_DOUBLE_EQ(d->eval_fraction(), 0.3);
  }
  EXPECT_EQ(spec->label_map().size(), 3u);
  EXPECT_EQ(spec->label_map().at("anger"), "angry");
  EXPECT_EQ(spec->label_map().at("ps"), "surprised");
  EXPECT_EQ(spec->report_to(), v1::REPORT_TO_TENSORBOARD);
  // crema_d is crema-d.
  EXPECT_TRUE(Parse(With({"--layout", "crema_d"})).ok());
}

TEST(JobSpecFlagsTest, DatasetFlagProblemsAreNamed) {
  auto count = Parse({"--dataset", "/a", "--dataset", "/b", "--dataset", "/c", "--model", "tiny",
                      "--output-dir", "/o", "--layout", "folders", "--layout", "folders"});
  ASSERT_FALSE(count.ok());
  EXPECT_TRUE(absl::StrContains(count.status().message(), "--layout: given 2 times for 3 datasets"))
      << count.status();
  auto twice =
      Parse({"--dataset", "/a", "--dataset", "/a", "--model", "tiny", "--output-dir", "/o"});
  ASSERT_FALSE(twice.ok());
  EXPECT_TRUE(absl::StrContains(twice.status().message(), "extra_datasets[0].path"))
      << twice.status();
  for (const char* bad : {"anger", "=angry", "anger=", "anger=angry,anger=mad"}) {
    auto spec = Parse(With({"--label-map", bad}));
    ASSERT_FALSE(spec.ok()) << bad;
    EXPECT_TRUE(absl::StrContains(spec.status().message(), "--label-map")) << spec.status();
  }
  auto layout = Parse(With({"--layout", "crema"}));
  ASSERT_FALSE(layout.ok());
  EXPECT_TRUE(absl::StrContains(layout.status().message(), "crema-d|tess|savee|emodb"))
      << layout.status();
  auto fraction = Parse(With({"--eval-fraction", "a lot"}));
  ASSERT_FALSE(fraction.ok());
  EXPECT_TRUE(absl::StrContains(fraction.status().message(), "--eval-fraction"))
      << fraction.status();
}

TEST(JobSpecFlagsTest, ReportTo) {
  auto none = Parse(With({"--report-to", "none"}));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->report_to(), v1::REPORT_TO_NONE);
  auto bad = Parse(With({"--report-to", "wandb"}));
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "tensorboard|none")) << bad.status();
}

TEST(JobSpecFlagsTest, MultiCorpusSpecFileAndFlagsOnTop) {
  const std::string dir = testing::MakeTempDir("spec");
  const std::string file = dir + "/multi.yaml";
  std::ofstream(file) << R"(dataset: {path: /data/ravdess}
extra_datasets:
  - {path: /data/crema, layout: DATASET_LAYOUT_CREMA_D}
  - {path: /data/emodb, layout: DATASET_LAYOUT_EMODB, eval_fraction: 0.1}
label_map: {anger: angry, boredom: neutral}
model: tiny
output_dir: /runs/multi
report_to: REPORT_TO_NONE
)";
  auto spec = Parse({"-f", file});
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->extra_datasets_size(), 2);
  EXPECT_EQ(spec->extra_datasets(1).layout(), v1::DATASET_LAYOUT_EMODB);
  EXPECT_EQ(spec->label_map().at("boredom"), "neutral");
  EXPECT_EQ(spec->report_to(), v1::REPORT_TO_NONE);
  // --dataset replaces the list's paths (other fields stay where a path stays).
  auto two = Parse({"-f", file, "--dataset", "/x", "--dataset", "/y"});
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->dataset().path(), "/x");
  ASSERT_EQ(two->extra_datasets_size(), 1);
  EXPECT_EQ(two->extra_datasets(0).path(), "/y");
  EXPECT_EQ(two->extra_datasets(0).layout(), v1::DATASET_LAYOUT_CREMA_D);

  std::ofstream(dir + "/empty-map.yaml") << "dataset: {path: /d}\nmodel: tiny\noutput_dir: /o\n"
                                            "label_map: {anger: ''}\n";
  auto empty = Parse({"-f", dir + "/empty-map.yaml"});
  ASSERT_FALSE(empty.ok());
  EXPECT_TRUE(absl::StrContains(empty.status().message(), "label_map['anger']")) << empty.status();
}

}  // namespace
}  // namespace ftune
