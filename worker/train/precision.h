// Which arithmetic a run uses, decided from the request, the device and the CPU: pure logic
// (the CUDA decisions are testable on a CPU box) plus a CPU feature probe.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "c10/core/ScalarType.h"
#include "worker/train/trainer_config.h"

namespace ftune::train {

enum class ComputeDtype { kFp32, kFp16, kBf16 };
const char* ComputeDtypeName(ComputeDtype dtype);
c10::ScalarType TorchDtype(ComputeDtype dtype);

struct CpuFeatures {
  bool avx512_bf16 = false;
  bool amx_bf16 = false;
  // Native bf16 matrix arithmetic (AVX-512 BF16 or AMX): bf16 autocast is a speed-up.
  bool native_bf16() const { return avx512_bf16 || amx_bf16; }
};

// Parses the "flags" line of /proc/cpuinfo text.
CpuFeatures ParseCpuInfo(const std::string& cpuinfo);
// This machine's features (read once from /proc/cpuinfo; all false when unreadable).
const CpuFeatures& HostCpuFeatures();

struct PrecisionChoice {
  ComputeDtype dtype = ComputeDtype::kFp32;
  // fp16 needs dynamic loss scaling; bf16 and fp32 do not.
  bool loss_scaling = false;
  // One line saying why, for the run's log.
  std::string reason;
};

// "auto" (or empty), "fp32", "bf16" or "fp16"; InvalidArgument naming the others.
absl::StatusOr<RequestedPrecision> ParseRequestedPrecision(const std::string& name);

// auto: fp16 + loss scaling on CUDA; bf16 on a CPU with native bf16; else fp32.
// fp16 on CPU is rejected (InvalidArgument); bf16 on CUDA needs `cuda_bf16` (Ampere+).
absl::StatusOr<PrecisionChoice> ChoosePrecision(RequestedPrecision requested, bool on_cuda,
                                                const CpuFeatures& cpu, bool cuda_bf16);

}  // namespace ftune::train
