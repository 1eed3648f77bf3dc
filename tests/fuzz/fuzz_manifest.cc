// Any bytes as a dataset's manifest.csv (rows naming files that mostly do not exist): the
// scan skips every bad row with a reason and never crashes.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "worker/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    const std::string d = "/dev/shm/ftune-fuzz-manifest-" + std::to_string(getpid());
    std::filesystem::create_directories(d);
    return d;
  }();
  {
    std::ofstream out(dir + "/manifest.csv", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  ftune::v1::DatasetSpec spec;
  spec.set_path(dir + "/manifest.csv");
  spec.set_layout(ftune::v1::DATASET_LAYOUT_MANIFEST);
  ftune::data::AudioCache cache;
  auto scanned = ftune::data::ScanDataset(spec, {}, 42, &cache, 1);
  if (scanned.ok()) (void)ftune::data::ValidateDataset(*scanned);
  return 0;
}
