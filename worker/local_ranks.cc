#include "worker/local_ranks.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <thread>

#include "absl/strings/str_split.h"
#include "common/job_spec.h"
#include "common/shutdown.h"
#include "fmt/format.h"
#include "torch/cuda.h"
#include "worker/train/distributed.h"

namespace ftune::worker {
namespace {

// This process's own command line (argv), to start the ranks with.
std::vector<std::string> OwnArguments() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  std::string arg;
  while (std::getline(in, arg, '\0')) args.push_back(arg);
  return args;
}

}  // namespace

void LocalRankFlags::AddTo(CLI::App* cmd) {
  cmd->add_option("--devices", devices,
                  "With --world-size N: the ranks' devices, e.g. cpu,cpu or cuda:0,cuda:1 "
                  "(default: one CUDA device each when there are enough, else cpu)");
  // Set by the launcher on the rank processes it starts.
  cmd->add_option("--rank", rank)->group("");
  cmd->add_option("--rendezvous-port", rendezvous_port)->group("");
  cmd->add_option("--rank-device", rank_device)->group("");
}

train::DistributedOptions LocalRankFlags::Distributed(int world_size) const {
  train::DistributedOptions options;
  options.rank = rank;
  options.world_size = world_size;
  options.host = "127.0.0.1";
  options.port = rendezvous_port;
  options.rank0_serves_store = false;  // the launcher serves it
  return options;
}

int LocalRankThreads(int world_size) {
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / world_size);
}

absl::StatusOr<std::vector<std::string>> LocalRankDevices(const std::string& devices,
                                                          const std::string& spec_device,
                                                          int world_size) {
  std::vector<std::string> out;
  if (!devices.empty()) {
    out = absl::StrSplit(devices, ',');
    if (static_cast<int>(out.size()) != world_size) {
      return absl::InvalidArgumentError(fmt::format(
          "--devices names {} devices, --world-size is {}", out.size(), world_size));
    }
    for (const std::string& d : out) {
      if (d.empty() || d == "auto" || d == "cuda" || !IsValidDeviceName(d)) {
        return absl::InvalidArgumentError(
            fmt::format("--devices: '{}' is not cpu or cuda:N", d));
      }
    }
    return out;
  }
  const bool cuda = spec_device != "cpu" && static_cast<int>(torch::cuda::device_count()) >= world_size;
  if (spec_device == "cuda" && !cuda) {
    return absl::FailedPreconditionError(fmt::format(
        "device cuda with --world-size {}: this machine has {} CUDA devices", world_size,
        torch::cuda::device_count()));
  }
  for (int r = 0; r < world_size; ++r) out.push_back(cuda ? fmt::format("cuda:{}", r) : "cpu");
  return out;
}

int LaunchLocalRanks(const LocalRankFlags& flags, int world_size, const std::string& spec_device) {
  absl::StatusOr<std::vector<std::string>> devices =
      LocalRankDevices(flags.devices, spec_device, world_size);
  if (!devices.ok()) {
    std::cerr << "ftworker: " << devices.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<std::unique_ptr<train::RendezvousServer>> rendezvous =
      train::RendezvousServer::Start("127.0.0.1");
  if (!rendezvous.ok()) {
    std::cerr << "ftworker: " << rendezvous.status().message() << "\n";
    return 1;
  }
  const std::vector<std::string> own = OwnArguments();
  InstallShutdownHandlers();
  std::vector<pid_t> ranks;
  for (int r = 0; r < world_size; ++r) {
    std::vector<std::string> args = own;
    for (const std::string& extra :
         {std::string("--rank"), std::to_string(r), std::string("--rendezvous-port"),
          std::to_string((*rendezvous)->port()), std::string("--rank-device"), (*devices)[r]}) {
      args.push_back(extra);
    }
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
      if (r != 0) dup2(STDERR_FILENO, STDOUT_FILENO);  // one stream of events: rank 0's
      execv("/proc/self/exe", argv.data());
      _exit(127);
    }
    if (pid < 0) {
      std::cerr << "ftworker: cannot start rank " << r << "\n";
      for (pid_t started : ranks) kill(started, SIGTERM);
      break;
    }
    ranks.push_back(pid);
  }
  // A stop request (Ctrl-C, SIGTERM) goes to every rank; each stops at the same step.
  std::thread forward([&ranks] {
    if (WaitForShutdown() != 0) {
      for (pid_t pid : ranks) kill(pid, SIGTERM);
    }
  });
  int exit_code = static_cast<int>(ranks.size()) == world_size ? 0 : 1;
  int rank0_code = -1;
  for (size_t left = ranks.size(); left > 0; --left) {
    int status = 0;
    const pid_t pid = wait(&status);
    if (pid < 0) break;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (pid == ranks[0]) rank0_code = code;
    if (code != 0 && exit_code == 0) {
      exit_code = code;
      // The others would only wait in their collectives for the timeout.
      for (pid_t other : ranks) {
        if (other != pid) kill(other, SIGTERM);
      }
    }
  }
  RequestShutdown();
  forward.join();
  return rank0_code > 0 ? rank0_code : exit_code;
}


}  // namespace ftune::worker
