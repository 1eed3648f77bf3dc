// The time-major GEMM convolutions against torch::conv1d / group_norm: the positional
// convolution's output and all three gradients in float64, with the work split into blocks of
// clips and of rows, and under bf16 autocast; the feature encoder's strided convolutions and
// per-channel norm in float64, float32 and bf16.
#include "worker/model/time_major_conv.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "worker/model/device.h"

namespace ftune::model {
namespace {

struct Case {
  int64_t batch, frames, channels, groups, kernel;
  int64_t left_pad = -1, rows = -1;  // -1: the positional conv's K/2 and `frames`
  int64_t pad() const { return left_pad < 0 ? kernel / 2 : left_pad; }
  int64_t out_rows() const { return rows < 0 ? frames : rows; }
};

// The reference: conv1d on [B, C, T] zero-padded by `pad()` frames at the start and as needed
// at the end, cut to `out_rows()`, back to [B, T, C].
torch::Tensor Reference(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                        const Case& c) {
  const int64_t right = std::max<int64_t>(0, c.out_rows() + c.kernel - 1 - c.frames - c.pad());
  torch::Tensor padded = torch::constant_pad_nd(x.transpose(1, 2), {c.pad(), right});
  torch::Tensor y = torch::conv1d(padded, w, b, 1, torch::IntArrayRef{0}, 1, c.groups);
  return y.slice(2, 0, c.out_rows()).transpose(1, 2);
}

class GroupedConvTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(GroupedConvTest, MatchesConv1dForwardAndBackward) {
  const int64_t block_bytes = GetParam();
  // Even and odd kernels at the positional conv's padding; a left pad and row count of their own.
  for (Case c : {Case{3, 11, 12, 3, 8}, Case{2, 7, 8, 2, 5}, Case{1, 4, 6, 1, 6}, Case{3, 9, 8, 2, 4}}) {
    if (c.batch == 3 && c.kernel == 4) {
      c.left_pad = 1;
      c.rows = 6;
    }
    SCOPED_TRACE(testing::Message() << "kernel " << c.kernel << " frames " << c.frames);
    torch::manual_seed(7);
    auto options = torch::TensorOptions().dtype(torch::kDouble).requires_grad(true);
    torch::Tensor x = torch::randn({c.batch, c.frames, c.channels}, options);
    torch::Tensor w = torch::randn({c.channels, c.channels / c.groups, c.kernel}, options);
    torch::Tensor b = torch::randn({c.channels}, options);
    torch::Tensor upstream = torch::randn({c.batch, c.out_rows(), c.channels}, torch::kDouble);

    torch::Tensor expected = Reference(x, w, b, c);
    auto expected_grads = torch::autograd::grad({expected}, {x, w, b}, {upstream});
    torch::Tensor y = GroupedConvTimeMajor(x, w, b, c.groups, c.pad(), c.out_rows(), block_bytes);
    auto grads = torch::autograd::grad({y}, {x, w, b}, {upstream});

    ASSERT_EQ(y.sizes(), expected.sizes());
    EXPECT_TRUE(torch::allclose(y, expected, 1e-12, 1e-12));
    for (int i = 0; i < 3; ++i) {
      SCOPED_TRACE(i);
      ASSERT_EQ(grads[i].sizes(), expected_grads[i].sizes());
      EXPECT_TRUE(torch::allclose(grads[i], expected_grads[i], 1e-11, 1e-11));
    }

    // Without autograd (serving), the same output.
    torch::NoGradGuard no_grad;
    torch::Tensor served = GroupedConvTimeMajor(x, w, b, c.groups, c.pad(), c.out_rows(), block_bytes);
    EXPECT_TRUE(torch::allclose(served, expected, 1e-12, 1e-12));
  }
}

// One block for everything; two clips per block and a remainder (the first case: 256 bytes a
// row, 11 rows a clip); one clip per block; blocks of a few rows (clips split); one row each.
INSTANTIATE_TEST_SUITE_P(Blocks, GroupedConvTest,
                         ::testing::Values(kGroupedConvBlockBytes, 5632, 2816, 600, 1));

TEST(GroupedConvAutocastTest, ComputesInBf16AndReturnsFloatGradients) {
  const Case c{2, 30, 32, 4, 16};
  torch::manual_seed(3);
  auto options = torch::TensorOptions().dtype(torch::kFloat).requires_grad(true);
  torch::Tensor x = torch::randn({c.batch, c.frames, c.channels}, options);
  torch::Tensor w = (torch::randn({c.channels, c.channels / c.groups, c.kernel}) * 0.05).requires_grad_(true);
  torch::Tensor b = torch::randn({c.channels}, options);
  torch::Tensor expected = Reference(x, w, b, c);
  auto expected_grads = torch::autograd::grad({expected.sum()}, {x, w, b});

  torch::Tensor y;
  {
    AutocastGuard autocast(torch::Device(torch::kCPU), torch::kBFloat16);
    y = GroupedConvTimeMajor(x, w, b, c.groups, c.kernel / 2, c.frames);
  }
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  auto grads = torch::autograd::grad({y.to(torch::kFloat).sum()}, {x, w, b});
  EXPECT_TRUE(torch::allclose(y.to(torch::kFloat), expected, 0.03, 0.05));
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(grads[i].scalar_type(), torch::kFloat);
    const double scale = expected_grads[i].abs().max().item<double>();
    EXPECT_LT((grads[i] - expected_grads[i]).abs().max().item<double>(), 0.02 * scale);
  }
}

TEST(GroupedConvShapeTest, RefusesMismatchedShapes) {
  torch::Tensor x = torch::zeros({1, 5, 6});
  EXPECT_THROW(GroupedConvTimeMajor(x, torch::zeros({6, 4, 3}), torch::Tensor(), 2, 1, 5), c10::Error);
  EXPECT_THROW(GroupedConvTimeMajor(x, torch::zeros({6, 3, 3}), torch::Tensor(), 2, 3, 5), c10::Error);
}

TEST(StridedConvTest, MatchesConv1d) {
  struct Layer {
    int64_t in, out, kernel, stride;
    bool bias;
  };
  // The first layer (one input channel, overlapping windows), overlapping and abutting windows.
  for (const Layer& l : {Layer{1, 8, 10, 5, false}, Layer{6, 5, 3, 2, true}, Layer{4, 4, 2, 2, false}}) {
    SCOPED_TRACE(testing::Message() << "kernel " << l.kernel << " stride " << l.stride);
    torch::manual_seed(5);
    // A view into a larger tensor: the windows start at its storage offset.
    torch::Tensor x = torch::randn({4, 41, l.in}, torch::kDouble).narrow(0, 1, 3);
    torch::Tensor w = torch::randn({l.out, l.in, l.kernel}, torch::kDouble);
    torch::Tensor b = l.bias ? torch::randn({l.out}, torch::kDouble) : torch::Tensor();
    torch::Tensor expected = torch::conv1d(x.transpose(1, 2), w, b, l.stride).transpose(1, 2);
    torch::Tensor y = StridedConvTimeMajor(x, ConvGemmWeight(w), b, l.kernel, l.stride);
    ASSERT_EQ(y.sizes(), expected.sizes());
    EXPECT_TRUE(torch::allclose(y, expected, 1e-12, 1e-12));

    // bf16 operands, as the served encoder runs: within bf16 rounding of the float64 result.
    torch::Tensor low = StridedConvTimeMajor(x.to(torch::kBFloat16), ConvGemmWeight(w).to(torch::kBFloat16),
                                             l.bias ? b.to(torch::kBFloat16) : b, l.kernel, l.stride);
    EXPECT_EQ(low.scalar_type(), torch::kBFloat16);
    const double scale = expected.abs().max().item<double>();
    EXPECT_LT((low.to(torch::kDouble) - expected).abs().max().item<double>(), 0.03 * scale);
  }
  EXPECT_THROW(StridedConvTimeMajor(torch::zeros({1, 2, 4}), torch::zeros({12, 3}), {}, 3, 2), c10::Error);
}

TEST(ChannelNormTest, MatchesGroupNormWithOneGroupPerChannel) {
  // 600 frames: several chunks of rows; channel 2 sits far from zero, where naive float sums
  // of squares lose the variance.
  torch::manual_seed(9);
  torch::Tensor x = torch::randn({2, 600, 20}, torch::kDouble);
  x.select(2, 2).mul_(0.01).add_(300);
  torch::Tensor gamma = torch::randn({20}, torch::kDouble), beta = torch::randn({20}, torch::kDouble);
  for (torch::Dtype dtype : {torch::kDouble, torch::kFloat, torch::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    // The reference normalises the input as stored (rounded to `dtype`), in float64.
    torch::Tensor input = x.to(dtype);
    torch::Tensor reference =
        torch::group_norm(input.to(torch::kDouble).transpose(1, 2), 20, gamma, beta, 1e-5).transpose(1, 2);
    torch::Tensor y = input.clone();
    ChannelNormTimeMajor_(y, gamma.to(dtype == torch::kDouble ? dtype : torch::kFloat), beta, 1e-5);
    EXPECT_EQ(y.scalar_type(), dtype);
    const double tolerance = dtype == torch::kDouble ? 1e-10 : dtype == torch::kFloat ? 1e-4 : 0.05;
    EXPECT_LT((y.to(torch::kDouble) - reference).abs().max().item<double>(), tolerance);
  }
}

}  // namespace
}  // namespace ftune::model
