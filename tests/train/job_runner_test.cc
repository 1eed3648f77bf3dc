#include "worker/train/job_runner.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/process.h"
#include "tests/train/synthetic.h"
#include "tests/train/tfevents_reader.h"
#include "worker/train/checkpoint_manager.h"

namespace ftune::train {
namespace {

using testing::ReadTensorBoardRun;
using testing::TagSteps;

using ftune::v1::JobEvent;

class RecordingSink : public EventSink {
 public:
  void Emit(JobEvent event) override { events.push_back(std::move(event)); }
  std::vector<JobEvent> events;
};

ftune::v1::Job ToneJob(const std::string& data_dir, const std::string& out_dir) {
  testing::ToneSetOptions tones;
  tones.train_per_class = 6;
  tones.eval_per_class = 2;
  testing::MakeToneDataset(data_dir, tones);
  ftune::v1::Job job;
  job.set_id("j1");
  ftune::v1::JobSpec* spec = job.mutable_spec();
  spec->mutable_dataset()->set_path(data_dir);
  spec->mutable_dataset()->set_layout(ftune::v1::DATASET_LAYOUT_FOLDERS);
  spec->set_model("tiny");
  spec->set_output_dir(out_dir);
  spec->set_threads(1);
  spec->mutable_training()->set_epochs(2);
  spec->mutable_training()->set_batch_size(4);
  spec->mutable_training()->set_learning_rate(1e-3);
  spec->mutable_training()->set_precision(ftune::v1::PRECISION_FP32);
  return job;
}

TEST(JobRunnerTest, RunsAJobToSuccess) {
  const std::string out = ftune::testing::MakeTempDir("out");
  ftune::v1::Job job = ToneJob(ftune::testing::MakeTempDir("data"), out);
  RecordingSink sink;
  CancelToken cancel;
  JobRunResult result = MakeFineTuneRunner({})->Run(job, {.device = "cpu", .distributed = {}}, &sink, &cancel);
  EXPECT_EQ(result.outcome, ftune::v1::JOB_OUTCOME_SUCCEEDED) << result.error;
  ASSERT_GE(sink.events.size(), 2u);
  // First the recipe that filled the unset fields, then what the dataset holds.
  EXPECT_TRUE(sink.events[0].has_log());
  EXPECT_EQ(sink.events[0].log().message().rfind("from-scratch recipe (random-init preset 'tiny')", 0), 0u)
      << sink.events[0].log().message();
  // Its learning rate is the recipe's own; only the epochs differ.
  EXPECT_TRUE(absl::EndsWith(sink.events[0].log().message(), "set by the job: epochs 2"))
      << sink.events[0].log().message();
  EXPECT_TRUE(sink.events[1].has_dataset_summary());
  EXPECT_EQ(sink.events[1].dataset_summary().labels_size(), 3);
  EXPECT_EQ(result.best_metric_name, "accuracy");
  EXPECT_TRUE(CheckpointManager::IsComplete(result.best_checkpoint));
  EXPECT_TRUE(CheckpointManager::IsComplete(result.last_checkpoint));
  bool random_init_note = false;
  for (const auto& e : sink.events) {
    if (e.has_log() && e.log().message().find("random-init") != std::string::npos) {
      random_init_note = true;
    }
  }
  EXPECT_TRUE(random_init_note);
}

bool HasLog(const RecordingSink& sink, const std::string& fragment) {
  for (const auto& e : sink.events) {
    if (e.has_log() && e.log().message().find(fragment) != std::string::npos) return true;
  }
  return false;
}

// The path users take with a downloaded facebook/hubert-base-ls960: an ftune checkpoint trained
// on 4 classes is the "pretrained" model of a job on 8 (the 4 plus 4 new ones). The head is
// re-initialised for the new label set (said in a log line), the feature encoder is frozen by
// default, and after the same few epochs it is well ahead of the same job from scratch.
TEST(JobRunnerTest, FineTuningACheckpointOnMoreLabelsLearnsFasterThanFromScratch) {
  testing::ToneSetOptions tones;
  tones.class_hz = {180, 180, 300, 300, 500, 500, 800, 800};
  tones.class_glide = {1.6, 1 / 1.6, 1.6, 1 / 1.6, 1.6, 1 / 1.6, 1.6, 1 / 1.6};
  tones.train_per_class = 8;
  tones.eval_per_class = 4;
  tones.seconds = 0.6;
  const std::string eight = ftune::testing::MakeTempDir("eight");
  testing::MakeToneDataset(eight, tones);
  testing::ToneSetOptions four = tones;
  four.class_hz.resize(4);
  four.class_glide.resize(4);
  const std::string first = ftune::testing::MakeTempDir("four");
  testing::MakeToneDataset(first, four);

  auto job = [](const std::string& data, const std::string& model, uint32_t epochs) {
    ftune::v1::Job job;
    job.set_id("j");
    ftune::v1::JobSpec* spec = job.mutable_spec();
    spec->mutable_dataset()->set_path(data);
    spec->mutable_dataset()->set_layout(ftune::v1::DATASET_LAYOUT_FOLDERS);
    spec->set_model(model);
    spec->set_output_dir(ftune::testing::MakeTempDir("out"));
    spec->mutable_training()->set_epochs(epochs);
    spec->mutable_training()->set_learning_rate(1e-3);  // both arms alike
    spec->mutable_training()->set_warmup_ratio(0.1);
    return job;
  };
  auto run = [](const ftune::v1::Job& job, RecordingSink* sink) {
    CancelToken cancel;
    JobRunResult result = MakeFineTuneRunner({})->Run(job, {.device = "cpu", .distributed = {}}, sink, &cancel);
    EXPECT_EQ(result.outcome, ftune::v1::JOB_OUTCOME_SUCCEEDED) << result.error;
    return result;
  };
  RecordingSink pretrain_sink;
  const JobRunResult pretrained = run(job(first, "tiny", 20), &pretrain_sink);
  ASSERT_TRUE(CheckpointManager::IsComplete(pretrained.best_checkpoint));

  constexpr uint32_t kEpochs = 4;
  RecordingSink fine_tune_sink, scratch_sink;
  run(job(eight, pretrained.best_checkpoint, kEpochs), &fine_tune_sink);
  run(job(eight, "tiny", kEpochs), &scratch_sink);
  EXPECT_TRUE(HasLog(fine_tune_sink, "fine-tune recipe (checkpoint folder)"));
  EXPECT_TRUE(HasLog(fine_tune_sink, "fresh classification head: labels [c0, c1, c2, c3, c4, c5, "
                                     "c6, c7] differ from the folder's [c0, c1, c2, c3]"));
  EXPECT_TRUE(HasLog(fine_tune_sink, "feature encoder frozen"));
  EXPECT_TRUE(HasLog(scratch_sink, "feature encoder trainable"));
  auto accuracy = [](const RecordingSink& sink) {
    std::vector<double> curve;
    for (const auto& e : sink.events) {
      if (e.has_eval_result()) curve.push_back(e.eval_result().accuracy());
    }
    return curve;
  };
  const std::vector<double> fine_tuned = accuracy(fine_tune_sink), scratch = accuracy(scratch_sink);
  ASSERT_EQ(fine_tuned.size(), kEpochs);
  ASSERT_EQ(scratch.size(), kEpochs);
  std::cout << "eval accuracy per epoch, fine-tuned:";
  for (double a : fine_tuned) std::cout << " " << a;
  std::cout << "; from scratch:";
  for (double a : scratch) std::cout << " " << a;
  std::cout << "\n";
  EXPECT_GE(fine_tuned.back(), scratch.back() + 0.2);
}

nlohmann::json ReadJson(const std::filesystem::path& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return in ? nlohmann::json::parse(in) : nlohmann::json{};
}

// 18 training clips in batches of 4: 5 steps an epoch, 10 in all; progress every 2 steps,
// an evaluation (and a best checkpoint) at each epoch's end.
ftune::v1::Job LoggedToneJob(const std::string& out) {
  ftune::v1::Job job = ToneJob(ftune::testing::MakeTempDir("data"), out);
  job.mutable_spec()->set_name("tones");
  job.mutable_spec()->mutable_training()->set_log_every_steps(2);
  return job;
}

// What a Hugging Face user finds in the output folder: TensorBoard curves, HF's
// trainer_state.json in each checkpoint (beside ftune's own), the results files and a model
// card in best/.
TEST(JobRunnerTest, WritesTensorBoardCurvesAndHuggingFaceFiles) {
  namespace fs = std::filesystem;
  const std::string out = ftune::testing::MakeTempDir("out");
  RecordingSink sink;
  CancelToken cancel;
  JobRunResult result = MakeFineTuneRunner({})->Run(LoggedToneJob(out), {.device = "cpu", .distributed = {}}, &sink, &cancel);
  ASSERT_EQ(result.outcome, ftune::v1::JOB_OUTCOME_SUCCEEDED) << result.error;

  const nlohmann::json run = ReadTensorBoardRun(out + "/runs/tones");
  EXPECT_EQ(run["files"].size(), 1u);
  EXPECT_THAT(TagSteps(run, "train/loss"), ::testing::ElementsAre(2, 4, 6, 8, 10));
  EXPECT_THAT(TagSteps(run, "train/learning_rate"), ::testing::ElementsAre(2, 4, 6, 8, 10));
  EXPECT_THAT(TagSteps(run, "eval/accuracy"), ::testing::ElementsAre(5, 10));
  EXPECT_THAT(TagSteps(run, "eval/macro_f1"), ::testing::ElementsAre(5, 10));
  ASSERT_EQ(run["texts"]["hyperparameters"].size(), 1u);
  EXPECT_THAT(run["texts"]["hyperparameters"][0][1].get<std::string>(),
              ::testing::HasSubstr("\"model\": \"tiny\""));

  const fs::path last = fs::path(out) / "checkpoint-10";
  const nlohmann::json state = ReadJson(last / "trainer_state.json");
  EXPECT_EQ(state["global_step"], 10);
  EXPECT_DOUBLE_EQ(state["epoch"].get<double>(), 2.0);
  EXPECT_EQ(state["max_steps"], 10);
  std::vector<int64_t> train_steps, eval_steps;
  for (const auto& entry : state["log_history"]) {
    (entry.contains("eval_loss") ? eval_steps : train_steps).push_back(entry["step"]);
    EXPECT_TRUE(entry.contains("epoch")) << entry.dump();
  }
  EXPECT_THAT(train_steps, ::testing::ElementsAre(2, 4, 6, 8, 10));
  EXPECT_THAT(eval_steps, ::testing::ElementsAre(5, 10));
  EXPECT_DOUBLE_EQ(state["log_history"][2]["epoch"].get<double>(), 1.0);  // the eval at step 5
  EXPECT_EQ(state["best_metric"], result.best_metric);
  EXPECT_TRUE(fs::exists(last / "training_state" / "trainer_state.json"));  // ftune's own

  const nlohmann::json all = ReadJson(fs::path(out) / "all_results.json");
  for (const char* key : {"epoch", "train_loss", "train_runtime", "train_samples_per_second",
                          "train_steps_per_second", "eval_accuracy", "eval_loss"}) {
    EXPECT_TRUE(all.contains(key)) << key;
  }
  EXPECT_EQ(all["eval_accuracy"], result.best_metric);
  EXPECT_TRUE(fs::exists(fs::path(out) / "eval_results.json"));
  EXPECT_TRUE(fs::exists(fs::path(out) / "train_results.json"));
  EXPECT_EQ(ReadJson(fs::path(out) / "trainer_state.json")["log_history"].back()["step"], 10);

  std::ifstream card_file(fs::path(result.best_checkpoint) / "README.md");
  const std::string card((std::istreambuf_iterator<char>(card_file)),
                         std::istreambuf_iterator<char>());
  EXPECT_EQ(card.rfind("---\nlibrary_name: transformers\n", 0), 0u) << card.substr(0, 200);
  EXPECT_THAT(card, ::testing::HasSubstr("# tones"));
  EXPECT_THAT(card, ::testing::HasSubstr("### Confusion matrix"));
  EXPECT_THAT(card, ::testing::HasSubstr("Trained from the tiny preset (random initialisation)"));
  // The hyperparameters as they were resolved: a preset's feature encoder trains.
  EXPECT_THAT(card, ::testing::HasSubstr("- freeze_feature_encoder: false"));
}

// A worker lost after step 6 (its newest checkpoint is the best one at step 5) and the same job
// run again: the curves and the log continue from step 5 without a step written twice.
TEST(JobRunnerTest, AResumedJobContinuesItsCurvesAndLogWithoutDuplicates) {
  namespace fs = std::filesystem;
  const std::string out = ftune::testing::MakeTempDir("out");
  const ftune::v1::Job job = LoggedToneJob(out);
  // What the lost worker wrote to TensorBoard before it learnt of the loss: its writer thread
  // writes nothing after that, so step 6 (and, on a slow writer, earlier steps) may be missing.
  std::vector<int64_t> written_before_loss, evals_before_loss;
  {
    class LoseLeaseAtStep6 : public EventSink {
     public:
      explicit LoseLeaseAtStep6(CancelToken* cancel) : cancel_(cancel) {}
      void Emit(ftune::v1::JobEvent event) override {
        if (event.has_train_progress() && event.train_progress().step() >= 6) {
          cancel_->Request(StopReason::kLeaseLost);
        }
      }
      CancelToken* cancel_;
    };
    CancelToken cancel;
    LoseLeaseAtStep6 sink(&cancel);
    JobRunResult lost = MakeFineTuneRunner({})->Run(job, {.device = "cpu", .distributed = {}}, &sink, &cancel);
    ASSERT_EQ(lost.outcome, ftune::v1::JOB_OUTCOME_REQUEUE) << lost.error;
    ASSERT_EQ(CheckpointManager::FindLatestComplete(out),
              (fs::path(out) / "checkpoint-5").string());
    const std::vector<int64_t> steps =
        TagSteps(ReadTensorBoardRun(out + "/runs/tones"), "train/loss");
    const std::vector<int64_t> logged = {2, 4, 6};
    ASSERT_LE(steps.size(), logged.size());
    EXPECT_TRUE(std::equal(steps.begin(), steps.end(), logged.begin())) << "a prefix of 2 4 6";
    for (int64_t step : steps) {
      if (step < 6) written_before_loss.push_back(step);
    }
    evals_before_loss = TagSteps(ReadTensorBoardRun(out + "/runs/tones"), "eval/loss");
    EXPECT_LE(evals_before_loss.size(), 1u);
  }
  RecordingSink sink;
  CancelToken cancel;
  JobRunResult result = MakeFineTuneRunner({})->Run(job, {.device = "cpu", .distributed = {}}, &sink, &cancel);
  ASSERT_EQ(result.outcome, ftune::v1::JOB_OUTCOME_SUCCEEDED) << result.error;

  const nlohmann::json run = ReadTensorBoardRun(out + "/runs/tones");
  EXPECT_EQ(run["files"].size(), 2u);
  // The resumed run cut what the lost one wrote past checkpoint 5 and wrote 6 8 10 itself.
  std::vector<int64_t> expected = written_before_loss;
  expected.insert(expected.end(), {6, 8, 10});
  EXPECT_EQ(TagSteps(run, "train/loss"), expected);
  evals_before_loss.push_back(10);
  EXPECT_EQ(TagSteps(run, "eval/loss"), evals_before_loss);
  EXPECT_EQ(run["texts"]["hyperparameters"].size(), 1u);

  const nlohmann::json state = ReadJson(fs::path(out) / "checkpoint-10" / "trainer_state.json");
  std::set<std::pair<int64_t, bool>> seen;
  for (const auto& entry : state["log_history"]) {
    EXPECT_TRUE(seen.insert({entry["step"], entry.contains("eval_loss")}).second)
        << "logged twice: " << entry.dump();
  }
  EXPECT_EQ(seen.size(), 7u);  // progress 2 4 6 8 10, evaluations 5 10
  EXPECT_TRUE(std::filesystem::exists(fs::path(out) / "all_results.json"));
}

// A job that starts from a folder whose config.json names the Hub model it came from
// (_name_or_path, as transformers writes it) gives that model as the card's base_model.
TEST(JobRunnerTest, TheModelCardNamesTheHubModelAJobStartedFrom) {
  namespace fs = std::filesystem;
  ftune::v1::Job first =
      ToneJob(ftune::testing::MakeTempDir("data"), ftune::testing::MakeTempDir("out"));
  first.mutable_spec()->mutable_training()->set_epochs(1);
  RecordingSink sink;
  CancelToken cancel;
  JobRunResult pretrained = MakeFineTuneRunner({})->Run(first, {.device = "cpu", .distributed = {}}, &sink, &cancel);
  ASSERT_EQ(pretrained.outcome, ftune::v1::JOB_OUTCOME_SUCCEEDED) << pretrained.error;
  const fs::path config = fs::path(pretrained.best_checkpoint) / "config.json";
  nlohmann::json json = ReadJson(config);
  json["_name_or_path"] = "facebook/hubert-base-ls960";
  std::ofstream(config) << json.dump(2);

  ftune::v1::Job second = first;
  second.mutable_spec()->set_model(pretrained.best_checkpoint);
  second.mutable_spec()->set_output_dir(ftune::testing::MakeTempDir("out"));
  JobRunResult result = MakeFineTuneRunner({})->Run(second, {.device = "cpu", .distributed = {}}, &sink, &cancel);
  ASSERT_EQ(result.outcome, ftune::v1::JOB_OUTCOME_SUCCEEDED) << result.error;
  std::ifstream card_file(fs::path(result.best_checkpoint) / "README.md");
  const std::string card((std::istreambuf_iterator<char>(card_file)),
                         std::istreambuf_iterator<char>());
  EXPECT_THAT(card, ::testing::HasSubstr("\nbase_model: \"facebook/hubert-base-ls960\"\n"));
  EXPECT_THAT(card, ::testing::HasSubstr("Fine-tuned from [facebook/hubert-base-ls960]"));
  EXPECT_THAT(card, ::testing::HasSubstr("- freeze_feature_encoder: true"));
}

TEST(JobRunnerTest, ReportToNoneWritesNoEventFiles) {
  const std::string out = ftune::testing::MakeTempDir("out");
  ftune::v1::Job job = ToneJob(ftune::testing::MakeTempDir("data"), out);
  job.mutable_spec()->set_report_to(ftune::v1::REPORT_TO_NONE);
  job.mutable_spec()->mutable_training()->set_epochs(1);
  RecordingSink sink;
  CancelToken cancel;
  JobRunResult result = MakeFineTuneRunner({})->Run(job, {.device = "cpu", .distributed = {}}, &sink, &cancel);
  ASSERT_EQ(result.outcome, ftune::v1::JOB_OUTCOME_SUCCEEDED) << result.error;
  EXPECT_FALSE(std::filesystem::exists(out + "/runs"));
  EXPECT_TRUE(std::filesystem::exists(out + "/all_results.json"));
}

TEST(JobRunnerTest, MissingDatasetFailsForGood) {
  ftune::v1::Job job =
      ToneJob(ftune::testing::MakeTempDir("data"), ftune::testing::MakeTempDir("out"));
  job.mutable_spec()->mutable_dataset()->set_path("/nonexistent/ftune-dataset");
  RecordingSink sink;
  CancelToken cancel;
  JobRunResult result = MakeFineTuneRunner({})->Run(job, {.device = "cpu", .distributed = {}}, &sink, &cancel);
  EXPECT_EQ(result.outcome, ftune::v1::JOB_OUTCOME_FAILED);
  EXPECT_FALSE(result.error.empty());
}

TEST(JobRunnerTest, BadSpecFailsForGood) {
  ftune::v1::Job job =
      ToneJob(ftune::testing::MakeTempDir("data"), ftune::testing::MakeTempDir("out"));
  job.mutable_spec()->mutable_training()->set_precision(ftune::v1::PRECISION_FP16);  // CPU
  RecordingSink sink;
  CancelToken cancel;
  JobRunResult result = MakeFineTuneRunner({})->Run(job, {.device = "cpu", .distributed = {}}, &sink, &cancel);
  EXPECT_EQ(result.outcome, ftune::v1::JOB_OUTCOME_FAILED);
  EXPECT_NE(result.error.find("fp16"), std::string::npos) << result.error;
}

TEST(JobRunnerTest, HandBackBeforeTrainingRequeues) {
  const std::string out = ftune::testing::MakeTempDir("out");
  ftune::v1::Job job = ToneJob(ftune::testing::MakeTempDir("data"), out);
  RecordingSink sink;
  CancelToken cancel;
  cancel.Request(StopReason::kHandBack);
  JobRunResult result = MakeFineTuneRunner({})->Run(job, {.device = "cpu", .distributed = {}}, &sink, &cancel);
  EXPECT_EQ(result.outcome, ftune::v1::JOB_OUTCOME_REQUEUE);
}

}  // namespace
}  // namespace ftune::train
