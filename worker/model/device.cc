#include "worker/model/device.h"

#include <ATen/autocast_mode.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ftune::model {

absl::StatusOr<torch::Device> ParseDevice(const std::string& device) {
  const bool have_cuda = torch::cuda::is_available();
  if (device.empty() || device == "auto") {
    return have_cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  }
  if (device == "cpu") return torch::Device(torch::kCPU);
  if (device == "cuda" || device.rfind("cuda:", 0) == 0) {
    int index = 0;
    if (device != "cuda") {
      const std::string digits = device.substr(5);
      if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos ||
          !absl::SimpleAtoi(digits, &index)) {
        return absl::InvalidArgumentError("device '" + device + "': expected cuda:N with N a GPU index");
      }
    }
    if (!have_cuda) {
      return absl::FailedPreconditionError(
          "device '" + device + "': no CUDA GPU available (or libtorch built without CUDA)");
    }
    const int count = static_cast<int>(torch::cuda::device_count());
    if (index >= count) {
      return absl::InvalidArgumentError(
          absl::StrCat("device '", device, "': only ", count, " CUDA device(s) present"));
    }
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  return absl::InvalidArgumentError("device '" + device + "': expected auto, cpu, cuda or cuda:N");
}

AutocastGuard::AutocastGuard(const torch::Device& device, bool enabled)
    : AutocastGuard(device, !enabled              ? at::kFloat
                            : device.is_cuda() ? at::kHalf
                                               : at::kBFloat16) {}

AutocastGuard::AutocastGuard(const torch::Device& device, at::ScalarType dtype) {
  if (dtype == at::kFloat) return;
  active_ = true;
  cuda_ = device.is_cuda();
  if (cuda_) {
    previous_enabled_ = at::autocast::is_enabled();
    previous_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(true);
  } else {
    previous_enabled_ = at::autocast::is_cpu_enabled();
    previous_dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(true);
  }
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  // Leaving the outermost scope drops the cached casts of the weights.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  if (cuda_) {
    at::autocast::set_enabled(previous_enabled_);
    at::autocast::set_autocast_gpu_dtype(previous_dtype_);
  } else {
    at::autocast::set_cpu_enabled(previous_enabled_);
    at::autocast::set_autocast_cpu_dtype(previous_dtype_);
  }
}

std::optional<at::ScalarType> ActiveAutocastDtype(const torch::Device& device) {
  if (device.is_cuda()) {
    if (at::autocast::is_enabled()) return at::autocast::get_autocast_gpu_dtype();
  } else if (device.is_cpu() && at::autocast::is_cpu_enabled()) {
    return at::autocast::get_autocast_cpu_dtype();
  }
  return std::nullopt;
}

void SetIntraOpThreads(int threads) {
  at::set_num_threads(threads > 0 ? threads
                                  : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

}  // namespace ftune::model
