// A data-parallel job end to end with real processes: ftcontroller, two `ftworker run`
// daemons (one CPU device each, --threads 1) and ftctl; the tiny model trains as a gang of two
// ranks, one per worker, over c10d (Gloo) with rank 0's TCPStore on loopback.
#include <arpa/inet.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "ftune/v1/job_service.pb.h"
#include "tests/support/process.h"
#include "tests/support/wav.h"

namespace ftune {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::ftune::v1;
using testing::BinaryPath;
using testing::ChildProcess;
using testing::MakeTempDir;
using testing::RunCommand;
using testing::RunResult;

// A 16 kHz mono WAV of a sine tone with a little noise.
void WriteTone(const std::string& path, double hz, double seconds, unsigned seed) {
  const int rate = 16000;
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0, 0.01);
  std::vector<float> samples(static_cast<size_t>(rate * seconds));
  for (size_t i = 0; i < samples.size(); ++i) {
    samples[i] = static_cast<float>(0.4 * std::sin(2 * M_PI * hz * i / rate) + noise(rng));
  }
  std::ofstream(path, std::ios::binary) << testing::EncodeWav(samples, rate);
}

// A loopback TCP port free right now (the kernel's pick), for rank 0's rendezvous.
int FreeTcpPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

template <typename M>
M Parse(const std::string& line) {
  M message;
  auto status = google::protobuf::util::JsonStringToMessage(line, &message);
  EXPECT_TRUE(status.ok()) << status << ": " << line;
  return message;
}

class GangEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = MakeTempDir("gang-e2e");
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
    auto controller =
        ChildProcess::Start({BinaryPath("ftcontroller"), "--listen", "127.0.0.1:0", "--data-dir",
                             tmp_ + "/ctrl", "--lease-seconds", "4", "--heartbeat-seconds", "1",
                             "--drain-seconds", "1", "--retry-backoff-seconds", "1"});
    ASSERT_TRUE(controller.ok()) << controller.status();
    controller_ = std::make_unique<ChildProcess>(*std::move(controller));
    auto address = controller_->WaitForListening(absl::Seconds(60));
    ASSERT_TRUE(address.ok()) << address.status();
    address_ = *address;
  }

  // `ftworker run` with one CPU device; rank 0 of a gang only where `rendezvous_port` > 0.
  std::unique_ptr<ChildProcess> StartWorker(const std::string& id, int rendezvous_port) {
    auto worker = ChildProcess::Start(
        {BinaryPath("ftworker"), "run", "--controller", address_, "--worker-id", id, "--devices",
         "cpu", "--threads", "1", "--allowed-root", tmp_, "--listen", "127.0.0.1:0",
         "--rendezvous-host", "127.0.0.1", "--rendezvous-port", absl::StrCat(rendezvous_port)});
    EXPECT_TRUE(worker.ok()) << worker.status();
    if (!worker.ok()) return nullptr;
    auto child = std::make_unique<ChildProcess>(*std::move(worker));
    EXPECT_TRUE(child->WaitForListening(absl::Seconds(60)).ok());
    return child;
  }

  std::vector<std::string> Ctl(std::vector<std::string> args) {
    std::vector<std::string> argv = {BinaryPath("ftctl"), "--controller", address_};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  RunResult RunCtl(std::vector<std::string> args, absl::Duration timeout = absl::Seconds(60)) {
    auto result = RunCommand(Ctl(std::move(args)), timeout);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : RunResult{};
  }

  std::vector<std::string> SubmitArgs(const std::string& run, int epochs) {
    // Two ranks of batch 2: an effective batch of 4.
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
            "2",
            "--output-dir",
            tmp_ + "/runs/" + run,
            "--threads",
            "1",
            "--log-every-steps",
            "1",
            "--seed",
            "3",
            "--name",
            run,
            "--world-size",
            "2"};
  }

  v1::Job Get(const std::string& id) {
    RunResult got = RunCtl({"get", id, "--json"});
    EXPECT_EQ(got.exit_code, 0) << got.out;
    return Parse<v1::Job>(got.out);
  }

  // Reads `watch`'s JSON lines until `stop(event)`.
  void ReadUntil(ChildProcess* watch, const std::function<bool(const v1::JobEvent&)>& stop) {
    for (;;) {
      auto line = watch->ReadLine(absl::Minutes(5));
      ASSERT_TRUE(line.ok()) << line.status();
      if (stop(Parse<v1::JobEvent>(*line))) return;
    }
  }

  std::string tmp_, data_, address_;
  std::unique_ptr<ChildProcess> controller_;
};

