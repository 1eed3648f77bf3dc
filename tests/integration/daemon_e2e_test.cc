// The worker daemon and ftctl against real processes on loopback: ftcontroller, ftworker
// with the real trainer (`tiny` preset) on a tiny synthetic tone dataset, and ftctl.
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cmath>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <tuple>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "ftune/v1/job.pb.h"
#include "tests/support/http_client.h"
#include "tests/support/process.h"
#include "tests/support/promtool.h"

namespace ftune::testing {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::ftune::v1;

// Mono 16 kHz 16-bit PCM WAV of a sine at `hz` with a little noise.
void WriteTone(const std::string& path, double hz, double seconds, unsigned seed) {
  const int rate = 16000;
  const int n = static_cast<int>(seconds * rate);
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0, 0.02);
  std::vector<int16_t> pcm(n);
  for (int i = 0; i < n; ++i) {
    const double x = 0.5 * std::sin(2 * M_PI * hz * i / rate) + noise(rng);
    pcm[i] = static_cast<int16_t>(std::lround(std::clamp(x, -1.0, 1.0) * 32767));
  }
  std::ofstream out(path, std::ios::binary);
  auto u32 = [&out](uint32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
  auto u16 = [&out](uint16_t v) { out.write(reinterpret_cast<const char*>(&v), 2); };
  const uint32_t bytes = static_cast<uint32_t>(n * 2);
  out.write("RIFF", 4);
  u32(36 + bytes);
  out.write("WAVEfmt ", 8);
  u32(16);
  u16(1);  // PCM
  u16(1);  // mono
  u32(rate);
  u32(rate * 2);
  u16(2);
  u16(16);
  out.write("data", 4);
  u32(bytes);
  out.write(reinterpret_cast<const char*>(pcm.data()), bytes);
}

v1::JobEvent ParseEvent(const std::string& line) {
  v1::JobEvent event;
  auto status = google::protobuf::util::JsonStringToMessage(line, &event);
  EXPECT_TRUE(status.ok()) << line;
  return event;
}

v1::Job ParseJob(const std::string& line) {
  v1::Job job;
  auto status = google::protobuf::util::JsonStringToMessage(line, &job);
  EXPECT_TRUE(status.ok()) << line;
  return job;
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

class DaemonEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = MakeTempDir("daemon-e2e");
    data_ = tmp_ + "/data";
    // Two classes of tones an octave apart, 6 clips each.
    for (const auto& [label, hz] : {std::pair<const char*, double>{"low", 220},
                                    std::pair<const char*, double>{"high", 880}}) {
      fs::create_directories(data_ + "/" + label);
      for (int i = 0; i < 6; ++i) {
        WriteTone(absl::StrCat(data_, "/", label, "/", i, ".wav"), hz * (1 + 0.02 * i), 0.5,
                  static_cast<unsigned>(hz) + i);
      }
    }
    BeforeController();
    StartController("127.0.0.1:0");
  }

  // Hook for fixtures that need files or flags before the controller starts.
  virtual void BeforeController() {}

  // Starts ftcontroller on `listen` with the test's data folder (kept across restarts).
  void StartController(const std::string& listen) {
    std::vector<std::string> argv = {BinaryPath("ftcontroller"),
                                     "--listen",
                                     listen,
                                     "--data-dir",
                                     tmp_ + "/ctrl",
                                     "--lease-seconds",
                                     absl::StrCat(LeaseSeconds()),
                                     "--heartbeat-seconds",
                                     "1",
                                     "--drain-seconds",
                                     "1",
                                     "--http-listen",
                                     "127.0.0.1:0",
                                     "--retry-backoff-seconds",
                                     "1"};
    argv.insert(argv.end(), controller_flags_.begin(), controller_flags_.end());
    auto controller = ChildProcess::Start(argv);
    ASSERT_TRUE(controller.ok()) << controller.status();
    controller_ = std::make_unique<ChildProcess>(*std::move(controller));
    auto address = controller_->WaitForListening(absl::Seconds(60));
    ASSERT_TRUE(address.ok()) << address.status();
    address_ = *address;
    auto http = controller_->WaitForHttpListening(absl::Seconds(10));
    ASSERT_TRUE(http.ok()) << http.status();
    controller_http_ = *http;
  }

