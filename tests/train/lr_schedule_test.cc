#include "worker/train/lr_schedule.h"

#include <cmath>

#include "gtest/gtest.h"

namespace ftune::train {
namespace {

TEST(LrScheduleTest, LinearWarmupThenLinearDecayToZero) {
  auto s = LrSchedule::Create(ScheduleKind::kLinear, 1.0, 4, 12);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_DOUBLE_EQ(s->LrAt(0), 0.0);
  EXPECT_DOUBLE_EQ(s->LrAt(2), 0.5);
  EXPECT_DOUBLE_EQ(s->LrAt(4), 1.0);
  EXPECT_DOUBLE_EQ(s->LrAt(8), 0.5);
  EXPECT_DOUBLE_EQ(s->LrAt(12), 0.0);
  EXPECT_DOUBLE_EQ(s->LrAt(20), 0.0);
}

TEST(LrScheduleTest, NoWarmupStartsAtPeak) {
  auto s = LrSchedule::Create(ScheduleKind::kLinear, 5e-5, 0, 10);
  ASSERT_TRUE(s.ok());
  EXPECT_DOUBLE_EQ(s->LrAt(0), 5e-5);
  EXPECT_NEAR(s->LrAt(9), 5e-6, 1e-18);
}

TEST(LrScheduleTest, CosineIsHalfCosine) {
  auto s = LrSchedule::Create(ScheduleKind::kCosine, 2.0, 2, 10);
  ASSERT_TRUE(s.ok());
  EXPECT_DOUBLE_EQ(s->LrAt(1), 1.0);
  EXPECT_DOUBLE_EQ(s->LrAt(2), 2.0);
  EXPECT_NEAR(s->LrAt(6), 1.0, 1e-12);  // half way through the decay
  EXPECT_NEAR(s->LrAt(10), 0.0, 1e-12);
}

TEST(LrScheduleTest, ConstantAfterWarmup) {
  auto s = LrSchedule::Create(ScheduleKind::kConstant, 3.0, 3, 10);
  ASSERT_TRUE(s.ok());
  EXPECT_DOUBLE_EQ(s->LrAt(0), 0.0);
  EXPECT_DOUBLE_EQ(s->LrAt(3), 3.0);
  EXPECT_DOUBLE_EQ(s->LrAt(100), 3.0);
}

TEST(LrScheduleTest, RejectsBadArguments) {
  EXPECT_FALSE(LrSchedule::Create(ScheduleKind::kLinear, 0.0, 0, 10).ok());
  EXPECT_FALSE(LrSchedule::Create(ScheduleKind::kLinear, 1.0, -1, 10).ok());
}

}  // namespace
}  // namespace ftune::train
