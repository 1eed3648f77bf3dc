// `ftworker train`: runs one fine-tuning job in the foreground, without a controller, and
// prints its events (human lines, or one JobEvent JSON object per line with --json, then a
// summary object).
//
// With --world-size N it starts N rank processes of itself, as torchrun does: it serves their
// rendezvous, gives each its device, prints rank 0's events (the other ranks' warnings go to
// stderr) and stops them all when one fails.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "common/job_spec.h"
#include "common/job_spec_flags.h"
#include "common/logging.h"
#include "common/shutdown.h"
#include "fmt/format.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "torch/cuda.h"
#include "worker/commands.h"
#include "worker/runner_flags.h"
#include "worker/train/distributed.h"
#include "worker/train/job_runner.h"

namespace ftune::worker {
namespace {

using ftune::v1::JobEvent;

struct TrainFlags {
  JobSpecFlags job;
  CacheFlags caches;
  bool json = false;
  LogConfig log{.level = "warn", .file = "", .name = "ftworker"};
  // Data-parallel: one device per rank, e.g. cpu,cpu or cuda:0,cuda:1.
  std::string devices;
  // Set by the launcher on the rank processes it starts.
  int rank = -1;
  int rendezvous_port = 0;
  std::string rank_device;
};

std::string Join(const google::protobuf::RepeatedField<double>& values, int precision) {
  std::string out;
  for (double v : values) out += fmt::format("{}{:.{}f}", out.empty() ? "" : " ", v, precision);
  return out;
}

// Prints events as they come, numbering them like the controller would, and remembers the
// accuracy of the best evaluation for the summary.
class PrintingSink : public train::EventSink {
 public:
  PrintingSink(bool json, std::ostream& out) : json_(json), out_(out) {}

  void Emit(JobEvent event) override {
    event.set_job_id("local");
    event.set_seq(++seq_);
    *event.mutable_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
    if (event.has_eval_result() && event.eval_result().is_best()) {
      best_accuracy_ = event.eval_result().accuracy();
    }
    if (json_) {
      google::protobuf::util::JsonPrintOptions options;
      options.preserve_proto_field_names = true;
      std::string line;
      (void)google::protobuf::util::MessageToJsonString(event, &line, options);
      out_ << line << std::endl;
      return;
    }
    PrintHuman(event);
  }

  double best_accuracy() const { return best_accuracy_; }

 private:
  void PrintHuman(const JobEvent& event) {
    switch (event.payload_case()) {
      case JobEvent::kDatasetSummary: {
        const auto& d = event.dataset_summary();
        out_ << fmt::format(
            "dataset {} ({} layout, {} split): {} usable of {} files, {} train / {} eval, "
            "{} labels\n",
            d.path(), d.layout(), d.split(), d.usable_files(), d.total_files(), d.train_files(),
            d.eval_files(), d.labels_size());
        break;
      }
      case JobEvent::kTrainProgress: {
        const auto& p = event.train_progress();
        out_ << fmt::format(
            "epoch {} step {}/{} loss {:.4f} lr {:.3g} grad_norm {:.3f}{} {:.1f} samples/s "
            "eta {:.0f}s\n",
            p.epoch(), p.step(), p.total_steps(), p.loss(), p.learning_rate(), p.grad_norm(),
            p.loss_scale() != 1 ? fmt::format(" scale {:.0f} skipped {}", p.loss_scale(),
                                              p.skipped_steps())
                                : "",
            p.samples_per_sec(), p.eta_seconds());
        break;
      }
      case JobEvent::kEvalResult: {
        const auto& r = event.eval_result();
        out_ << fmt::format(
            "eval epoch {} step {}: loss {:.4f} accuracy {:.4f} macro_f1 {:.4f}{} ({} clips, "
            "{:.1f}s)\n  recall [{}]\n",
            r.epoch(), r.step(), r.loss(), r.accuracy(), r.macro_f1(),
            r.is_best() ? " (best)" : "", r.num_samples(), r.seconds(),
            Join(r.per_class_recall(), 3));
        break;
      }
      case JobEvent::kCheckpointSaved: {
        const auto& c = event.checkpoint_saved();
        out_ << fmt::format("checkpoint {}{}\n", c.path(), c.is_best() ? " (best)" : "");
        break;
      }
      case JobEvent::kLog:
        out_ << event.log().message() << "\n";
        break;
      case JobEvent::kStateChanged:
        out_ << fmt::format("state {}\n",
                                 ftune::v1::JobState_Name(event.state_changed().to()));
        break;
      case JobEvent::PAYLOAD_NOT_SET:
        break;
    }
    out_.flush();
  }

