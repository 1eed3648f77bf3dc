// Inverted dropout with a fast CPU mask.
//
// On CPU, libtorch 1.13 (without MKL) draws dropout masks with `bernoulli_`, one serial
// Mersenne-Twister draw per element: about an eighth of a hubert-base training step. Here the
// keep/drop decision for element i is a counter-based hash of (seed, i), computed in parallel;
// the seed is one draw from the thread's model generator (generator.h; torch's default CPU
// generator unless a job set its own), so masks follow its seed and the generator state saved
// in checkpoints. Other devices use `torch::dropout` (fused kernels there).
#pragma once

#include <cstdint>

#include "torch/torch.h"

namespace ftune::model {

// x * mask / (1 - p) where mask keeps each element with probability 1 - p; x when not
// training or p == 0. Differentiable through x (the mask is saved by the multiply).
torch::Tensor Dropout(const torch::Tensor& x, double p, bool training);

// The scaled keep-mask for `seed`: zeros and 1 / (1 - p), in `like`'s shape and dtype (CPU).
// Exposed for tests: the same seed gives the same mask for any thread count.
torch::Tensor DropoutMask(const torch::Tensor& like, double p, uint64_t seed);

}  // namespace ftune::model
