// Data-parallel training over Gloo on loopback, each rank a thread of this process with its
// own trainer, model and process group: N ranks of batch B must train exactly as one rank of
// batch N x B.
#include "worker/train/distributed.h"

#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "tests/support/process.h"
#include "tests/train/synthetic.h"
#include "tests/train/trainer_harness.h"
#include "worker/data/batch_loader.h"
#include "worker/train/checkpoint_manager.h"

namespace ftune::train {
namespace {

using ftune::v1::JobEvent;
using testing::BaseConfig;
using testing::MakeToneDataset;
using testing::MaxDiff;
using testing::RunOutput;
using testing::TinyModel;
using testing::ToneSetOptions;
using testing::Train;

std::string Dir(const std::string& name) { return ftune::testing::MakeTempDir(name); }

// Per rank: what it may change in its options and token before it runs.
using RankSetup = std::function<void(int rank, TrainerOptions*, CancelToken*)>;
using RankEvents = std::function<void(int rank, const JobEvent&, CancelToken*)>;

// Runs `world_size` ranks of one training run, each on its own thread, joined through a
// rendezvous this test serves; returns each rank's outcome, rank 0 first.
std::vector<RunOutput> TrainRanks(int world_size, const TrainerConfig& config,
                                  const std::function<model::LoadedModel()>& make_model,
                                  const data::Dataset& dataset, RankSetup setup = nullptr,
                                  RankEvents on_event = nullptr) {
  auto rendezvous = RendezvousServer::Start("127.0.0.1");
  EXPECT_TRUE(rendezvous.ok()) << rendezvous.status();
  std::vector<RunOutput> outputs(world_size);
  std::vector<CancelToken> tokens(world_size);
  std::vector<model::LoadedModel> models;
  for (int r = 0; r < world_size; ++r) models.push_back(make_model());
  std::vector<std::thread> threads;
  for (int r = 0; r < world_size; ++r) {
    TrainerOptions options;
    options.distributed.rank = r;
    options.distributed.world_size = world_size;
    options.distributed.port = (*rendezvous)->port();
    options.distributed.rank0_serves_store = false;
    options.distributed.timeout = std::chrono::seconds(60);
    if (setup) setup(r, &options, &tokens[r]);
    threads.emplace_back([&, r, options] {
      std::function<void(const JobEvent&, CancelToken*)> forward;
      if (on_event) forward = [&, r](const JobEvent& e, CancelToken* c) { on_event(r, e, c); };
      outputs[r] = Train(config, std::move(models[r]), dataset, options, forward, &tokens[r]);
    });
  }
  for (auto& t : threads) t.join();
  return outputs;
}

// Summing a batch's gradient in two halves differs from summing it whole by float32 rounding
// (~1e-7 relative). Adam divides each gradient by its own magnitude, which turns the rounding
// of a gradient that is itself ~0 into a full-size step; an epsilon above that noise keeps
// such elements still, so what is compared is the training, not the rounding.
TrainerConfig Exact(TrainerConfig config) {
  config.adam_epsilon = 1e-6;
  return config;
}

int64_t Count(const std::vector<JobEvent>& events, JobEvent::PayloadCase kind) {
  return std::count_if(events.begin(), events.end(),
                       [kind](const JobEvent& e) { return e.payload_case() == kind; });
}

const ftune::v1::EvalResult* LastEval(const std::vector<JobEvent>& events) {
  for (auto it = events.rbegin(); it != events.rend(); ++it) {
    if (it->has_eval_result()) return &it->eval_result();
  }
  return nullptr;
}

TEST(BatchLoaderShardTest, RanksSplitTheOneRankBatchesInOrder) {
  std::vector<data::Clip> clips(19);
  for (size_t i = 0; i < clips.size(); ++i) clips[i].seconds = 1.0 + static_cast<double>(i % 5);
  for (bool group : {false, true}) {
    SCOPED_TRACE(group ? "group_by_length" : "plain");
    data::LoaderOptions one;
    one.batch_size = 6;
    one.shuffle = true;
    one.seed = 3;
    one.epoch = 2;
    one.group_by_length = group;
    const auto whole = data::PlanEpoch(clips, one);
    for (int ranks : {2, 3}) {
      data::LoaderOptions shard = one;
      shard.batch_size = 6 / ranks;
      shard.shard_count = ranks;
      std::vector<std::vector<std::vector<int64_t>>> plans;
      for (int r = 0; r < ranks; ++r) {
        shard.shard_rank = r;
        plans.push_back(data::PlanEpoch(clips, shard));
        ASSERT_EQ(plans.back().size(), whole.size());
      }
      for (size_t b = 0; b < whole.size(); ++b) {
        std::vector<int64_t> joined;
        for (int r = 0; r < ranks; ++r) {
          joined.insert(joined.end(), plans[r][b].begin(), plans[r][b].end());
        }
        EXPECT_EQ(joined, whole[b]) << "batch " << b << " over " << ranks << " ranks";
      }
    }
  }
}

class DistributedTest : public ::testing::Test {
 protected:
  // Equal-length clips: a batch's padding then cannot depend on how clips are grouped.
  data::Dataset Tones(int train_per_class, int eval_per_class) {
    ToneSetOptions tones;
    tones.class_hz = {300, 900};
    tones.train_per_class = train_per_class;
    tones.eval_per_class = eval_per_class;
    return MakeToneDataset(Dir("tones"), tones);
  }
};

// 2 ranks x batch 4 against 1 rank x batch 8 (fp32, no dropout): the same weights after every
// step, and the same evaluation (each rank evaluates half the clips, the counts add up); with
// the feature encoder frozen (its output cached) and trained.
class TwoRanksTest : public DistributedTest, public ::testing::WithParamInterface<bool> {};

TEST_P(TwoRanksTest, OfBatch4TrainAsOneRankOfBatch8) {
  const data::Dataset dataset = Tones(8, 3);  // 16 clips: 2 steps per epoch
  auto model = [&] { return TinyModel(dataset.labels, true); };
  TrainerConfig one = Exact(BaseConfig(Dir("one")));
  one.batch_size = 8;
  one.epochs = 2;
  one.freeze_feature_encoder_set = true;
  one.freeze_feature_encoder = GetParam();
  RunOutput single = Train(one, model(), dataset);
  ASSERT_TRUE(single.result.ok()) << single.result.status();

  TrainerConfig per_rank = one;
  per_rank.batch_size = 4;
  per_rank.output_dir = Dir("two");
  std::vector<RunOutput> ranks = TrainRanks(2, per_rank, model, dataset);
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(ranks[r].result.ok()) << "rank " << r << ": " << ranks[r].result.status();
    EXPECT_EQ(ranks[r].result->steps, 4);
    EXPECT_EQ(ranks[r].result->total_steps, 4);
  }
  EXPECT_LT(MaxDiff(single.weights, ranks[0].weights), 1e-5);
  EXPECT_EQ(MaxDiff(ranks[0].weights, ranks[1].weights), 0.0);  // one sum, one update

