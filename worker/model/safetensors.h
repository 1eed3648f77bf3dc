// Safetensors (https://github.com/huggingface/safetensors) reader and writer for F32, F16 and
// BF16 tensors. The reader validates everything before touching tensor bytes: header size bound,
// JSON, no duplicate names, dtype, bytes = numel x dtype size, offsets in bounds and covering
// the data area exactly once.
#pragma once

#include <map>
#include <string>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ftune::model {

// Upper bound on the JSON header (the reference implementation uses 100 MB too).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// name -> tensor (CPU, contiguous, the file's dtype); file order irrelevant.
absl::StatusOr<std::map<std::string, torch::Tensor>> ReadSafetensors(const std::string& path);

// Writes `path` directly (the caller does tmp + rename). Tensors are written in name order,
// metadata {"format": "pt"} as transformers expects.
absl::Status WriteSafetensors(const std::map<std::string, torch::Tensor>& tensors,
                              const std::string& path);

}  // namespace ftune::model
