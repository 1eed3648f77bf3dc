#include "worker/train/trainer_config.h"

#include "gtest/gtest.h"

namespace ftune::train {
namespace {

ftune::v1::JobSpec MinimalSpec() {
  ftune::v1::JobSpec spec;
  spec.mutable_dataset()->set_path("/data");
  spec.set_model("tiny");
  spec.set_output_dir("/out");
  return spec;
}

TEST(TrainerConfigTest, UnsetFieldsOfAFolderTakeHuggingFaceDefaults) {
  ftune::v1::JobSpec spec = MinimalSpec();
  spec.set_model("/models/hubert-base-ls960");
  auto c = ResolveTrainerConfig(spec);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->epochs, 3);
  EXPECT_EQ(c->batch_size, 8);
  EXPECT_EQ(c->grad_accum, 1);
  EXPECT_DOUBLE_EQ(c->learning_rate, 5e-5);
  EXPECT_DOUBLE_EQ(c->adam_beta1, 0.9);
  EXPECT_DOUBLE_EQ(c->adam_beta2, 0.999);
  EXPECT_DOUBLE_EQ(c->adam_epsilon, 1e-8);
  EXPECT_DOUBLE_EQ(c->weight_decay, 0.0);
  EXPECT_DOUBLE_EQ(c->max_grad_norm, 1.0);
  EXPECT_EQ(c->schedule, ScheduleKind::kLinear);
  EXPECT_EQ(c->warmup_steps, 0);
  EXPECT_DOUBLE_EQ(c->warmup_ratio, 0.0);
  EXPECT_EQ(c->precision, RequestedPrecision::kAuto);
  EXPECT_FALSE(c->freeze_feature_encoder_set);
  EXPECT_EQ(c->seed, 42u);
  EXPECT_EQ(c->keep_last, 2);
  EXPECT_EQ(c->metric_for_best, BestMetric::kAccuracy);
  EXPECT_EQ(c->log_every_steps, 10);
  EXPECT_EQ(c->device, "auto");
  EXPECT_EQ(c->output_dir, "/out");
}

TEST(TrainerConfigTest, UnsetFieldsOfAPresetTakeTheFromScratchRecipe) {
  auto c = ResolveTrainerConfig(MinimalSpec());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->epochs, 20);
  EXPECT_DOUBLE_EQ(c->learning_rate, 1e-3);
  EXPECT_DOUBLE_EQ(c->warmup_ratio, 0.1);
  EXPECT_EQ(c->schedule, ScheduleKind::kLinear);
  EXPECT_EQ(c->batch_size, 8);
  EXPECT_FALSE(c->freeze_feature_encoder_set);  // trainable: the trainer knows it is a preset
}

TEST(TrainerConfigTest, ExplicitValuesWin) {
  ftune::v1::JobSpec spec = MinimalSpec();
  auto* t = spec.mutable_training();
  t->set_epochs(7);
  t->set_batch_size(4);
  t->set_grad_accum(2);
  t->set_learning_rate(1e-4);
  t->set_weight_decay(0.01);
  t->set_max_grad_norm(0);
  t->set_schedule(ftune::v1::LR_SCHEDULE_COSINE);
  t->set_precision(ftune::v1::PRECISION_BF16);
  t->set_freeze_feature_encoder(false);
  t->set_keep_last(5);
  t->set_metric_for_best("macro_f1");
  t->set_seed(7);
  auto c = ResolveTrainerConfig(spec);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->epochs, 7);
  EXPECT_EQ(c->batch_size, 4);
  EXPECT_EQ(c->grad_accum, 2);
  EXPECT_DOUBLE_EQ(c->learning_rate, 1e-4);
  EXPECT_DOUBLE_EQ(c->weight_decay, 0.01);
  EXPECT_DOUBLE_EQ(c->max_grad_norm, 0.0);
  EXPECT_EQ(c->schedule, ScheduleKind::kCosine);
  EXPECT_EQ(c->precision, RequestedPrecision::kBf16);
  EXPECT_TRUE(c->freeze_feature_encoder_set);
  EXPECT_FALSE(c->freeze_feature_encoder);
  EXPECT_EQ(c->keep_last, 5);
  EXPECT_EQ(c->metric_for_best, BestMetric::kMacroF1);
  EXPECT_EQ(c->seed, 7u);
}

TEST(TrainerConfigTest, RejectsBadValuesNamingTheField) {
  ftune::v1::JobSpec spec = MinimalSpec();
  spec.mutable_training()->set_metric_for_best("f2");
  auto c = ResolveTrainerConfig(spec);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("metric_for_best"), std::string::npos);
  spec = MinimalSpec();
  spec.set_output_dir("");
  EXPECT_EQ(ResolveTrainerConfig(spec).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TrainerConfigTest, StepsAndWarmup) {
  EXPECT_EQ(StepsPerEpoch(10, 1), 10);
  EXPECT_EQ(StepsPerEpoch(10, 4), 3);  // last partial window still steps
  EXPECT_EQ(StepsPerEpoch(8, 4), 2);
  TrainerConfig c;
  c.warmup_ratio = 0.1;
  EXPECT_EQ(WarmupSteps(c, 95), 10);
  c.warmup_steps = 3;
  EXPECT_EQ(WarmupSteps(c, 95), 3);
}

}  // namespace
}  // namespace ftune::train