  // Rank 0 speaks for the run: the same progress and evaluation events as one rank.
  EXPECT_EQ(Count(ranks[0].events, JobEvent::kTrainProgress),
            Count(single.events, JobEvent::kTrainProgress));
  EXPECT_EQ(Count(ranks[1].events, JobEvent::kTrainProgress), 0);
  EXPECT_EQ(Count(ranks[1].events, JobEvent::kEvalResult), 0);
  EXPECT_EQ(Count(ranks[1].events, JobEvent::kCheckpointSaved), 0);
  const ftune::v1::EvalResult* a = LastEval(single.events);
  const ftune::v1::EvalResult* b = LastEval(ranks[0].events);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->num_samples(), a->num_samples());
  EXPECT_NEAR(b->loss(), a->loss(), 1e-5);
  EXPECT_EQ(b->accuracy(), a->accuracy());
  for (const JobEvent& e : ranks[0].events) {
    if (e.has_train_progress()) EXPECT_GT(e.train_progress().samples_per_sec(), 0);
  }
  // Only rank 0 wrote checkpoints.
  EXPECT_TRUE(CheckpointManager::FindLatestComplete(per_rank.output_dir).has_value());
}

INSTANTIATE_TEST_SUITE_P(FeatureEncoder, TwoRanksTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Frozen" : "Trained";
                         });

// With accumulation 2 and an epoch whose last global batch leaves rank 1 no clips at all
// (18 clips in global batches of 4: 4 4 | 4 4 | 2, the 2 all rank 0's): the windows'
// gradients are still the one-rank ones.
TEST_F(DistributedTest, AccumulationAndAnEmptyLastSliceMatchOneRank) {
  const data::Dataset dataset = Tones(9, 1);
  auto model = [&] { return TinyModel(dataset.labels, true); };
  TrainerConfig one = Exact(BaseConfig(Dir("one")));
  one.batch_size = 4;
  one.grad_accum = 2;
  one.epochs = 2;
  RunOutput single = Train(one, model(), dataset);
  ASSERT_TRUE(single.result.ok()) << single.result.status();

  TrainerConfig per_rank = one;
  per_rank.batch_size = 2;
  per_rank.output_dir = Dir("two");
  std::vector<RunOutput> ranks = TrainRanks(2, per_rank, model, dataset);
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(ranks[r].result.ok()) << "rank " << r << ": " << ranks[r].result.status();
    EXPECT_EQ(ranks[r].result->steps, single.result->steps);
  }
  EXPECT_EQ(single.result->steps, 6);
  EXPECT_LT(MaxDiff(single.weights, ranks[0].weights), 1e-5);
  EXPECT_EQ(MaxDiff(ranks[0].weights, ranks[1].weights), 0.0);
}

