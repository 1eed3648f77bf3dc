#include "worker/daemon/devices.h"

#include <unistd.h>

#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace ftune::daemon {

namespace v1 = ::ftune::v1;

v1::Device CpuDevice() {
  v1::Device device;
  device.set_name("cpu");
  device.set_kind(v1::DEVICE_KIND_CPU);
  std::string model;
  bool bf16 = false;
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (model.empty() && absl::StartsWith(line, "model name")) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        model = std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
    } else if (absl::StartsWith(line, "flags")) {
      bf16 = absl::StrContains(line, " avx512_bf16") || absl::StrContains(line, " amx_bf16");
      break;
    }
  }
  const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  device.set_description(
      absl::StrCat(model.empty() ? "CPU" : model, ", ", cores, " cores", bf16 ? ", bf16" : ""));
  device.set_bf16(bf16);
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page_size > 0) {
    device.set_memory_bytes(static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size));
  }
  return device;
}

absl::StatusOr<std::vector<v1::Device>> ParseDevices(const std::string& list,
                                                     const CudaProbe& probe) {
  std::vector<v1::Device> devices;
  std::set<std::string> seen;
  for (absl::string_view part : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    const std::string name(absl::StripAsciiWhitespace(part));
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("device '", name, "' is listed twice"));
    }
    if (name == "cpu") {
      devices.push_back(CpuDevice());
      continue;
    }
    absl::string_view index_text = name;
    int index = -1;
    if (!absl::ConsumePrefix(&index_text, "cuda:") || !absl::SimpleAtoi(index_text, &index) ||
        index < 0) {
      return absl::InvalidArgumentError(absl::StrCat("device '", name, "' is not cpu or cuda:N"));
    }
    if (!probe) {
      return absl::NotFoundError(absl::StrCat("device '", name, "': no CUDA support"));
    }
    absl::StatusOr<v1::Device> device = probe(index);
    if (!device.ok()) return device.status();
    devices.push_back(*std::move(device));
  }
  if (devices.empty()) return absl::InvalidArgumentError("the device list is empty");
  return devices;
}

}  // namespace ftune::daemon
