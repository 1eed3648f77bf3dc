#include "worker/train/trainer.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <future>
#include <thread>
#include <iostream>
#include <map>

#include "gtest/gtest.h"
#include "tests/support/process.h"
#include "tests/train/synthetic.h"
#include "tests/train/trainer_harness.h"
#include "torch/torch.h"
#include "worker/model/checkpoint.h"
#include "worker/train/checkpoint_manager.h"
#include "worker/train/feature_cache.h"

namespace ftune::train {
namespace {

namespace fs = std::filesystem;
using ftune::v1::JobEvent;
using testing::BaseConfig;
using testing::Gradients;
using testing::MakeToneDataset;
using testing::MaxDiff;
using testing::RecordingSink;
using testing::RunOutput;
using testing::TinyModel;
using testing::ToneSetOptions;
using testing::Train;
using testing::Weights;

class TrainerTest : public ::testing::Test {
 protected:
  std::string Dir(const std::string& name) { return ftune::testing::MakeTempDir(name); }
};

TEST_F(TrainerTest, AccumulationMatchesOneBigBatch) {
  ToneSetOptions tones;
  tones.class_hz = {300, 900};
  tones.train_per_class = 5;  // 10 clips: 4+4+2 makes an uneven window
  tones.eval_per_class = 1;
  const data::Dataset dataset = MakeToneDataset(Dir("tones"), tones);
  model::LoadedModel init_model = TinyModel(dataset.labels, true);
  const std::map<std::string, torch::Tensor> init = Weights(init_model.model);

  auto run = [&](int batch, int accum) {
    TrainerConfig c = BaseConfig(Dir("out"));
    c.batch_size = batch;
    c.grad_accum = accum;
    return Train(c, TinyModel(dataset.labels, true), dataset);
  };
  // One optimizer step each: 10 x 1, 5 x 2, and 4 x 3 (windows of 4, 4 and 2 clips).
  // The gradient must be the same whatever the split (float32 summation order aside); Adam's
  // first step then moves each weight by ~lr times its sign, so the weights agree up to the
  // rare element whose gradient is rounding noise.
  RunOutput big = run(10, 1);
  ASSERT_TRUE(big.result.ok()) << big.result.status();
  EXPECT_EQ(big.result->steps, 1);
  EXPECT_GT(MaxDiff(big.weights, init), 1e-4);  // it did move
  double largest = 0;
  for (const auto& [name, g] : big.gradients) largest = std::max(largest, g.abs().max().item<double>());
  ASSERT_GT(largest, 0);
  for (const auto& [batch, accum] : {std::pair{5, 2}, std::pair{4, 3}}) {
    SCOPED_TRACE(std::to_string(batch) + " x " + std::to_string(accum));
    RunOutput split = run(batch, accum);
    ASSERT_TRUE(split.result.ok()) << split.result.status();
    EXPECT_EQ(split.result->steps, 1);
    EXPECT_LT(MaxDiff(big.gradients, split.gradients) / largest, 1e-5);
    EXPECT_LT(MaxDiff(big.weights, split.weights), 1e-4);
  }
}

TEST_F(TrainerTest, Batch8x1EqualsBatch4x2) {
  ToneSetOptions tones;
  tones.class_hz = {300, 900};
  tones.train_per_class = 4;
  tones.eval_per_class = 1;
  const data::Dataset dataset = MakeToneDataset(Dir("tones"), tones);
  TrainerConfig a = BaseConfig(Dir("out"));
  a.batch_size = 8;
  a.epochs = 2;
  TrainerConfig b = BaseConfig(Dir("out"));
  b.batch_size = 4;
  b.grad_accum = 2;
  b.epochs = 2;
  RunOutput ra = Train(a, TinyModel(dataset.labels, true), dataset);
  RunOutput rb = Train(b, TinyModel(dataset.labels, true), dataset);
  ASSERT_TRUE(ra.result.ok()) << ra.result.status();
  ASSERT_TRUE(rb.result.ok()) << rb.result.status();
  EXPECT_EQ(ra.result->steps, 2);
  EXPECT_EQ(rb.result->steps, 2);
  EXPECT_LT(MaxDiff(ra.weights, rb.weights), 1e-5);
}

// 2 epochs straight vs 1 epoch, stop, resume, 1 epoch: same weights (dropout and SpecAugment
// on, so the RNG state must come back too).
TEST_F(TrainerTest, ResumeAfterAnEpochReproducesTheStraightRun) {
  const data::Dataset dataset = MakeToneDataset(Dir("tones"), {});
  TrainerConfig c = BaseConfig(Dir("straight"));
  c.epochs = 2;
  RunOutput straight = Train(c, TinyModel(dataset.labels, false), dataset);
  ASSERT_TRUE(straight.result.ok()) << straight.result.status();
  EXPECT_EQ(straight.result->end, TrainEnd::kCompleted);

  c.output_dir = Dir("resumed");
  RunOutput first = Train(c, TinyModel(dataset.labels, false), dataset, {},
                    [](const JobEvent& e, CancelToken* cancel) {
                      if (e.has_checkpoint_saved()) cancel->Request(StopReason::kHandBack);
                    });
  ASSERT_TRUE(first.result.ok()) << first.result.status();
  EXPECT_EQ(first.result->end, TrainEnd::kHandedBack);
  EXPECT_EQ(first.result->steps, straight.result->steps / 2);
  // A different initialisation seed: everything must come from the checkpoint.
  RunOutput second = Train(c, TinyModel(dataset.labels, false, /*seed=*/99), dataset);
  ASSERT_TRUE(second.result.ok()) << second.result.status();
  EXPECT_TRUE(second.result->resumed);
  EXPECT_EQ(second.result->end, TrainEnd::kCompleted);
  EXPECT_EQ(second.result->steps, straight.result->steps);
  EXPECT_LT(MaxDiff(straight.weights, second.weights), 1e-6);
}

// Jobs training at once on one worker draw from their own generators: a run interrupted and
// resumed while another job trains beside it still reproduces the uninterrupted run exactly
// (dropout and SpecAugment draw from the job's generator, whose state the checkpoint keeps).
TEST_F(TrainerTest, ExactResumeWhileAnotherJobTrains) {
  const data::Dataset dataset = MakeToneDataset(Dir("tones"), {});
  TrainerConfig c = BaseConfig(Dir("straight"));
  c.epochs = 2;
  RunOutput straight = Train(c, TinyModel(dataset.labels, false), dataset);
  ASSERT_TRUE(straight.result.ok()) << straight.result.status();

  // The neighbour: a longer job with dropout, started first and running throughout.
  std::promise<void> neighbour_started;
  std::atomic<bool> signalled{false};
  std::atomic<bool> stop_neighbour{false};
  std::thread neighbour([&] {
    TrainerConfig n = BaseConfig(Dir("neighbour"));
    n.epochs = 200;
    n.seed = 99;
    Train(n, TinyModel(dataset.labels, false, /*seed=*/5), dataset, {},
          [&](const JobEvent& e, CancelToken* cancel) {
            if (e.has_train_progress() && !signalled.exchange(true)) neighbour_started.set_value();
            if (stop_neighbour) cancel->Request(StopReason::kCancel);
          });
  });
  neighbour_started.get_future().wait();

  c.output_dir = Dir("resumed");
  RunOutput first = Train(c, TinyModel(dataset.labels, false), dataset, {},
                          [](const JobEvent& e, CancelToken* cancel) {
                            if (e.has_checkpoint_saved()) cancel->Request(StopReason::kHandBack);
                          });
  ASSERT_TRUE(first.result.ok()) << first.result.status();
  RunOutput second = Train(c, TinyModel(dataset.labels, false, /*seed=*/99), dataset);
  stop_neighbour = true;
  neighbour.join();
  ASSERT_TRUE(second.result.ok()) << second.result.status();
  EXPECT_TRUE(second.result->resumed);
  EXPECT_LT(MaxDiff(straight.weights, second.weights), 1e-6);
}

// Mid-epoch stop with a frozen, cached feature encoder: resume starts at the right batch.
TEST_F(TrainerTest, ResumeMidEpochWithFeatureCache) {
  const data::Dataset dataset = MakeToneDataset(Dir("tones"), {});
  TrainerConfig c = BaseConfig(Dir("straight"));
  c.epochs = 2;
  c.batch_size = 2;
  c.checkpoint_every_steps = 4;
  c.freeze_feature_encoder_set = true;
  c.freeze_feature_encoder = true;
  RunOutput straight = Train(c, TinyModel(dataset.labels, false), dataset);
  ASSERT_TRUE(straight.result.ok()) << straight.result.status();
  ASSERT_EQ(straight.result->steps, 12);

  c.output_dir = Dir("resumed");
  RunOutput first = Train(c, TinyModel(dataset.labels, false), dataset, {},
                    [](const JobEvent& e, CancelToken* cancel) {
                      if (e.has_train_progress() && e.train_progress().step() == 3) {
                        cancel->Request(StopReason::kCancel);
                      }
                    });
  ASSERT_TRUE(first.result.ok()) << first.result.status();
  EXPECT_EQ(first.result->end, TrainEnd::kCancelled);
  EXPECT_EQ(first.result->steps, 3);
  EXPECT_EQ(*CheckpointManager::FindLatestComplete(c.output_dir),
            (fs::path(c.output_dir) / "checkpoint-3").string());
  RunOutput second = Train(c, TinyModel(dataset.labels, false), dataset);
  ASSERT_TRUE(second.result.ok()) << second.result.status();
  EXPECT_EQ(second.result->steps, 12);
  EXPECT_LT(MaxDiff(straight.weights, second.weights), 1e-6);
}

TEST_F(TrainerTest, FeatureCacheIsExact) {
  const data::Dataset dataset = MakeToneDataset(Dir("tones"), {});
  TrainerConfig c = BaseConfig(Dir("a"));
  c.epochs = 2;
  // The reference path runs the CNN on the padded batch (another summation order): a small
  // learning rate keeps Adam from magnifying that rounding noise.
  c.learning_rate = 1e-4;
  c.freeze_feature_encoder_set = true;
  c.freeze_feature_encoder = true;
  TrainerOptions cached;
  TrainerOptions uncached;
  uncached.cache_features = false;
  RunOutput with = Train(c, TinyModel(dataset.labels, true), dataset, cached);
  c.output_dir = Dir("b");
  RunOutput without = Train(c, TinyModel(dataset.labels, true), dataset, uncached);
  ASSERT_TRUE(with.result.ok()) << with.result.status();
  ASSERT_TRUE(without.result.ok()) << without.result.status();
  EXPECT_LT(MaxDiff(with.weights, without.weights), 1e-5);
}

// A feature cache too small for the dataset drops clips and encodes them again: the run is
// the same as with room for everything.
TEST_F(TrainerTest, FeatureCacheWithinABudgetIsExact) {
  const data::Dataset dataset = MakeToneDataset(Dir("tones"), {});
  TrainerConfig c = BaseConfig(Dir("a"));
  c.epochs = 3;
  c.freeze_feature_encoder_set = true;
  c.freeze_feature_encoder = true;
  TrainerOptions roomy;
  TrainerOptions tight;
  tight.feature_cache_bytes = 40'000;  // a few of the clips' features
  RunOutput with_room = Train(c, TinyModel(dataset.labels, true), dataset, roomy);
  c.output_dir = Dir("b");
  RunOutput squeezed = Train(c, TinyModel(dataset.labels, true), dataset, tight);
  ASSERT_TRUE(with_room.result.ok()) << with_room.result.status();
  ASSERT_TRUE(squeezed.result.ok()) << squeezed.result.status();
  EXPECT_EQ(MaxDiff(with_room.weights, squeezed.weights), 0.0);
}

TEST(FeatureCacheTest, KeepsTheMostRecentlyUsedWithinItsBudget) {
  FeatureCache cache(3 * 4 * 100);  // three [100] float tensors
  const torch::Device cpu(torch::kCPU);
  for (int64_t clip = 0; clip < 3; ++clip) cache.Put(clip, torch::full({100}, float(clip)));
  EXPECT_EQ(cache.size(), 3u);
  ASSERT_TRUE(cache.Get(0, cpu).has_value());  // 0 is now the most recent
  cache.Put(3, torch::full({100}, 3.0f));      // drops 1, the least recent
  EXPECT_FALSE(cache.Get(1, cpu).has_value());
  EXPECT_TRUE(torch::equal(*cache.Get(0, cpu), torch::full({100}, 0.0f)));
  EXPECT_TRUE(cache.Get(3, cpu).has_value());
  EXPECT_EQ(cache.evictions(), 1);
  EXPECT_EQ(cache.bytes(), 3 * 4 * 100);
  cache.Put(9, torch::zeros({1000}));  // larger than the whole budget: not kept
  EXPECT_FALSE(cache.Get(9, cpu).has_value());
  EXPECT_EQ(cache.size(), 3u);
  FeatureCache none(0);
  none.Put(1, torch::zeros({1}));
  EXPECT_FALSE(none.Get(1, cpu).has_value());
}

TEST_F(TrainerTest, LeaseLostWritesNothing) {
  const data::Dataset dataset = MakeToneDataset(Dir("tones"), {});
  TrainerConfig c = BaseConfig(Dir("out"));
  c.epochs = 3;
  RunOutput run = Train(c, TinyModel(dataset.labels, true), dataset, {},
                  [](const JobEvent& e, CancelToken* cancel) {
                    if (e.has_train_progress()) cancel->Request(StopReason::kLeaseLost);
                  });
  ASSERT_TRUE(run.result.ok()) << run.result.status();
  EXPECT_EQ(run.result->end, TrainEnd::kLeaseLost);
  EXPECT_EQ(run.result->steps, 1);
  EXPECT_FALSE(CheckpointManager::FindLatestComplete(c.output_dir).has_value());
}

// Once the write guard refuses (the daemon could not confirm the lease), the run ends as
// kLeaseLost and the output folder holds only what was saved before.
TEST_F(TrainerTest, RefusedWriteEndsTheRunAsLeaseLost) {
  const data::Dataset dataset = MakeToneDataset(Dir("tones"), {});
  TrainerConfig c = BaseConfig(Dir("out"));
  c.epochs = 3;  // 3 steps each
  bool saved_once = false;
  RunOutput run = Train(c, TinyModel(dataset.labels, true), dataset, {},
                        [&](const JobEvent& e, CancelToken* cancel) {
                          if (e.has_log()) {
                            cancel->set_write_guard([&]() -> absl::Status {
                              if (saved_once) return absl::AbortedError("lease not confirmed");
                              return absl::OkStatus();
                            });
                          }
                          if (e.has_checkpoint_saved()) saved_once = true;
                        });
  ASSERT_TRUE(run.result.ok()) << run.result.status();
  EXPECT_EQ(run.result->end, TrainEnd::kLeaseLost);
  EXPECT_EQ(run.result->steps, 6);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(c.output_dir)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"best", "checkpoint-3"}));
}