  // GET /metrics of the process serving HTTP on `address`, checked by promtool.
  std::string Metrics(const std::string& address) {
    auto page = HttpGet(address, "/metrics");
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) return "";
    EXPECT_EQ(page->status, 200) << page->body;
    absl::Status lint = PromtoolCheckMetrics(page->body);
    EXPECT_TRUE(lint.ok()) << lint;
    return page->body;
  }

  virtual int LeaseSeconds() const { return 20; }

  // Reads `watch`'s JSON lines until `stop(event)`; checks seqs stay gapless on the way.
  void ReadUntil(ChildProcess* watch, int64_t* last_seq,
                 const std::function<bool(const v1::JobEvent&)>& stop) {
    for (;;) {
      auto line = watch->ReadLine(absl::Minutes(5));
      ASSERT_TRUE(line.ok()) << line.status();
      v1::JobEvent event = ParseEvent(*line);
      EXPECT_EQ(event.seq(), *last_seq + 1) << *line;
      *last_seq = event.seq();
      if (stop(event)) return;
    }
  }

  std::unique_ptr<ChildProcess> StartWorker(const std::string& id) {
    std::vector<std::string> argv = {BinaryPath("ftworker"),
                                     "run",
                                     "--controller",
                                     address_,
                                     "--worker-id",
                                     id,
                                     "--devices",
                                     "cpu",
                                     "--threads",
                                     "1",
                                     "--allowed-root",
                                     tmp_,
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--http-listen",
                                     "127.0.0.1:0"};
    argv.insert(argv.end(), worker_flags_.begin(), worker_flags_.end());
    auto worker = ChildProcess::Start(argv);
    EXPECT_TRUE(worker.ok()) << worker.status();
    if (!worker.ok()) return nullptr;
    auto child = std::make_unique<ChildProcess>(*std::move(worker));
    EXPECT_TRUE(child->WaitForListening(absl::Seconds(60)).ok());
    auto http = child->WaitForHttpListening(absl::Seconds(10));
    EXPECT_TRUE(http.ok()) << http.status();
    if (http.ok()) worker_http_[id] = *http;
    return child;
  }

  std::vector<std::string> Ctl(std::vector<std::string> args) {
    std::vector<std::string> argv = {BinaryPath("ftctl"), "--controller", address_};
    argv.insert(argv.end(), ctl_flags_.begin(), ctl_flags_.end());
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  RunResult RunCtl(std::vector<std::string> args, absl::Duration timeout = absl::Seconds(60)) {
    auto result = RunCommand(Ctl(std::move(args)), timeout);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : RunResult{};
  }

  std::vector<std::string> SubmitArgs(const std::string& run, int epochs) {
    return {"submit",
            "--dataset",
            data_,
            "--layout",
            "folders",
            "--model",
            "tiny",
            "--epochs",
            absl::StrCat(epochs),
            "--batch-size",
            "4",
            "--output-dir",
            tmp_ + "/runs/" + run,
            "--threads",
            "1",
            "--log-every-steps",
            "1",
            "--seed",
            "3",
            "--name",
            run};
  }

  // Submits SubmitArgs(run, epochs) with `extra` flags and follows the job with `ftctl watch
  // --json` in `watch`. The job's id; empty, with a test failure, when either step fails.
  std::string SubmitAndWatch(const std::string& run, int epochs,
                             const std::vector<std::string>& extra,
                             std::unique_ptr<ChildProcess>* watch) {
    std::vector<std::string> args = SubmitArgs(run, epochs);
    args.insert(args.end(), extra.begin(), extra.end());
    RunResult submitted = RunCtl(args);
    EXPECT_EQ(submitted.exit_code, 0) << submitted.out;
    if (submitted.exit_code != 0) return "";
    const std::string id(absl::StripAsciiWhitespace(submitted.out));
    auto started = ChildProcess::Start(Ctl({"watch", id, "--json"}));
    EXPECT_TRUE(started.ok()) << started.status();
    if (!started.ok()) return "";
    *watch = std::make_unique<ChildProcess>(*std::move(started));
    return id;
  }

  v1::Job Get(const std::string& id) {
    RunResult got = RunCtl({"get", id, "--json"});
    EXPECT_EQ(got.exit_code, 0) << got.out;
    return ParseJob(got.out);
  }

  std::string tmp_, data_, address_, controller_http_;
  // The HTTP (/metrics) address of each worker started, by id.
  std::map<std::string, std::string> worker_http_;
  // Extra flags for the controller, every worker and every ftctl call.
  std::vector<std::string> controller_flags_, worker_flags_, ctl_flags_;
  std::unique_ptr<ChildProcess> controller_;
};