  bool json_;
  std::ostream& out_;
  int64_t seq_ = 0;
  double best_accuracy_ = 0;
};

const char* StateName(const train::JobRunResult& result) {
  switch (result.outcome) {
    case ftune::v1::JOB_OUTCOME_SUCCEEDED:
      return "SUCCEEDED";
    case ftune::v1::JOB_OUTCOME_CANCELLED:
      return "CANCELLED";
    default:
      // Locally there is no queue to hand a job back to: a transient error is a failure too.
      return "FAILED";
  }
}

// The devices of `world_size` local ranks: --devices as given, else one CUDA device each when
// the spec allows CUDA and there are enough, else the CPU for all.
absl::StatusOr<std::vector<std::string>> RankDevices(const std::string& devices,
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

// This process's own command line (argv), to start the ranks with.
std::vector<std::string> OwnArguments() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  std::string arg;
  while (std::getline(in, arg, '\0')) args.push_back(arg);
  return args;
}

// Starts the ranks of a --world-size N run and waits for them; the exit status of the run.
int LaunchRanks(const TrainFlags& flags, const ftune::v1::JobSpec& spec) {
  const int world_size = static_cast<int>(spec.world_size());
  absl::StatusOr<std::vector<std::string>> devices =
      RankDevices(flags.devices, spec.device(), world_size);
  if (!devices.ok()) {
    std::cerr << "ftworker train: " << devices.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<std::unique_ptr<train::RendezvousServer>> rendezvous =
      train::RendezvousServer::Start("127.0.0.1");
  if (!rendezvous.ok()) {
    std::cerr << "ftworker train: " << rendezvous.status().message() << "\n";
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
      std::cerr << "ftworker train: cannot start rank " << r << "\n";
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

int Train(const TrainFlags& flags) {
  if (absl::Status s = SetUpLogging(flags.log); !s.ok()) {
    std::cerr << s.message() << "\n";
    return 2;
  }
  absl::StatusOr<ftune::v1::JobSpec> spec = flags.job.Build();
  if (!spec.ok()) {
    std::cerr << "ftworker train: " << spec.status().message() << "\n";
    return 2;
  }
  const int world_size = std::max<int>(1, static_cast<int>(spec->world_size()));
  if (world_size > 1 && flags.rank < 0) return LaunchRanks(flags, *spec);
  if (world_size == 1 && !flags.devices.empty()) {
    std::cerr << "ftworker train: --devices is for --world-size N > 1 (else use --device)\n";
    return 2;
  }
  train::Placement placement{.device = spec->device(), .distributed = {}};
  if (flags.rank >= 0) {
    placement.device = flags.rank_device;
    placement.distributed.rank = flags.rank;
    placement.distributed.world_size = world_size;
    placement.distributed.port = flags.rendezvous_port;
    placement.distributed.rank0_serves_store = false;  // the launcher serves it
  }
  const bool lead = placement.distributed.rank == 0;
  ftune::v1::Job job;
  job.set_id("local");
  *job.mutable_spec() = *spec;

  // Ctrl-C / SIGTERM: stop within one optimizer step, leaving a resumable checkpoint.
  InstallShutdownHandlers();
  train::CancelToken cancel;
  std::thread watcher([&cancel] {
    if (WaitForShutdown() != 0) cancel.Request(train::StopReason::kCancel);
  });

  const auto start = std::chrono::steady_clock::now();
  PrintingSink sink(flags.json, std::cout);
  train::RunnerOptions runner_options;
  flags.caches.Apply(&runner_options);
  if (world_size > 1 && placement.device == "cpu") {
    // Ranks sharing this machine's cores share them out instead of each taking all.
    runner_options.default_threads =
        std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / world_size);
  }
  auto runner = train::MakeFineTuneRunner(runner_options);
  train::JobRunResult result = runner->Run(job, placement, &sink, &cancel);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  RequestShutdown();
  watcher.join();

  const std::string state = StateName(result);
  if (!lead) {  // rank 0 prints the run's summary
    if (!result.error.empty()) std::cerr << "rank " << flags.rank << ": " << result.error << "\n";
  } else if (flags.json) {
    nlohmann::json summary = {
        {"state", state},
        {"best_accuracy", sink.best_accuracy()},
        {"best_checkpoint", result.best_checkpoint},
        {"last_checkpoint", result.last_checkpoint},
        {"best_metric_name", result.best_metric_name},
        {"best_metric", result.best_metric},
        {"seconds", seconds},
    };
    if (!result.error.empty()) summary["error"] = result.error;
    std::cout << summary.dump() << std::endl;
  } else {
    std::cout << fmt::format("{} in {:.1f}s; best accuracy {:.4f}; best checkpoint {}\n", state,
                             seconds, sink.best_accuracy(),
                             result.best_checkpoint.empty() ? "-" : result.best_checkpoint);
    if (!result.error.empty()) std::cerr << "error: " << result.error << "\n";
  }
  if (state == "SUCCEEDED") return 0;
  if (state == "CANCELLED") return 3;
  return 1;
}

}  // namespace

void AddTrainCommand(CLI::App& app, int* exit_code);
FTWORKER_COMMAND("train", AddTrainCommand);

void AddTrainCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<TrainFlags>();
  CLI::App* cmd = app.add_subcommand(
      "train", "Run one fine-tuning job in the foreground (no controller) and print its events");
  flags->job.AddTo(cmd);
  flags->caches.AddTo(cmd);
  cmd->add_flag("--json", flags->json,
                "One JobEvent JSON object per line, then a summary object");
  cmd->add_option("--log-level", flags->log.level, "trace|debug|info|warn|error")
      ->capture_default_str();
  cmd->add_option("--devices", flags->devices,
                  "With --world-size N: the ranks' devices, e.g. cpu,cpu or cuda:0,cuda:1 "
                  "(default: one CUDA device each when there are enough, else cpu)");
  // Set by the launcher on the rank processes it starts.
  cmd->add_option("--rank", flags->rank)->group("");
  cmd->add_option("--rendezvous-port", flags->rendezvous_port)->group("");
  cmd->add_option("--rank-device", flags->rank_device)->group("");
  cmd->callback([flags, exit_code] { *exit_code = Train(*flags); });
}

}  // namespace ftune::worker