// A stop requested while evaluating ends the evaluation at once (no result), then the run
// stops as asked.
TEST_F(TrainerTest, StopDuringEvaluationSkipsIt) {
  const data::Dataset dataset = MakeToneDataset(Dir("tones"), {});
  TrainerConfig c = BaseConfig(Dir("out"));
  c.epochs = 2;
  RunOutput run = Train(c, TinyModel(dataset.labels, true), dataset, {},
                        [](const JobEvent& e, CancelToken* cancel) {
                          // The last step of epoch 1: its evaluation comes next.
                          if (e.has_train_progress() && e.train_progress().step() == 3) {
                            cancel->Request(StopReason::kCancel);
                          }
                        });
  ASSERT_TRUE(run.result.ok()) << run.result.status();
  EXPECT_EQ(run.result->end, TrainEnd::kCancelled);
  EXPECT_EQ(run.result->steps, 3);
  for (const JobEvent& e : run.events) EXPECT_FALSE(e.has_eval_result());
  EXPECT_TRUE(CheckpointManager::IsComplete((fs::path(c.output_dir) / "checkpoint-3").string()));
}

TEST_F(TrainerTest, EventsCheckpointsAndBest) {
  const data::Dataset dataset = MakeToneDataset(Dir("tones"), {});
  TrainerConfig c = BaseConfig(Dir("out"));
  c.epochs = 3;
  c.keep_last = 1;
  RunOutput run = Train(c, TinyModel(dataset.labels, false), dataset);
  ASSERT_TRUE(run.result.ok()) << run.result.status();
  const int steps_per_epoch = 3;  // 12 clips / 4
  EXPECT_EQ(run.result->steps, 3 * steps_per_epoch);
  EXPECT_EQ(run.result->total_steps, 3 * steps_per_epoch);
  int progress = 0, evals = 0, saved = 0;
  for (const JobEvent& e : run.events) {
    if (e.has_train_progress()) {
      ++progress;
      const auto& p = e.train_progress();
      EXPECT_EQ(p.total_steps(), 9);
      EXPECT_EQ(p.epoch(), (p.step() - 1) / steps_per_epoch + 1);
      EXPECT_GT(p.loss(), 0);
      EXPECT_GT(p.learning_rate(), 0);
      EXPECT_GT(p.grad_norm(), 0);
      EXPECT_EQ(p.loss_scale(), 1.0);
      EXPECT_GT(p.samples_per_sec(), 0);
    }
    if (e.has_eval_result()) {
      ++evals;
      const auto& r = e.eval_result();
      EXPECT_EQ(r.num_samples(), 6u);
      EXPECT_EQ(r.labels_size(), 3);
      EXPECT_EQ(r.confusion_size(), 9);
      EXPECT_EQ(r.per_class_recall_size(), 3);
      EXPECT_EQ(r.epoch(), static_cast<uint32_t>(evals));
    }
    if (e.has_checkpoint_saved()) ++saved;
  }
  EXPECT_EQ(progress, 9);
  EXPECT_EQ(evals, 3);
  EXPECT_GE(saved, 3);
  EXPECT_EQ(run.result->best_checkpoint, (fs::path(c.output_dir) / "best").string());
  EXPECT_TRUE(CheckpointManager::IsComplete(run.result->best_checkpoint));
  EXPECT_EQ(run.result->last_checkpoint, (fs::path(c.output_dir) / "checkpoint-9").string());
  // keep_last 1: only the newest step checkpoint besides best/.
  EXPECT_EQ(CheckpointManager::ListComplete(c.output_dir).size(), 1u);
  // The checkpoint is a Hugging Face folder the model library loads back.
  auto reloaded = model::LoadModel(run.result->last_checkpoint, {}, 0);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->config.id2label, dataset.labels);
}

