#include "worker/train/run_state.h"

#include "gtest/gtest.h"

namespace ftune::train {
namespace {

RunState Sample() {
  RunState s;
  s.epoch = 2;
  s.batch_in_epoch = 5;
  s.step = 41;
  s.skipped_steps = 3;
  s.has_best = true;
  s.best_metric = 0.75;
  s.best_accuracy = 0.75;
  s.best_step = 30;
  s.evals_without_improvement = 1;
  s.last_accuracy = 0.7;
  s.loss_scaler = {.scale = 4096, .growth_tracker = 17};
  return s;
}

const nlohmann::json kIdentity = {{"seed", 42}, {"batch_size", 8}, {"world_size", 2}};

TEST(RunStateTest, RoundTripsThroughItsJson) {
  const nlohmann::json json =
      RunStateJson(Sample(), {kIdentity, "bf16", "accuracy", /*total_steps=*/100});
  EXPECT_EQ(json["run"], kIdentity);
  EXPECT_EQ(json["total_steps"], 100);
  auto parsed = ParseRunState(json, kIdentity, {"checkpoint-41", "trainer_state.json"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->step, 41);
  EXPECT_EQ(parsed->batch_in_epoch, 5);
  EXPECT_EQ(parsed->best_step, 30);
  EXPECT_EQ(parsed->evals_without_improvement, 1);
  EXPECT_EQ(parsed->loss_scaler.scale, 4096);
  EXPECT_EQ(parsed->loss_scaler.growth_tracker, 17);
}

TEST(RunStateTest, AnotherRunIsRefusedByTheFieldThatDiffers) {
  const nlohmann::json json = RunStateJson(Sample(), {kIdentity, "bf16", "accuracy", 100});
  nlohmann::json other = kIdentity;
  other["batch_size"] = 4;
  auto resumed = ParseRunState(json, other, {"out/checkpoint-41", "trainer_state.json"});
  EXPECT_EQ(resumed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(resumed.status().message().find("cannot resume from out/checkpoint-41: it was "
                                            "trained with batch_size 8, this run has 4"),
            std::string::npos)
      << resumed.status();
  auto rank = ParseRunState(json, other, {"rank 0", "rank 0's trainer state", 1});
  EXPECT_EQ(rank.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(rank.status().message().find("rank 0 has batch_size 8, rank 1 has 4"),
            std::string::npos)
      << rank.status();
  // A key older checkpoints did not record is not compared.
  nlohmann::json newer = kIdentity;
  newer["group_by_length"] = false;
  EXPECT_TRUE(ParseRunState(json, newer, {"c", "f"}).ok());
}

TEST(RunStateTest, AMissingFieldNamesTheFile) {
  nlohmann::json json = RunStateJson(Sample(), {kIdentity, "bf16", "accuracy", 100});
  json.erase("batch_in_epoch");
  auto parsed = ParseRunState(json, kIdentity, {"c", "out/c/training_state/trainer_state.json"});
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(parsed.status().message().find("out/c/training_state/trainer_state.json"),
            std::string::npos);
  json = RunStateJson(Sample(), {kIdentity, "bf16", "accuracy", 100});
  json["format"] = 9;
  EXPECT_FALSE(ParseRunState(json, kIdentity, {"c", "f"}).ok());
}

}  // namespace
}  // namespace ftune::train
