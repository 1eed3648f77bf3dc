#include "worker/train/precision.h"

#include "absl/strings/str_cat.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"

namespace ftune::train {

const char* ComputeDtypeName(ComputeDtype dtype) {
  switch (dtype) {
    case ComputeDtype::kFp32:
      return "fp32";
    case ComputeDtype::kFp16:
      return "fp16";
    case ComputeDtype::kBf16:
      return "bf16";
  }
  return "fp32";
}

CpuFeatures ParseCpuInfo(const std::string& cpuinfo) {
  CpuFeatures features;
  for (absl::string_view line : absl::StrSplit(cpuinfo, '\n')) {
    if (!absl::StartsWith(line, "flags")) continue;
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    for (absl::string_view flag :
         absl::StrSplit(line.substr(colon + 1), ' ', absl::SkipEmpty())) {
      if (flag == "avx512_bf16") features.avx512_bf16 = true;
      if (flag == "amx_bf16") features.amx_bf16 = true;
    }
    break;  // every core reports the same flags
  }
  return features;
}

const CpuFeatures& HostCpuFeatures() {
  static const CpuFeatures features = [] {
    std::ifstream in("/proc/cpuinfo");
    std::stringstream text;
    text << in.rdbuf();
    return ParseCpuInfo(text.str());
  }();
  return features;
}

c10::ScalarType TorchDtype(ComputeDtype dtype) {
  switch (dtype) {
    case ComputeDtype::kFp16:
      return c10::kHalf;
    case ComputeDtype::kBf16:
      return c10::kBFloat16;
    default:
      return c10::kFloat;
  }
}

absl::StatusOr<RequestedPrecision> ParseRequestedPrecision(const std::string& name) {
  if (name == "auto" || name.empty()) return RequestedPrecision::kAuto;
  if (name == "fp32") return RequestedPrecision::kFp32;
  if (name == "bf16") return RequestedPrecision::kBf16;
  if (name == "fp16") return RequestedPrecision::kFp16;
  return absl::InvalidArgumentError(
      absl::StrCat("precision '", name, "' is not one of auto, fp32, bf16, fp16"));
}

absl::StatusOr<PrecisionChoice> ChoosePrecision(RequestedPrecision requested, bool on_cuda,
                                                const CpuFeatures& cpu, bool cuda_bf16) {
  PrecisionChoice choice;
  switch (requested) {
    case RequestedPrecision::kFp32:
      choice.reason = "fp32 as requested";
      return choice;
    case RequestedPrecision::kFp16:
      if (!on_cuda) {
        return absl::InvalidArgumentError(
            "precision fp16 needs a CUDA device; use bf16 or fp32 on CPU");
      }
      choice.dtype = ComputeDtype::kFp16;
      choice.loss_scaling = true;
      choice.reason = "fp16 autocast with dynamic loss scaling as requested";
      return choice;
    case RequestedPrecision::kBf16:
      if (on_cuda && !cuda_bf16) {
        return absl::InvalidArgumentError(
            "precision bf16 needs a CUDA device of compute capability 8.0 or newer");
      }
      choice.dtype = ComputeDtype::kBf16;
      choice.reason = on_cuda || cpu.native_bf16()
                          ? "bf16 autocast as requested"
                          : "bf16 autocast as requested (this CPU has no native bf16: slow)";
      return choice;
    case RequestedPrecision::kAuto:
      if (on_cuda) {
        choice.dtype = ComputeDtype::kFp16;
        choice.loss_scaling = true;
        choice.reason = "auto: fp16 autocast with dynamic loss scaling on CUDA";
      } else if (cpu.native_bf16()) {
        choice.dtype = ComputeDtype::kBf16;
        choice.reason = cpu.amx_bf16 ? "auto: bf16 autocast (CPU has AMX)"
                                     : "auto: bf16 autocast (CPU has AVX-512 BF16)";
      } else {
        choice.reason = "auto: fp32 (CPU has no native bf16)";
      }
      return choice;
  }
  return absl::InvalidArgumentError("unknown precision");
}

}  // namespace ftune::train
