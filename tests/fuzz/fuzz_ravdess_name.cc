// Any bytes as a RAVDESS file name: parsed into seven in-range fields that print back to the
// same name, or an error.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "worker/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string name(reinterpret_cast<const char*>(data), size);
  auto parsed = ftune::data::ParseRavdessName(name);
  if (!parsed.ok()) return 0;
  const auto& p = *parsed;
  if (p.emotion < 1 || p.emotion > 8 || p.actor < 1) __builtin_trap();
  char again[64];
  std::snprintf(again, sizeof(again), "%02d-%02d-%02d-%02d-%02d-%02d-%02d", p.modality,
                p.vocal_channel, p.emotion, p.intensity, p.statement, p.repetition, p.actor);
  if (name.rfind(again, 0) != 0) __builtin_trap();
  return 0;
}