TEST_F(DaemonEndToEndTest, SubmitRunsToSuccessAndTheReplayEqualsTheLiveStream) {
  auto worker = StartWorker("worker-a");
  ASSERT_NE(worker, nullptr);
  std::vector<std::string> args = SubmitArgs("ok", 2);
  args.push_back("--watch");
  args.push_back("--json");
  RunResult live = RunCtl(args, absl::Minutes(8));
  ASSERT_EQ(live.exit_code, 0) << live.out;
  std::vector<std::string> lines = Lines(live.out);
  ASSERT_GE(lines.size(), 3u);
  const v1::Job submitted = ParseJob(lines[0]);
  ASSERT_FALSE(submitted.id().empty());
  std::vector<std::string> live_events(lines.begin() + 1, lines.end());

  // Events: gapless seqs from 1, training progress, an evaluation, a checkpoint, success.
  bool progress = false, eval = false, checkpoint = false;
  for (size_t i = 0; i < live_events.size(); ++i) {
    v1::JobEvent event = ParseEvent(live_events[i]);
    EXPECT_EQ(event.seq(), static_cast<int64_t>(i) + 1);
    progress |= event.has_train_progress();
    eval |= event.has_eval_result();
    checkpoint |= event.has_checkpoint_saved();
  }
  EXPECT_TRUE(progress && eval && checkpoint) << live.out;
  EXPECT_EQ(ParseEvent(live_events.back()).state_changed().to(), v1::JOB_STATE_SUCCEEDED);

  RunResult replay = RunCtl({"watch", submitted.id(), "--json"});
  ASSERT_EQ(replay.exit_code, 0) << replay.out;
  // Equal as messages (map fields print in no fixed order).
  std::vector<std::string> replayed = Lines(replay.out);
  ASSERT_EQ(replayed.size(), live_events.size());
  for (size_t i = 0; i < replayed.size(); ++i) {
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(ParseEvent(replayed[i]),
                                                                   ParseEvent(live_events[i])))
        << replayed[i] << "\n"
        << live_events[i];
  }

  const v1::Job job = Get(submitted.id());
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.worker_id(), "worker-a");
  ASSERT_FALSE(job.best_checkpoint().empty());
  EXPECT_TRUE(fs::exists(fs::path(job.best_checkpoint()) / "config.json")) << job.best_checkpoint();

  RunResult list = RunCtl({"list", "--state", "succeeded"});
  EXPECT_EQ(list.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(list.out, submitted.id())) << list.out;
  RunResult workers = RunCtl({"workers"});
  EXPECT_EQ(workers.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(workers.out, "worker-a")) << workers.out;

  // The controller's metrics tell the same story.
  const std::string metrics = Metrics(controller_http_);
  for (const char* line :
       {"ftune_controller_jobs{state=\"succeeded\"} 1\n",
        "ftune_controller_jobs_submitted_total 1\n", "ftune_controller_leases_granted_total 1\n",
        "ftune_controller_workers{state=\"online\"} 1\n"}) {
    EXPECT_TRUE(absl::StrContains(metrics, line)) << line << " missing from\n" << metrics;
  }
  EXPECT_TRUE(absl::StrContains(metrics, "ftune_controller_events_total{kind=\"eval_result\"} "))
      << metrics;

  worker->Signal(SIGTERM);
  auto code = worker->Wait(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

TEST_F(DaemonEndToEndTest, SigtermHandsTheJobBackAndAnotherWorkerResumesIt) {
  auto first = StartWorker("worker-a");
  ASSERT_NE(first, nullptr);
  std::unique_ptr<ChildProcess> watch;
  const std::string id = SubmitAndWatch(
      "handback", 200, {"--checkpoint-every-steps", "1", "--eval-every-steps", "1000"}, &watch);
  ASSERT_FALSE(id.empty());
  // Wait for the first attempt's second complete checkpoint.
  int64_t checkpoint_step = 0;
  while (checkpoint_step < 2) {
    auto line = watch->ReadLine(absl::Minutes(5));
    ASSERT_TRUE(line.ok()) << line.status();
    v1::JobEvent event = ParseEvent(*line);
    if (event.has_checkpoint_saved()) checkpoint_step = event.checkpoint_saved().step();
  }
  // The worker saw those events before it sent them: its metrics have the job.
  const std::string metrics = Metrics(worker_http_["worker-a"]);
  for (const std::string& part :
       {std::string("ftune_worker_running_jobs 1\n"),
        absl::StrCat("ftune_worker_train_loss{job=\"", id, "\"} "),
        absl::StrCat("ftune_worker_step_seconds{job=\"", id, "\"} "),
        absl::StrCat("ftune_worker_train_samples_per_second{job=\"", id, "\"} "),
        std::string("ftune_worker_checkpoint_save_seconds_count "),
        std::string("ftune_worker_device_memory_bytes{device=\"cpu\"} ")}) {
    EXPECT_TRUE(absl::StrContains(metrics, part)) << part << " missing from\n" << metrics;
  }

  first->Signal(SIGTERM);
  auto code = first->Wait(absl::Minutes(2));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
  v1::Job job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.attempt(), 1u);
  ASSERT_FALSE(job.last_checkpoint().empty());

  auto second = StartWorker("worker-b");
  ASSERT_NE(second, nullptr);
  // The second attempt resumes past the handed-back checkpoint instead of starting over.
  bool requeued = false;
  int64_t resumed_step = 0;
  while (resumed_step == 0) {
    auto line = watch->ReadLine(absl::Minutes(5));
    ASSERT_TRUE(line.ok()) << line.status();
    v1::JobEvent event = ParseEvent(*line);
    if (event.has_state_changed() && event.state_changed().to() == v1::JOB_STATE_QUEUED) {
      requeued = true;
      EXPECT_TRUE(absl::StrContains(event.state_changed().reason(), "handed back"))
          << event.state_changed().reason();
    }
    if (requeued && event.has_train_progress()) resumed_step = event.train_progress().step();
  }
  EXPECT_GT(resumed_step, checkpoint_step);
  EXPECT_EQ(Get(id).worker_id(), "worker-b");

  // Cancel the running job: it stops and the watcher exits non-zero.
  RunResult cancel = RunCtl({"cancel", id});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.out;
  auto rest = watch->ReadAll(absl::Minutes(2));
  ASSERT_TRUE(rest.ok()) << rest.status();
  auto watch_code = watch->Wait(absl::Seconds(30));
  ASSERT_TRUE(watch_code.ok());
  EXPECT_EQ(*watch_code, 1);
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_CANCELLED);
}

