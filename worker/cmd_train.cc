// `ftworker train`: runs one fine-tuning job in the foreground, without a controller, and
// prints its events (human lines, or one JobEvent JSON object per line with --json, then a
// summary object).
//
// With --world-size N it starts N rank processes of itself (worker/local_ranks.h) and prints
// rank 0's events.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "common/job_spec_flags.h"
#include "common/logging.h"
#include "common/shutdown.h"
#include "fmt/format.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "worker/commands.h"
#include "worker/local_ranks.h"
#include "worker/runner_flags.h"
#include "worker/train/job_runner.h"

namespace ftune::worker {
namespace {

using ftune::v1::JobEvent;

struct TrainFlags {
  JobSpecFlags job;
  CacheFlags caches;
  bool json = false;
  LogConfig log{.level = "warn", .file = "", .name = "ftworker"};
  LocalRankFlags ranks;
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
  if (world_size > 1 && flags.ranks.rank < 0) {
    return LaunchLocalRanks(flags.ranks, world_size, spec->device());
  }
  if (world_size == 1 && !flags.ranks.devices.empty()) {
    std::cerr << "ftworker train: --devices is for --world-size N > 1 (else use --device)\n";
    return 2;
  }
  train::Placement placement{.device = spec->device(), .distributed = {}};
  if (flags.ranks.rank >= 0) {
    placement.device = flags.ranks.rank_device;
    placement.distributed = flags.ranks.Distributed(world_size);
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
    runner_options.default_threads = LocalRankThreads(world_size);
  }
  auto runner = train::MakeFineTuneRunner(runner_options);
  train::JobRunResult result = runner->Run(job, placement, &sink, &cancel);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  RequestShutdown();
  watcher.join();

  const std::string state = StateName(result);
  if (!lead) {  // rank 0 prints the run's summary
    if (!result.error.empty()) std::cerr << "rank " << flags.ranks.rank << ": " << result.error << "\n";
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
  flags->ranks.AddTo(cmd);
  cmd->callback([flags, exit_code] { *exit_code = Train(*flags); });
}

}  // namespace ftune::worker
