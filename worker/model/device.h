// Device strings and mixed-precision scopes for the model.
#pragma once

#include <optional>
#include <string>

#include <torch/torch.h>

#include "absl/status/statusor.h"

namespace ftune::model {

// "" or "auto" (CUDA 0 when available, else CPU), "cpu", "cuda", "cuda:N".
absl::StatusOr<torch::Device> ParseDevice(const std::string& device);

// Enables autocast for `device` for the guard's lifetime: bf16 on CPU, fp16 on CUDA. A
// disabled guard does nothing, so callers can write AutocastGuard guard(device, use_amp).
class AutocastGuard {
 public:
  AutocastGuard(const torch::Device& device, bool enabled);
  // Autocast to `dtype` (kBFloat16 or kHalf) on `device`; kFloat disables the guard.
  AutocastGuard(const torch::Device& device, at::ScalarType dtype);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false;
  bool cuda_ = false;
  bool previous_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kFloat;
};

// The dtype autocast computes in on `device`'s type when it is enabled there.
std::optional<at::ScalarType> ActiveAutocastDtype(const torch::Device& device);

// Sets libtorch's intra-op threads for the calling thread (OpenMP counts are per thread, and
// Debian's libtorch starts with one): `threads`, or every core when it is 0.
void SetIntraOpThreads(int threads);

}  // namespace ftune::model
