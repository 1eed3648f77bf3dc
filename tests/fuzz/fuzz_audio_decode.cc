// Any bytes as an uploaded or on-disk audio file: decoded to finite 16 kHz samples, or an
// error; never a crash or a read past the input.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "worker/data/audio.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ftune::data::AudioInfo info;
  auto audio = ftune::data::DecodeBytes(
      std::string_view(reinterpret_cast<const char*>(data), size), &info);
  if (audio.ok()) {
    for (float x : *audio) {
      if (!std::isfinite(x)) __builtin_trap();
    }
  }
  return 0;
}