// SIGTERM ends a worker within its drain deadline whatever its controller does: here the
// controller hangs (SIGSTOP) while the worker is training, so every call to it would wait out
// its deadline and the hand-back could be retried for ever.
TEST_F(DaemonEndToEndTest, SigtermEndsAWorkerWithinItsDrainDeadlineWhenTheControllerHangs) {
  worker_flags_ = {"--drain-seconds", "3"};
  auto worker = StartWorker("worker-a");
  ASSERT_NE(worker, nullptr);
  std::unique_ptr<ChildProcess> watch;
  const std::string id = SubmitAndWatch(
      "hung", 500, {"--eval-every-steps", "1000", "--checkpoint-every-steps", "1000"}, &watch);
  ASSERT_FALSE(id.empty());
  int64_t seq = 0;
  ReadUntil(&*watch, &seq, [](const v1::JobEvent& e) { return e.has_train_progress(); });

  controller_->Signal(SIGSTOP);
  const absl::Time sent = absl::Now();
  worker->Signal(SIGTERM);
  auto code = worker->Wait(absl::Seconds(60));
  const absl::Duration took = absl::Now() - sent;
  controller_->Signal(SIGCONT);
  ASSERT_TRUE(code.ok()) << code.status();
  // 3 s of drain, 2 s of grace, and the hand-back checkpoint of a tiny model.
  EXPECT_LT(took, absl::Seconds(15)) << "exit code " << *code;
}

