// Data-parallel ranks on this machine, started the way torchrun does: `ftworker train` (or
// `bench`) with --world-size N starts N processes of itself, each told its rank, its device
// and the port of the rendezvous the launcher serves.
#pragma once

#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "worker/train/distributed_options.h"

namespace ftune::worker {

struct LocalRankFlags {
  // One device per rank, e.g. cpu,cpu or cuda:0,cuda:1.
  std::string devices;
  // Set by the launcher on the rank processes it starts (rank -1: this is the launcher).
  int rank = -1;
  int rendezvous_port = 0;
  std::string rank_device;

  void AddTo(CLI::App* cmd);
  // This rank's place in the group (the launcher serves the rendezvous on loopback).
  train::DistributedOptions Distributed(int world_size) const;
};

// The devices of `world_size` local ranks: --devices as given, else one CUDA device each when
// `spec_device` allows CUDA and there are enough, else the CPU for all.
absl::StatusOr<std::vector<std::string>> LocalRankDevices(const std::string& devices,
                                                          const std::string& spec_device,
                                                          int world_size);

// Intra-op threads for each of `world_size` CPU ranks sharing this machine's cores.
int LocalRankThreads(int world_size);

// Starts the ranks with this process's own command line plus their rank flags and waits for
// them. Rank 0 keeps stdout; the others write theirs to stderr, so stdout is one stream. A
// stop request (SIGINT, SIGTERM) is passed to every rank; when one rank fails, the others are
// stopped. Returns the exit status for the run: rank 0's, else the first failure's.
int LaunchLocalRanks(const LocalRankFlags& flags, int world_size, const std::string& spec_device);

}  // namespace ftune::worker
