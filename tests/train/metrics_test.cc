#include "worker/train/metrics.h"

#include "gtest/gtest.h"

namespace ftune::train {
namespace {

TEST(MetricsTest, AccuracyRecallConfusionAndMacroF1) {
  // truth:     0 0 0 1 1 2
  // predicted: 0 0 1 1 2 2
  ClassificationMetrics m = ComputeMetrics({0, 0, 0, 1, 1, 2}, {0, 0, 1, 1, 2, 2}, 3);
  EXPECT_EQ(m.num_samples, 6);
  EXPECT_DOUBLE_EQ(m.accuracy, 4.0 / 6.0);
  ASSERT_EQ(m.per_class_recall.size(), 3u);
  EXPECT_DOUBLE_EQ(m.per_class_recall[0], 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.per_class_recall[1], 0.5);
  EXPECT_DOUBLE_EQ(m.per_class_recall[2], 1.0);
  const std::vector<uint32_t> expected = {2, 1, 0, 0, 1, 1, 0, 0, 1};
  EXPECT_EQ(m.confusion, expected);
  // F1: class0 p=1 r=2/3 -> 0.8; class1 p=0.5 r=0.5 -> 0.5; class2 p=0.5 r=1 -> 2/3.
  EXPECT_NEAR(m.macro_f1, (0.8 + 0.5 + 2.0 / 3.0) / 3.0, 1e-12);
  EXPECT_DOUBLE_EQ(m.per_class_precision[0], 1.0);
  EXPECT_DOUBLE_EQ(m.per_class_precision[2], 0.5);
  EXPECT_NEAR(m.per_class_f1[0], 0.8, 1e-12);
  EXPECT_NEAR(m.per_class_f1[2], 2.0 / 3.0, 1e-12);
}

TEST(MetricsTest, FromAConfusionMatrixAsTheAccumulatorComputesThem) {
  ClassificationMetrics direct = ComputeMetrics({0, 0, 0, 1, 1, 2}, {0, 0, 1, 1, 2, 2}, 3);
  ClassificationMetrics from = MetricsFromConfusion(direct.confusion, 3);
  EXPECT_EQ(from.num_samples, direct.num_samples);
  EXPECT_DOUBLE_EQ(from.accuracy, direct.accuracy);
  EXPECT_DOUBLE_EQ(from.macro_f1, direct.macro_f1);
  EXPECT_EQ(from.per_class_f1, direct.per_class_f1);
  // A short matrix (a corrupt event) is padded, never read past its end.
  EXPECT_EQ(MetricsFromConfusion({1}, 2).num_samples, 1);
}

TEST(MetricsTest, AbsentClassScoresZeroF1) {
  ClassificationMetrics m = ComputeMetrics({0, 0}, {0, 0}, 2);
  EXPECT_DOUBLE_EQ(m.accuracy, 1.0);
  EXPECT_DOUBLE_EQ(m.macro_f1, 0.5);
  EXPECT_DOUBLE_EQ(m.per_class_recall[1], 0.0);
}

TEST(MetricsTest, EmptyAndOutOfRange) {
  MetricsAccumulator acc(2);
  acc.Add(5, 0);
  acc.Add(0, -1);
  ClassificationMetrics m = acc.Compute();
  EXPECT_EQ(m.num_samples, 0);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.0);
}

}  // namespace
}  // namespace ftune::train