TEST_F(TrainerTest, EarlyStoppingEndsTheRun) {
  const data::Dataset dataset = MakeToneDataset(Dir("tones"), {});
  TrainerConfig c = BaseConfig(Dir("out"));
  c.epochs = 6;
  c.learning_rate = 1e-12;  // nothing changes, so nothing improves
  c.early_stopping_patience = 2;
  RunOutput run = Train(c, TinyModel(dataset.labels, true), dataset);
  ASSERT_TRUE(run.result.ok()) << run.result.status();
  EXPECT_EQ(run.result->end, TrainEnd::kEarlyStopped);
  EXPECT_EQ(run.result->steps, 3 * 3);  // first eval sets best, two more without improvement
}

TEST_F(TrainerTest, ResumeRefusesAnotherRecipe) {
  const data::Dataset dataset = MakeToneDataset(Dir("tones"), {});
  TrainerConfig c = BaseConfig(Dir("out"));
  RunOutput first = Train(c, TinyModel(dataset.labels, true), dataset);
  ASSERT_TRUE(first.result.ok()) << first.result.status();
  c.batch_size = 2;
  c.epochs = 2;
  RunOutput second = Train(c, TinyModel(dataset.labels, true), dataset);
  EXPECT_EQ(second.result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.result.status().message().find("batch_size"), std::string::npos);

  // Another job pointed at the same folder with a different recipe is refused too, not
  // continued on the old one's schedule.
  c.batch_size = BaseConfig(Dir("out")).batch_size;
  c.epochs = BaseConfig(Dir("out")).epochs;
  c.learning_rate *= 2;
  RunOutput third = Train(c, TinyModel(dataset.labels, true), dataset);
  EXPECT_EQ(third.result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(third.result.status().message().find("learning_rate"), std::string::npos)
      << third.result.status();
  EXPECT_NE(third.result.status().message().find("new output folder"), std::string::npos);
}

// A broken training step cannot pass this: the tiny preset with the from-scratch recipe, in the
// precision a job gets here, fits 64 clips of 8 classes to >= 95% accuracy on those clips
// within a fixed budget of 160 steps, on every seed. The classes pair four pitches with a
// rising or a falling glide: mean-pooled frame features cannot tell a glide from its
// reverse, so the encoder itself has to learn temporal context, not just the head.
TEST_F(TrainerTest, TinyFitsEightClassesOnEverySeed) {
  ToneSetOptions tones;
  tones.class_hz = {180, 180, 300, 300, 500, 500, 800, 800};
  tones.class_glide = {1.6, 1 / 1.6, 1.6, 1 / 1.6, 1.6, 1 / 1.6, 1.6, 1 / 1.6};
  tones.train_per_class = 8;
  tones.eval_per_class = 0;
  tones.seconds = 0.6;
  data::Dataset dataset = MakeToneDataset(Dir("glides"), tones);
  dataset.eval = dataset.train;  // accuracy on the training clips, in eval mode

  ftune::v1::JobSpec spec;
  spec.set_model("tiny");
  spec.set_output_dir(Dir("unused"));
  absl::StatusOr<TrainerConfig> recipe = ResolveTrainerConfig(spec);
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  for (uint64_t seed : {1, 2, 3}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    TrainerConfig c = *recipe;
    c.epochs = 20;  // 8 steps each
    c.seed = seed;
    c.device = "cpu";
    c.eval_every_steps = 8 * c.epochs;  // once, at the end
    c.log_every_steps = 1000;
    c.output_dir = Dir("out");
    auto model = model::LoadModel("tiny", dataset.labels, seed);
    ASSERT_TRUE(model.ok()) << model.status();
    TrainerOptions options;
    options.random_init = true;
    RunOutput run = Train(c, *std::move(model), dataset, options);
    ASSERT_TRUE(run.result.ok()) << run.result.status();
    EXPECT_EQ(run.result->steps, 160);
    EXPECT_GE(run.result->last_accuracy, 0.95) << "in " << run.result->seconds << " s";
    std::cout << "seed " << seed << ": accuracy " << run.result->last_accuracy << " in "
              << run.result->seconds << " s\n";
  }
}

// The tiny preset from scratch on pitch classes reaches clearly above chance.
TEST_F(TrainerTest, ItLearns) {
  ToneSetOptions tones;
  tones.class_hz = {200, 500, 1250};
  tones.train_per_class = 16;
  tones.eval_per_class = 6;
  tones.seconds = 0.4;
  const data::Dataset dataset = MakeToneDataset(Dir("tones"), tones);
  TrainerConfig c = BaseConfig(Dir("out"));
  c.epochs = 4;
  c.batch_size = 8;
  c.learning_rate = 1e-3;
  c.warmup_ratio = 0.1;
  c.log_every_steps = 100;
  RunOutput run = Train(c, TinyModel(dataset.labels, false), dataset);
  ASSERT_TRUE(run.result.ok()) << run.result.status();
  std::string curve;
  for (const JobEvent& e : run.events) {
    if (e.has_eval_result()) curve += " " + std::to_string(e.eval_result().accuracy());
  }
  EXPECT_GE(run.result->best_accuracy, 0.75) << "chance is 0.33; accuracy per epoch:" << curve;
  std::cout << "accuracy per epoch:" << curve << " in " << run.result->seconds << " s\n";
}

}  // namespace
}  // namespace ftune::train