TEST_F(GangEndToEndTest, TwoRanksOnTwoWorkersTrainToSuccess) {
  auto w1 = StartWorker("w1", FreeTcpPort());
  auto w2 = StartWorker("w2", 0);  // never rank 0: w1 is
  ASSERT_TRUE(w1 && w2);
  std::vector<std::string> args = SubmitArgs("gang", 2);
  args.push_back("--watch");
  args.push_back("--json");
  RunResult live = RunCtl(args, absl::Minutes(8));
  ASSERT_EQ(live.exit_code, 0) << live.out;
  std::vector<std::string> lines = absl::StrSplit(live.out, '\n', absl::SkipEmpty());
  ASSERT_GE(lines.size(), 3u);
  const std::string id = Parse<v1::Job>(lines[0]).id();
  bool progress = false, checkpoint = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    const v1::JobEvent event = Parse<v1::JobEvent>(lines[i]);
    progress |= event.has_train_progress();
    checkpoint |= event.has_checkpoint_saved();
  }
  EXPECT_TRUE(progress && checkpoint) << live.out;
  EXPECT_EQ(Parse<v1::JobEvent>(lines.back()).state_changed().to(), v1::JOB_STATE_SUCCEEDED);

  const v1::Job job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.spec().world_size(), 2u);
  EXPECT_EQ(job.worker_id(), "w1");
  ASSERT_EQ(job.workers_size(), 2);
  EXPECT_EQ(job.workers(0).worker_id(), "w1");
  EXPECT_EQ(job.workers(1).worker_id(), "w2");
  EXPECT_TRUE(fs::exists(tmp_ + "/runs/gang/best/model.safetensors"));
  RunResult shown = RunCtl({"get", id});
  EXPECT_TRUE(absl::StrContains(shown.out, "2 ranks")) << shown.out;
  EXPECT_TRUE(absl::StrContains(shown.out, "w1 cpu, w2 cpu")) << shown.out;
}

// Rank 1's worker is killed mid-run: the whole gang attempt ends (rank 0 stops too), the job
// is queued again, and once the worker is back the gang resumes from rank 0's checkpoint and
// runs to the end.
TEST_F(GangEndToEndTest, ALostRankRequeuesTheGangWhichResumesFromRankZerosCheckpoint) {
  auto w1 = StartWorker("w1", FreeTcpPort());
  auto w2 = StartWorker("w2", 0);
  ASSERT_TRUE(w1 && w2);
  std::vector<std::string> args = SubmitArgs("lost", 20);  // 60 steps
  args.insert(args.end(), {"--checkpoint-every-steps", "5", "--eval-every-steps", "1000"});
  RunResult submitted = RunCtl(args);
  ASSERT_EQ(submitted.exit_code, 0) << submitted.out;
  const std::string id(absl::StripAsciiWhitespace(submitted.out));
  auto started = ChildProcess::Start(Ctl({"watch", id, "--json"}));
  ASSERT_TRUE(started.ok()) << started.status();
  ChildProcess watch = *std::move(started);

  int64_t checkpointed = 0;
  ReadUntil(&watch, [&](const v1::JobEvent& e) {
    if (e.has_checkpoint_saved()) checkpointed = e.checkpoint_saved().step();
    return checkpointed >= 5;
  });
  w2->Signal(SIGKILL);
  ASSERT_TRUE(w2->Wait(absl::Seconds(30)).ok());
  // Rank 1's lease expires (or rank 0's collective fails first): either way the gang is
  // queued again with the next attempt.
  std::string reason;
  ReadUntil(&watch, [&](const v1::JobEvent& e) {
    if (e.has_state_changed() && e.state_changed().to() == v1::JOB_STATE_QUEUED) {
      reason = e.state_changed().reason();
      return true;
    }
    return false;
  });
  EXPECT_TRUE(absl::StrContains(reason, "rank")) << reason;
  EXPECT_EQ(Get(id).attempt(), 1u);

  w2 = StartWorker("w2", 0);
  ASSERT_TRUE(w2);
  int64_t first_step = 0;
  ReadUntil(&watch, [&](const v1::JobEvent& e) {
    if (e.has_train_progress()) first_step = e.train_progress().step();
    return first_step > 0;
  });
  EXPECT_GT(first_step, 5) << "the second attempt resumes from checkpoint-5 or later";
  const v1::Job running = Get(id);
  EXPECT_EQ(running.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(running.attempt(), 1u);
  ASSERT_EQ(running.workers_size(), 2);
  EXPECT_EQ(running.workers(1).worker_id(), "w2");

  // The fresh pair finishes the job.
  ASSERT_TRUE(watch.ReadAll(absl::Minutes(5)).ok());
  auto code = watch.Wait(absl::Minutes(2));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
  const v1::Job done = Get(id);
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.step(), 60);
  EXPECT_TRUE(fs::exists(done.last_checkpoint() + "/model.safetensors")) << done.last_checkpoint();
}

}  // namespace
}  // namespace ftune
