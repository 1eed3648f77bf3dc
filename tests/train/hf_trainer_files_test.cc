// Hugging Face Trainer files from job events: trainer_state.json in HF's shape (and only the
// fields transformers reads), the log continued across a resume, the results files, and the
// model card's YAML front matter, per-class table and confusion matrix.
#include "worker/train/hf_trainer_files.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/process.h"
#include "worker/train/model_card.h"

namespace ftune::train {
namespace {

namespace fs = std::filesystem;
using ftune::v1::JobEvent;
using ::testing::HasSubstr;
using ::testing::Not;

class RecordingSink : public EventSink {
 public:
  void Emit(JobEvent event) override { events.push_back(std::move(event)); }
  std::vector<JobEvent> events;
};

nlohmann::json ReadJson(const fs::path& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return in ? nlohmann::json::parse(in) : nlohmann::json{};
}

std::string ReadText(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

JobEvent Summary() {
  JobEvent event;
  auto* d = event.mutable_dataset_summary();
  d->set_path("/data/ravdess");
  d->set_layout("ravdess");
  d->set_split("speaker");
  for (const char* label : {"angry", "calm|quiet"}) d->add_labels(label);
  d->set_train_files(16);
  d->set_eval_files(4);
  (*d->mutable_train_classes())["angry"] = 8;
  (*d->mutable_train_classes())["calm|quiet"] = 8;
  (*d->mutable_eval_classes())["angry"] = 2;
  (*d->mutable_eval_classes())["calm|quiet"] = 2;
  d->add_eval_speakers("Actor_02");
  d->add_train_speakers("Actor_01");
  return event;
}

JobEvent Progress(int64_t step, double loss) {
  JobEvent event;
  auto* p = event.mutable_train_progress();
  p->set_step(step);
  p->set_epoch_progress(step / 4.0);
  p->set_loss(loss);
  p->set_learning_rate(1e-3 / step);
  p->set_grad_norm(2.0);
  return event;
}

// Confusion [[2, 0], [1, 1]]: accuracy 0.75.
JobEvent Eval(int64_t step, double accuracy, bool is_best) {
  JobEvent event;
  auto* r = event.mutable_eval_result();
  r->set_step(step);
  r->set_epoch_progress(step / 4.0);
  r->set_loss(0.6);
  r->set_accuracy(accuracy);
  r->set_macro_f1(0.73);
  r->add_labels("angry");
  r->add_labels("calm|quiet");
  for (uint32_t c : {2, 0, 1, 1}) r->add_confusion(c);
  r->set_num_samples(4);
  r->set_seconds(2.0);
  r->set_is_best(is_best);
  return event;
}

HfTrainerFilesOptions Options(const std::string& out) {
  HfTrainerFilesOptions options;
  options.spec.set_name("ser-demo");
  options.config.output_dir = out;
  options.config.epochs = 2;
  options.config.batch_size = 4;
  options.config.log_every_steps = 2;
  options.started_from = "the tiny preset (random initialisation)";
  return options;
}

// The TrainerState fields transformers has read since 4.31; it refuses any other.
const std::set<std::string>& TrainerStateFields() {
  static const auto* kFields = new std::set<std::string>{"best_metric",
                                                         "best_model_checkpoint",
                                                         "epoch",
                                                         "eval_steps",
                                                         "global_step",
                                                         "is_hyper_param_search",
                                                         "is_local_process_zero",
                                                         "is_world_process_zero",
                                                         "log_history",
                                                         "logging_steps",
                                                         "max_steps",
                                                         "num_train_epochs",
                                                         "save_steps",
                                                         "total_flos",
                                                         "train_batch_size",
                                                         "trial_name",
                                                         "trial_params"};
  return *kFields;
}

TEST(HfTrainerFilesTest, CheckpointTrainerStateHasHuggingFacesShape) {
  const std::string out = ftune::testing::MakeTempDir("hf");
  RecordingSink next;
  HfTrainerFiles hf(Options(out), &next);
  hf.Emit(Summary());
  hf.Emit(Progress(2, 1.5));
  hf.Emit(Progress(4, 1.0));
  hf.Emit(Eval(4, 0.75, /*is_best=*/true));
  const fs::path checkpoint = fs::path(out) / "checkpoint-4";
  fs::create_directories(checkpoint);
  ASSERT_TRUE(hf.WriteCheckpointFiles(checkpoint.string(), 4, 1.0).ok());
  EXPECT_EQ(next.events.size(), 4u);  // all passed on

  const nlohmann::json state = ReadJson(checkpoint / "trainer_state.json");
  for (const auto& [key, value] : state.items()) {
    EXPECT_TRUE(TrainerStateFields().count(key)) << "transformers would refuse " << key;
  }
  EXPECT_EQ(state["global_step"], 4);
  EXPECT_EQ(state["epoch"], 1.0);
  EXPECT_EQ(state["best_metric"], 0.75);
  EXPECT_EQ(state["best_model_checkpoint"], (fs::path(out) / "checkpoint-4").string());
  EXPECT_EQ(state["max_steps"], 8);  // 16 clips / batch 4 = 4 steps an epoch, 2 epochs
  EXPECT_EQ(state["num_train_epochs"], 2);
  EXPECT_EQ(state["logging_steps"], 2);
  EXPECT_EQ(state["train_batch_size"], 4);
  const nlohmann::json& log = state["log_history"];
  ASSERT_EQ(log.size(), 3u);
  EXPECT_EQ(log[0], (nlohmann::json{{"epoch", 0.5},
                                    {"grad_norm", 2.0},
                                    {"learning_rate", 5e-4},
                                    {"loss", 1.5},
                                    {"step", 2}}));
  EXPECT_EQ(log[2]["step"], 4);
  EXPECT_EQ(log[2]["epoch"], 1.0);
  EXPECT_EQ(log[2]["eval_accuracy"], 0.75);
  EXPECT_EQ(log[2]["eval_loss"], 0.6);
  EXPECT_EQ(log[2]["eval_macro_f1"], 0.73);
  EXPECT_EQ(log[2]["eval_runtime"], 2.0);
  EXPECT_EQ(log[2]["eval_samples_per_second"], 2.0);
  EXPECT_EQ(log[2]["eval_steps_per_second"], 0.5);
  // And the checkpoint's model card.
  EXPECT_THAT(ReadText(checkpoint / "README.md"), HasSubstr("library_name: transformers"));
}

TEST(HfTrainerFilesTest, AResumedRunContinuesTheLogOfItsCheckpoint) {
  const std::string out = ftune::testing::MakeTempDir("hf-resume");
  const fs::path checkpoint = fs::path(out) / "checkpoint-4";
  fs::create_directories(checkpoint);
  {
    RecordingSink next;
    HfTrainerFiles first(Options(out), &next);
    first.Emit(Summary());
    first.Emit(Progress(2, 1.5));
    first.Emit(Progress(4, 1.0));
    first.Emit(Eval(4, 0.75, true));
    ASSERT_TRUE(first.WriteCheckpointFiles(checkpoint.string(), 4, 1.0).ok());
    first.Emit(Progress(6, 0.9));  // after the checkpoint: lost with the run
  }
  RecordingSink next;
  HfTrainerFiles resumed(Options(out), &next);
  ASSERT_TRUE(resumed.ContinueFrom(checkpoint.string()).ok());
  resumed.Emit(Summary());
  resumed.Emit(Progress(6, 0.5));
  resumed.Emit(Progress(8, 0.5));
  resumed.Emit(Eval(8, 0.5, false));
  const fs::path last = fs::path(out) / "checkpoint-8";
  fs::create_directories(last);
  ASSERT_TRUE(resumed.WriteCheckpointFiles(last.string(), 8, 2.0).ok());
  ASSERT_TRUE(resumed.WriteRunResults(/*train_runtime=*/4.0).ok());

  const nlohmann::json state = ReadJson(last / "trainer_state.json");
  std::vector<int64_t> steps;
  for (const auto& entry : state["log_history"]) steps.push_back(entry["step"]);
  EXPECT_THAT(steps, ::testing::ElementsAre(2, 4, 4, 6, 8, 8));
  EXPECT_EQ(state["log_history"][3]["loss"], 0.5);  // the resumed run's step 6
  // The best is still the evaluation before the resume.
  EXPECT_EQ(state["best_metric"], 0.75);
  EXPECT_EQ(state["best_model_checkpoint"], (fs::path(out) / "checkpoint-4").string());

  // Results: train_loss is the mean over all 8 steps of the logged window means.
  const nlohmann::json train = ReadJson(fs::path(out) / "train_results.json");
  EXPECT_DOUBLE_EQ(train["train_loss"].get<double>(), (1.5 * 2 + 1.0 * 2 + 0.5 * 2 + 0.5 * 2) / 8);
  EXPECT_EQ(train["epoch"], 2.0);
  EXPECT_EQ(train["train_runtime"], 4.0);
  EXPECT_EQ(train["train_steps_per_second"], 1.0);    // 4 steps in 4 s
  EXPECT_EQ(train["train_samples_per_second"], 4.0);  // 16 clips (one epoch) in 4 s
  const nlohmann::json eval = ReadJson(fs::path(out) / "eval_results.json");
  EXPECT_EQ(eval["eval_accuracy"], 0.75);  // best/, as HF with load_best_model_at_end
  EXPECT_EQ(eval["epoch"], 2.0);
  const nlohmann::json all = ReadJson(fs::path(out) / "all_results.json");
  EXPECT_EQ(all["eval_accuracy"], 0.75);
  EXPECT_EQ(all["train_loss"], train["train_loss"]);
  const nlohmann::json final_state = ReadJson(fs::path(out) / "trainer_state.json");
  EXPECT_EQ(final_state["global_step"], 8);
  EXPECT_EQ(final_state["log_history"].back()["train_loss"], train["train_loss"]);
  EXPECT_EQ(final_state["log_history"].back()["step"], 8);
}

TEST(HfTrainerFilesTest, ContinueFromSaysWhyItCannot) {
  const std::string out = ftune::testing::MakeTempDir("hf-bad");
  RecordingSink next;
  HfTrainerFiles hf(Options(out), &next);
  EXPECT_EQ(hf.ContinueFrom(out).code(), absl::StatusCode::kNotFound);
  std::ofstream(fs::path(out) / "trainer_state.json") << R"({"global_step": 3})";
  const absl::Status bad = hf.ContinueFrom(out);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.message()), HasSubstr("log_history"));
}

// The front matter as the Hub reads it: a YAML document between '---' lines.
YAML::Node FrontMatter(const std::string& card) {
  EXPECT_EQ(card.rfind("---\n", 0), 0u);
  const size_t end = card.find("\n---\n", 4);
  EXPECT_NE(end, std::string::npos);
  return YAML::Load(card.substr(4, end - 4));
}

TEST(ModelCardTest, FrontMatterResultsPerClassTableAndConfusionMatrix) {
  ModelCardInputs in;
  in.model_name = "ser: demo";
  in.base_model = "facebook/hubert-base-ls960";
  in.dataset = Summary().dataset_summary();
  in.eval = Eval(4, 0.75, true).eval_result();
  in.step = 4;
  in.epoch = 1.0;
  in.hyperparameters = {{"learning_rate", "5e-05"}, {"num_epochs", "3"}};
  in.log_history = {{{"loss", 1.0}, {"step", 2}, {"epoch", 0.5}},
                    {{"eval_loss", 0.6}, {"eval_accuracy", 0.75}, {"step", 4}, {"epoch", 1.0}}};
  const std::string card = RenderModelCard(in);

  const YAML::Node meta = FrontMatter(card);
  EXPECT_EQ(meta["library_name"].as<std::string>(), "transformers");
  EXPECT_EQ(meta["pipeline_tag"].as<std::string>(), "audio-classification");
  EXPECT_EQ(meta["base_model"].as<std::string>(), "facebook/hubert-base-ls960");
  EXPECT_EQ(meta["datasets"][0].as<std::string>(), "ravdess");
  EXPECT_EQ(meta["tags"][0].as<std::string>(), "audio-classification");
  EXPECT_EQ(meta["metrics"][0].as<std::string>(), "accuracy");
  const YAML::Node result = meta["model-index"][0]["results"][0];
  EXPECT_EQ(meta["model-index"][0]["name"].as<std::string>(), "ser: demo");
  EXPECT_EQ(result["task"]["type"].as<std::string>(), "audio-classification");
  EXPECT_EQ(result["metrics"][0]["type"].as<std::string>(), "accuracy");
  EXPECT_DOUBLE_EQ(result["metrics"][0]["value"].as<double>(), 0.75);
  EXPECT_DOUBLE_EQ(result["metrics"][1]["value"].as<double>(), 0.73);

  EXPECT_THAT(card, HasSubstr("- Accuracy: 0.7500"));
  // Per class: angry has precision 2/3, recall 1; "calm|quiet" (escaped) precision 1, recall 1/2.
  EXPECT_THAT(card, HasSubstr("| angry | 0.6667 | 1.0000 | 0.8000 | 2 |"));
  EXPECT_THAT(card, HasSubstr("| calm\\|quiet | 1.0000 | 0.5000 | 0.6667 | 2 |"));
  EXPECT_THAT(card, HasSubstr("| true \\ predicted | angry | calm\\|quiet |"));
  EXPECT_THAT(card, HasSubstr("| calm\\|quiet | 1 | 1 |"));
  EXPECT_THAT(card, HasSubstr("- learning_rate: 5e-05"));
  EXPECT_THAT(card, HasSubstr("| 1.0000 | 1.00 | 4 | 0.6000 | 0.7500 | - |"));
  EXPECT_THAT(card, HasSubstr("Speakers held out for evaluation: Actor_02"));
}

TEST(ModelCardTest, WithoutBaseModelOrEvaluation) {
  ModelCardInputs in;
  in.model_name = "m";
  in.started_from = "the tiny preset (random initialisation)";
  in.dataset = Summary().dataset_summary();
  in.step = 3;
  const std::string card = RenderModelCard(in);
  const YAML::Node meta = FrontMatter(card);
  EXPECT_FALSE(meta["base_model"]);
  EXPECT_FALSE(meta["model-index"]);
  EXPECT_THAT(card, HasSubstr("Trained from the tiny preset (random initialisation)"));
  EXPECT_THAT(card, HasSubstr("saved without an evaluation"));
  EXPECT_THAT(card, Not(HasSubstr("Confusion matrix")));
}

TEST(ModelCardTest, DatasetNamesPerCorpus) {
  ftune::v1::DatasetSummary multi;
  auto* a = multi.add_corpora();
  a->set_layout("crema-d");
  a->set_path("/data/CREMA-D/AudioWAV");
  auto* b = multi.add_corpora();
  b->set_layout("audiofolder");
  b->set_path("/data/my_emotions/");
  auto* c = multi.add_corpora();
  c->set_layout("manifest");
  c->set_path("/data/extra/list.csv");
  EXPECT_THAT(CardDatasetNames(multi), ::testing::ElementsAre("crema-d", "my_emotions", "list"));
}

}  // namespace
}  // namespace ftune::train