TEST_F(DaemonEndToEndTest, AJobOutsideTheAllowedRootsFailsNamingThePath) {
  auto worker = StartWorker("worker-a");
  ASSERT_NE(worker, nullptr);
  std::vector<std::string> args = SubmitArgs("escape", 1);
  args[2] = data_ + "/../../";  // --dataset: outside the worker's root
  args.push_back("--watch");
  RunResult result = RunCtl(args, absl::Minutes(2));
  EXPECT_EQ(result.exit_code, 1) << result.out;
  std::vector<std::string> lines = Lines(result.out);
  ASSERT_FALSE(lines.empty());
  const v1::Job job = Get(lines[0]);
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_TRUE(absl::StrContains(job.error(), "dataset.path")) << job.error();
  EXPECT_TRUE(absl::StrContains(job.error(), "allowed roots")) << job.error();
}

TEST_F(DaemonEndToEndTest, CancelAQueuedJobAndUnknownJobs) {
  RunResult submitted = RunCtl(SubmitArgs("queued", 1));
  ASSERT_EQ(submitted.exit_code, 0);
  const std::string id(absl::StripAsciiWhitespace(submitted.out));
  RunResult cancel = RunCtl({"cancel", id, "--json"});
  EXPECT_EQ(cancel.exit_code, 0);
  EXPECT_EQ(ParseJob(cancel.out).state(), v1::JOB_STATE_CANCELLED);
  RunResult watch = RunCtl({"watch", id});
  EXPECT_EQ(watch.exit_code, 1) << watch.out;

  EXPECT_EQ(RunCtl({"get", "no-such-job"}).exit_code, 4);
  EXPECT_EQ(RunCtl({"watch", "no-such-job"}).exit_code, 4);
  EXPECT_EQ(RunCtl({"cancel", "no-such-job"}).exit_code, 4);
}

TEST_F(DaemonEndToEndTest, TheRunningJobCarriesOnAcrossAControllerKillAndRestart) {
  auto worker = StartWorker("worker-a");
  ASSERT_NE(worker, nullptr);
  // One watcher follows the whole story, across the controller's restart.
  std::unique_ptr<ChildProcess> watch;
  const std::string id = SubmitAndWatch(
      "restart", 500, {"--eval-every-steps", "1000", "--checkpoint-every-steps", "5"}, &watch);
  ASSERT_FALSE(id.empty());
  int64_t seq = 0, step_before = 0;
  ReadUntil(&*watch, &seq, [&](const v1::JobEvent& e) {
    if (e.has_train_progress()) step_before = e.train_progress().step();
    return step_before >= 3;
  });

  controller_->Signal(SIGKILL);
  ASSERT_TRUE(controller_->Wait(absl::Seconds(30)).ok());
  // Training goes on without the controller: wait for a checkpoint written after the kill.
  const fs::path runs = tmp_ + "/runs/restart";
  const absl::Time deadline = absl::Now() + absl::Minutes(3);
  for (bool found = false; !found;) {
    ASSERT_LT(absl::Now(), deadline) << "no new checkpoint while the controller was down";
    std::error_code error;
    for (const auto& entry : fs::directory_iterator(runs, error)) {
      int64_t step = 0;
      const std::string name = entry.path().filename().string();
      found |= absl::StartsWith(name, "checkpoint-") && absl::SimpleAtoi(name.substr(11), &step) &&
               step >= step_before + 10;
    }
    if (!found) absl::SleepFor(absl::Milliseconds(20));  // polling the disk, not a sync wait
  }
  StartController(address_);  // same port, same database

  int64_t step_after = 0;
  ReadUntil(&*watch, &seq, [&](const v1::JobEvent& e) {
    EXPECT_FALSE(e.has_state_changed()) << "no requeue: the same run carries on";
    if (e.has_train_progress()) step_after = e.train_progress().step();
    return step_after >= step_before + 20;
  });
  v1::Job job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job.attempt(), 0u);
  EXPECT_EQ(job.worker_id(), "worker-a");

  EXPECT_EQ(RunCtl({"cancel", id}).exit_code, 0);
  ASSERT_TRUE(watch->ReadAll(absl::Minutes(2)).ok());  // drain, or it blocks writing
  auto code = watch->Wait(absl::Minutes(2));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 1);
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_CANCELLED);
}

