#include "worker/model/dropout.h"

#include <ATen/Parallel.h>

#include "gtest/gtest.h"
#include "torch/torch.h"

namespace ftune::model {
namespace {

TEST(DropoutTest, KeepsOneMinusPScaled) {
  const torch::Tensor like = torch::empty({1000, 1001});  // odd count: the last pair is half
  const torch::Tensor mask = DropoutMask(like, 0.1, 7);
  const double kept = mask.ne(0).to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(kept, 0.9, 0.002);  // 1e6 draws: sd 3e-4
  EXPECT_TRUE(torch::allclose(mask.masked_select(mask.ne(0)),
                              torch::full({1}, 1.0 / 0.9)));
  // Neighbouring elements are independent: P(both kept) = 0.81.
  const torch::Tensor flat = mask.flatten().ne(0).to(torch::kDouble);
  const double both = (flat.slice(0, 0, -1) * flat.slice(0, 1)).mean().item<double>();
  EXPECT_NEAR(both, 0.81, 0.003);
}

TEST(DropoutTest, SameSeedSameMaskForAnyThreadCount) {
  const torch::Tensor like = torch::empty({257, 513}, torch::kBFloat16);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const torch::Tensor one = DropoutMask(like, 0.3, 42);
  at::set_num_threads(std::max(2, threads));
  const torch::Tensor many = DropoutMask(like, 0.3, 42);
  at::set_num_threads(threads);
  EXPECT_EQ(one.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(one, many));
  EXPECT_FALSE(torch::equal(one, DropoutMask(like, 0.3, 43)));
}

TEST(DropoutTest, FollowsManualSeedAndDiffersBetweenCalls) {
  const torch::Tensor x = torch::ones({64, 64});
  torch::manual_seed(5);
  const torch::Tensor first = Dropout(x, 0.5, true);
  const torch::Tensor second = Dropout(x, 0.5, true);
  torch::manual_seed(5);
  EXPECT_TRUE(torch::equal(Dropout(x, 0.5, true), first));
  EXPECT_FALSE(torch::equal(first, second));
}

TEST(DropoutTest, GradientIsTheMaskAndEvalIsIdentity) {
  const torch::Tensor x = torch::randn({32, 48}).requires_grad_();
  torch::manual_seed(9);
  const torch::Tensor y = Dropout(x, 0.2, true);
  y.sum().backward();
  EXPECT_TRUE(torch::allclose(y.detach(), x.detach() * x.grad()));
  EXPECT_TRUE(x.grad().eq(0).any().item<bool>());
  EXPECT_TRUE(Dropout(x, 0.2, false).is_same(x));
  EXPECT_TRUE(Dropout(x, 0.0, true).is_same(x));
}

}  // namespace
}  // namespace ftune::model
