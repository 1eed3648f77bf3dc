// Where one rank of a data-parallel run finds the others; no libtorch here, so the worker
// daemon can place ranks without it (worker/train/distributed.h does the work).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace ftune::train {

struct DistributedOptions {
  int rank = 0;
  int world_size = 1;
  // Rank 0's TCPStore.
  std::string host = "127.0.0.1";
  int port = 0;
  // Rank 0 serves the store itself (a worker daemon's gang); otherwise something else already
  // serves it at host:port (the local launcher, `ftworker train --world-size N`).
  bool rank0_serves_store = true;
  // Names this run in the store (job and attempt), so that a straggler of an earlier attempt
  // never joins a later one's group.
  std::string prefix;
  // A rendezvous or collective that takes longer ends the run: a rank died, hung or was
  // stopped, and no rank stays blocked.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  // Gradients are summed in buckets of about this size.
  int64_t bucket_bytes = int64_t{25} << 20;

  bool distributed() const { return world_size > 1; }
};

}  // namespace ftune::train
