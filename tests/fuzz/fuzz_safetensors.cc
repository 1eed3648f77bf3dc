// Any bytes as a model.safetensors file: ReadSafetensors returns tensors or an error naming
// what is wrong, and never crashes, reads out of bounds or allocates what the file lies about.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include "worker/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/dev/shm/ftune-fuzz-" + std::to_string(getpid()) + ".safetensors";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  auto tensors = ftune::model::ReadSafetensors(path);
  if (tensors.ok()) {
    for (const auto& [name, t] : *tensors) (void)t.sum();  // touch every byte it claims
  }
  return 0;
}
