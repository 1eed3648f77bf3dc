#include "worker/train/job_runner.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/support/process.h"
#include "tests/train/synthetic.h"
#include "worker/train/checkpoint_manager.h"

namespace ftune::train {
namespace {

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
  JobRunResult result = MakeFineTuneRunner({})->Run(job, "cpu", &sink, &cancel);
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
    JobRunResult result = MakeFineTuneRunner({})->Run(job, "cpu", sink, &cancel);
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

TEST(JobRunnerTest, MissingDatasetFailsForGood) {
  ftune::v1::Job job =
      ToneJob(ftune::testing::MakeTempDir("data"), ftune::testing::MakeTempDir("out"));
  job.mutable_spec()->mutable_dataset()->set_path("/nonexistent/ftune-dataset");
  RecordingSink sink;
  CancelToken cancel;
  JobRunResult result = MakeFineTuneRunner({})->Run(job, "cpu", &sink, &cancel);
  EXPECT_EQ(result.outcome, ftune::v1::JOB_OUTCOME_FAILED);
  EXPECT_FALSE(result.error.empty());
}

TEST(JobRunnerTest, BadSpecFailsForGood) {
  ftune::v1::Job job =
      ToneJob(ftune::testing::MakeTempDir("data"), ftune::testing::MakeTempDir("out"));
  job.mutable_spec()->mutable_training()->set_precision(ftune::v1::PRECISION_FP16);  // CPU
  RecordingSink sink;
  CancelToken cancel;
  JobRunResult result = MakeFineTuneRunner({})->Run(job, "cpu", &sink, &cancel);
  EXPECT_EQ(result.outcome, ftune::v1::JOB_OUTCOME_FAILED);
  EXPECT_NE(result.error.find("fp16"), std::string::npos) << result.error;
}

TEST(JobRunnerTest, HandBackBeforeTrainingRequeues) {
  const std::string out = ftune::testing::MakeTempDir("out");
  ftune::v1::Job job = ToneJob(ftune::testing::MakeTempDir("data"), out);
  RecordingSink sink;
  CancelToken cancel;
  cancel.Request(StopReason::kHandBack);
  JobRunResult result = MakeFineTuneRunner({})->Run(job, "cpu", &sink, &cancel);
  EXPECT_EQ(result.outcome, ftune::v1::JOB_OUTCOME_REQUEUE);
}

}  // namespace
}  // namespace ftune::train
