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
