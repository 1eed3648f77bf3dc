// The random generator a model draws from — fresh weights, dropout masks, SpecAugment masks,
// LayerDrop — per thread. A job sets its own for the thread it trains on, so jobs running at
// once on one worker neither disturb each other's draws nor the generator state each saves
// for exact resume; without a scope, torch's default CPU generator is used.
#pragma once

#include <ATen/core/Generator.h>

#include <cstdint>

namespace ftune::model {

// A CPU generator seeded with `seed` (torch's Philox-free mt19937, as manual_seed uses).
at::Generator MakeCpuGenerator(uint64_t seed);

// While alive, CurrentGenerator() on this thread is `generator`. Scopes nest.
class GeneratorScope {
 public:
  explicit GeneratorScope(at::Generator generator);
  ~GeneratorScope();
  GeneratorScope(const GeneratorScope&) = delete;
  GeneratorScope& operator=(const GeneratorScope&) = delete;

 private:
  at::Generator previous_;
};

// The innermost scope's generator on this thread, else torch's default CPU generator.
at::Generator CurrentGenerator();

}  // namespace ftune::model
