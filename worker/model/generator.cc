#include "worker/model/generator.h"

#include <ATen/CPUGeneratorImpl.h>

namespace ftune::model {
namespace {

thread_local at::Generator current;  // undefined outside any scope

}  // namespace

at::Generator MakeCpuGenerator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

GeneratorScope::GeneratorScope(at::Generator generator) : previous_(current) {
  current = std::move(generator);
}

GeneratorScope::~GeneratorScope() { current = previous_; }

at::Generator CurrentGenerator() {
  return current.defined() ? current : at::detail::getDefaultCPUGenerator();
}

}  // namespace ftune::model
