#include "worker/train/precision.h"

#include "gtest/gtest.h"

namespace ftune::train {
namespace {

const CpuFeatures kNoBf16{};
const CpuFeatures kAvx512Bf16{.avx512_bf16 = true, .amx_bf16 = false};

TEST(PrecisionTest, AutoOnCudaIsFp16WithScaling) {
  auto c = ChoosePrecision(RequestedPrecision::kAuto, /*on_cuda=*/true, kNoBf16, true);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->dtype, ComputeDtype::kFp16);
  EXPECT_TRUE(c->loss_scaling);
}

TEST(PrecisionTest, AutoOnCpuFollowsBf16Support) {
  auto with = ChoosePrecision(RequestedPrecision::kAuto, false, kAvx512Bf16, false);
  ASSERT_TRUE(with.ok());
  EXPECT_EQ(with->dtype, ComputeDtype::kBf16);
  EXPECT_FALSE(with->loss_scaling);
  auto without = ChoosePrecision(RequestedPrecision::kAuto, false, kNoBf16, false);
  ASSERT_TRUE(without.ok());
  EXPECT_EQ(without->dtype, ComputeDtype::kFp32);
}

TEST(PrecisionTest, ExplicitChoices) {
  EXPECT_EQ(ChoosePrecision(RequestedPrecision::kFp32, true, kAvx512Bf16, true)->dtype,
            ComputeDtype::kFp32);
  EXPECT_EQ(ChoosePrecision(RequestedPrecision::kFp16, false, kAvx512Bf16, false).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ChoosePrecision(RequestedPrecision::kBf16, true, kNoBf16, false).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto bf16_cuda = ChoosePrecision(RequestedPrecision::kBf16, true, kNoBf16, true);
  ASSERT_TRUE(bf16_cuda.ok());
  EXPECT_EQ(bf16_cuda->dtype, ComputeDtype::kBf16);
  EXPECT_FALSE(bf16_cuda->loss_scaling);
  EXPECT_EQ(ChoosePrecision(RequestedPrecision::kBf16, false, kNoBf16, false)->dtype,
            ComputeDtype::kBf16);
}

TEST(PrecisionTest, ParsesCpuInfoFlags) {
  const std::string text =
      "processor\t: 0\nvendor_id\t: GenuineIntel\n"
      "flags\t\t: fpu vme avx512f avx512_bf16 amx_tile\n\nprocessor\t: 1\n";
  CpuFeatures f = ParseCpuInfo(text);
  EXPECT_TRUE(f.avx512_bf16);
  EXPECT_FALSE(f.amx_bf16);
  EXPECT_TRUE(f.native_bf16());
  EXPECT_FALSE(ParseCpuInfo("flags : fpu avx2 avx512f\n").native_bf16());
  EXPECT_TRUE(ParseCpuInfo("flags : amx_bf16 amx_tile\n").amx_bf16);
}

}  // namespace
}  // namespace ftune::train