// A stop asked of one rank stops every rank after the same step; rank 0 leaves the
// checkpoint, and a second run of both ranks resumes from it to the straight run's weights.
TEST_F(DistributedTest, AStopOnOneRankStopsAllAndTheRunResumesExactly) {
  const data::Dataset dataset = Tones(8, 1);
  auto model = [&] { return TinyModel(dataset.labels, true); };
  TrainerConfig c = BaseConfig(Dir("straight"));
  c.epochs = 2;
  c.batch_size = 2;
  std::vector<RunOutput> straight = TrainRanks(2, c, model, dataset);
  ASSERT_TRUE(straight[0].result.ok()) << straight[0].result.status();
  ASSERT_EQ(straight[0].result->steps, 8);

  c.output_dir = Dir("cancelled");
  std::vector<RunOutput> first = TrainRanks(
      2, c, model, dataset, [](int rank, TrainerOptions*, CancelToken* cancel) {
        if (rank == 1) cancel->Request(StopReason::kCancel);  // before the first step
      });
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(first[r].result.ok()) << "rank " << r << ": " << first[r].result.status();
    EXPECT_EQ(first[r].result->end, TrainEnd::kCancelled) << "rank " << r;
    EXPECT_EQ(first[r].result->steps, 1) << "rank " << r;
  }
  ASSERT_TRUE(CheckpointManager::FindLatestComplete(c.output_dir).has_value());

  std::vector<RunOutput> resumed = TrainRanks(2, c, model, dataset);
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(resumed[r].result.ok()) << "rank " << r << ": " << resumed[r].result.status();
    EXPECT_TRUE(resumed[r].result->resumed) << "rank " << r;
    EXPECT_EQ(resumed[r].result->steps, 8);
  }
  EXPECT_LT(MaxDiff(straight[0].weights, resumed[0].weights), 1e-6);
  EXPECT_EQ(MaxDiff(resumed[0].weights, resumed[1].weights), 0.0);
}

// A rank whose run differs (here: another batch size) is refused by name, not trained.
TEST_F(DistributedTest, ARankWithAnotherRunIsRefused) {
  const data::Dataset dataset = Tones(4, 1);
  auto model = [&] { return TinyModel(dataset.labels, true); };
  TrainerConfig c = BaseConfig(Dir("out"));
  auto rendezvous = RendezvousServer::Start("127.0.0.1");
  ASSERT_TRUE(rendezvous.ok());
  std::vector<RunOutput> outputs(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      TrainerOptions options;
      options.distributed = {.rank = r,
                             .world_size = 2,
                             .port = (*rendezvous)->port(),
                             .rank0_serves_store = false,
                             .timeout = std::chrono::seconds(20)};
      TrainerConfig mine = c;
      if (r == 1) mine.seed = c.seed + 1;
      outputs[r] = Train(mine, model(), dataset, options);
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_FALSE(outputs[1].result.ok());
  EXPECT_NE(outputs[1].result.status().message().find("seed"), std::string::npos)
      << outputs[1].result.status();
  // Rank 0 does not hang: its next collective fails once rank 1 is gone.
  ASSERT_FALSE(outputs[0].result.ok());
  EXPECT_EQ(outputs[0].result.status().code(), absl::StatusCode::kUnavailable)
      << outputs[0].result.status();
}

// A peer that leaves fails the collective of the one still in it, well before the timeout.
TEST(CollectiveTest, APeerThatLeavesFailsTheCollectiveInsteadOfHanging) {
  auto rendezvous = RendezvousServer::Start("127.0.0.1");
  ASSERT_TRUE(rendezvous.ok());
  DistributedOptions options;
  options.world_size = 2;
  options.port = (*rendezvous)->port();
  options.rank0_serves_store = false;
  options.timeout = std::chrono::seconds(60);
  std::unique_ptr<Collective> leaver;
  std::thread join([&] {
    DistributedOptions mine = options;
    mine.rank = 1;
    auto c = Collective::Join(mine, torch::kCPU);
    ASSERT_TRUE(c.ok()) << c.status();
    leaver = *std::move(c);
  });
  auto stayer = Collective::Join(options, torch::kCPU);
  join.join();
  ASSERT_TRUE(stayer.ok()) << stayer.status();
  ASSERT_NE(leaver, nullptr);

  torch::Tensor ones = torch::ones({4});
  std::thread both([&] { leaver->AllReduceSum(torch::ones({4})); });
  (*stayer)->AllReduceSum(ones);
  both.join();
  EXPECT_TRUE(torch::equal(ones, torch::full({4}, 2.0)));

  leaver.reset();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THROW((*stayer)->AllReduceSum(torch::ones({4})), CollectiveError);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

}  // namespace
}  // namespace ftune::train