class ShortLeaseEndToEndTest : public DaemonEndToEndTest {
 protected:
  int LeaseSeconds() const override { return 3; }
};

TEST_F(ShortLeaseEndToEndTest, AKilledWorkersJobIsResumedByAnotherFromItsCheckpoint) {
  auto first = StartWorker("worker-a");
  ASSERT_NE(first, nullptr);
  std::unique_ptr<ChildProcess> watch;
  const std::string id = SubmitAndWatch(
      "killed", 500, {"--eval-every-steps", "1000", "--checkpoint-every-steps", "2"}, &watch);
  ASSERT_FALSE(id.empty());
  int64_t seq = 0, checkpoint_step = 0;
  ReadUntil(&*watch, &seq, [&](const v1::JobEvent& e) {
    if (e.has_checkpoint_saved()) checkpoint_step = e.checkpoint_saved().step();
    return checkpoint_step >= 4;
  });
  first->Signal(SIGKILL);
  ASSERT_TRUE(first->Wait(absl::Seconds(30)).ok());
  auto second = StartWorker("worker-b");
  ASSERT_NE(second, nullptr);

  bool expired = false;
  int64_t resumed_step = 0;
  ReadUntil(&*watch, &seq, [&](const v1::JobEvent& e) {
    if (e.has_checkpoint_saved()) checkpoint_step = e.checkpoint_saved().step();
    if (e.has_state_changed() && e.state_changed().to() == v1::JOB_STATE_QUEUED) {
      expired = true;
      EXPECT_TRUE(absl::StrContains(e.state_changed().reason(), "lease expired"))
          << e.state_changed().reason();
      EXPECT_EQ(e.state_changed().attempt(), 1u);
    }
    if (expired && e.has_train_progress()) resumed_step = e.train_progress().step();
    return resumed_step > 0;
  });
  // Resumed from the newest checkpoint (or a later one), not from step 1.
  EXPECT_GT(resumed_step, checkpoint_step - 2);
  EXPECT_GT(resumed_step, 1);
  v1::Job job = Get(id);
  EXPECT_EQ(job.worker_id(), "worker-b");
  EXPECT_EQ(job.attempt(), 1u);

  EXPECT_EQ(RunCtl({"cancel", id}).exit_code, 0);
  ASSERT_TRUE(watch->ReadAll(absl::Minutes(2)).ok());  // drain, or it blocks writing
  auto code = watch->Wait(absl::Minutes(2));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 1);
}

// Every file under `root` with its size, modification time and inode.
std::map<std::string, std::tuple<uintmax_t, int64_t, uintmax_t>> Snapshot(const fs::path& root) {
  std::map<std::string, std::tuple<uintmax_t, int64_t, uintmax_t>> files;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    struct stat st {};
    if (::lstat(entry.path().c_str(), &st) != 0) continue;
    files[entry.path().string()] = {static_cast<uintmax_t>(st.st_size),
                                    st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec,
                                    static_cast<uintmax_t>(st.st_ino)};
  }
  return files;
}

class FencingEndToEndTest : public DaemonEndToEndTest {
 protected:
  // Long enough that worker-b, stopped for a moment below, keeps its lease.
  int LeaseSeconds() const override { return 6; }
};

