// Any bytes as a job spec file, JSON or YAML (the first byte picks): parsed into a spec that
// validates, or an error naming the field; never a crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/job_spec.h"
#include "common/job_spec_flags.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto spec = (data[0] & 1) ? ftune::ParseJobSpecYaml(text) : ftune::ParseJobSpecJson(text);
  if (spec.ok() && ftune::ValidateJobSpec(*spec).ok()) {
    // What validates gets its defaults filled in without breaking validity.
    if (!ftune::ValidateJobSpec(ftune::WithDefaults(*spec)).ok()) __builtin_trap();
    (void)ftune::DescribeRecipe(*spec);
  }
  return 0;
}
