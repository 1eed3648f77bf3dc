#include "worker/daemon/devices.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "worker/daemon/backoff.h"

namespace ftune::daemon {
namespace {

absl::StatusOr<ftune::v1::Device> OneGpu(int index) {
  if (index != 0) return absl::NotFoundError("no CUDA device cuda:" + std::to_string(index));
  ftune::v1::Device device;
  device.set_name("cuda:0");
  device.set_kind(ftune::v1::DEVICE_KIND_CUDA);
  return device;
}

TEST(DevicesTest, ParsesCpuAndCuda) {
  auto devices = ParseDevices("cpu, cuda:0", OneGpu);
  ASSERT_TRUE(devices.ok()) << devices.status();
  ASSERT_EQ(devices->size(), 2u);
  EXPECT_EQ((*devices)[0].name(), "cpu");
  EXPECT_EQ((*devices)[0].kind(), ftune::v1::DEVICE_KIND_CPU);
  EXPECT_GT((*devices)[0].memory_bytes(), 0u);
  EXPECT_EQ((*devices)[1].name(), "cuda:0");
}

TEST(DevicesTest, RejectsBadLists) {
  EXPECT_TRUE(absl::StrContains(ParseDevices("gpu", OneGpu).status().message(), "'gpu'"));
  EXPECT_FALSE(ParseDevices("cuda:x", OneGpu).ok());
  EXPECT_FALSE(ParseDevices("cpu,cpu", OneGpu).ok());
  EXPECT_FALSE(ParseDevices("", OneGpu).ok());
  EXPECT_EQ(ParseDevices("cuda:1", OneGpu).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ParseDevices("cuda:0", nullptr).status().code(), absl::StatusCode::kNotFound);
}

TEST(BackoffTest, GrowsWithJitterUpToTheCap) {
  Backoff backoff({absl::Milliseconds(100), absl::Seconds(1)}, /*seed=*/7);
  absl::Duration ceiling = absl::Milliseconds(100);
  for (int i = 0; i < 8; ++i) {
    const absl::Duration wait = backoff.Next();
    EXPECT_GE(wait, ceiling / 2) << i;
    EXPECT_LE(wait, ceiling) << i;
    ceiling = std::min(ceiling * 2, absl::Seconds(1));
  }
  backoff.Reset();
  EXPECT_LE(backoff.Next(), absl::Milliseconds(100));
}

}  // namespace
}  // namespace ftune::daemon