// A worker stopped (SIGSTOP) past its lease while another takes the job over: once resumed it
// neither writes in the job's folder nor adds to its event log, and gives the job up.
TEST_F(FencingEndToEndTest, AStoppedWorkerResumedPastItsLeaseWritesAndReportsNothing) {
  const std::string first_log = tmp_ + "/worker-a.log";
  worker_flags_ = {"--log-file", first_log};
  auto first = StartWorker("worker-a");
  worker_flags_.clear();
  ASSERT_NE(first, nullptr);
  std::unique_ptr<ChildProcess> watch;
  const std::string id = SubmitAndWatch(
      "fenced", 500, {"--eval-every-steps", "1000", "--checkpoint-every-steps", "2"}, &watch);
  ASSERT_FALSE(id.empty());
  int64_t seq = 0, checkpoint_step = 0;
  ReadUntil(&*watch, &seq, [&](const v1::JobEvent& e) {
    if (e.has_checkpoint_saved()) checkpoint_step = e.checkpoint_saved().step();
    return checkpoint_step >= 4;
  });

  first->Signal(SIGSTOP);
  auto second = StartWorker("worker-b");
  ASSERT_NE(second, nullptr);
  bool expired = false;
  ReadUntil(&*watch, &seq, [&](const v1::JobEvent& e) {
    expired |= e.has_state_changed() && e.state_changed().to() == v1::JOB_STATE_QUEUED;
    return expired && e.has_checkpoint_saved();  // worker-b has written in the folder
  });
  ASSERT_EQ(Get(id).worker_id(), "worker-b");

  // With worker-b stopped too, the folder and the log could change only through worker-a.
  ASSERT_TRUE(second->Stop(absl::Seconds(10)).ok());
  const fs::path runs = tmp_ + "/runs/fenced";
  const auto before = Snapshot(runs);
  const int64_t last_seq = Get(id).last_event_seq();
  first->Signal(SIGCONT);
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  for (bool gave_up = false; !gave_up;) {
    ASSERT_LT(absl::Now(), deadline) << "worker-a did not give the job up";
    std::ifstream log(first_log);
    const std::string text((std::istreambuf_iterator<char>(log)), {});
    gave_up = absl::StrContains(text, "stopped after losing its lease");
    if (!gave_up) absl::SleepFor(absl::Milliseconds(20));  // polling a file, not a sync wait
  }
  EXPECT_EQ(Snapshot(runs), before) << "worker-a touched the job's folder";
  v1::Job job = Get(id);
  EXPECT_EQ(job.last_event_seq(), last_seq) << "worker-a added to the event log";
  EXPECT_EQ(job.worker_id(), "worker-b");
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);

  // worker-b carries on.
  second->Signal(SIGCONT);
  int64_t step_after = 0;
  ReadUntil(&*watch, &seq, [&](const v1::JobEvent& e) {
    EXPECT_FALSE(e.has_state_changed()) << e.state_changed().reason();
    if (e.has_train_progress()) step_after = e.train_progress().step();
    return step_after > 0;
  });
  EXPECT_EQ(RunCtl({"cancel", id}).exit_code, 0);
  ASSERT_TRUE(watch->ReadAll(absl::Minutes(2)).ok());
  ASSERT_TRUE(watch->Wait(absl::Minutes(2)).ok());
}

class AuthEndToEndTest : public DaemonEndToEndTest {
 protected:
  void BeforeController() override {
    std::ofstream(tmp_ + "/tokens") << "client client-secret\nworker worker-secret\n";
    std::ofstream(tmp_ + "/client.token") << "client-secret\n";
    std::ofstream(tmp_ + "/worker.token") << "worker-secret\n";
    controller_flags_ = {"--tokens", tmp_ + "/tokens"};
    worker_flags_ = {"--token-file", tmp_ + "/worker.token"};
    ctl_flags_ = {"--token-file", tmp_ + "/client.token"};
  }
};

TEST_F(AuthEndToEndTest, TokensLetTheRightPartiesIn) {
  auto worker = StartWorker("worker-a");
  ASSERT_NE(worker, nullptr);
  std::vector<std::string> args = SubmitArgs("auth", 1);
  args.push_back("--watch");
  RunResult run = RunCtl(args, absl::Minutes(5));
  EXPECT_EQ(run.exit_code, 0) << run.out;

  // No token, and a worker's token used as a client's: refused with the auth exit code.
  ctl_flags_.clear();
  EXPECT_EQ(RunCtl({"list"}).exit_code, 5);
  ctl_flags_ = {"--token-file", tmp_ + "/worker.token"};
  EXPECT_EQ(RunCtl({"list"}).exit_code, 5);
}

}  // namespace
}  // namespace ftune::testing
