// The devices a worker announces. The CPU is described here from /proc; CUDA devices are
// detected by the caller (ftworker links libtorch, this library does not).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ftune/v1/worker.pb.h"

namespace ftune::daemon {

// "cpu" with the CPU model, its bf16 support (avx512_bf16 / amx_bf16) and the memory size.
ftune::v1::Device CpuDevice();

// Describes cuda:N; supplied by the caller. NOT_FOUND when there is no such device.
using CudaProbe = std::function<absl::StatusOr<ftune::v1::Device>(int index)>;

// Parses "cpu,cuda:0,cuda:1" into devices. Names must be cpu or cuda:N, each at most once;
// CUDA devices are described by `probe`.
absl::StatusOr<std::vector<ftune::v1::Device>> ParseDevices(const std::string& list,
                                                            const CudaProbe& probe);

}  // namespace ftune::daemon
