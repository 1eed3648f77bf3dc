// ftctl watch against an in-process fake JobService whose streams drop mid-way.
#include "client/watch.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <deque>
#include <mutex>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "client/output.h"

namespace ftune::ctl {
namespace {

namespace v1 = ::ftune::v1;

v1::JobEvent Progress(int64_t step) {
  v1::JobEvent event;
  event.mutable_train_progress()->set_epoch(1);
  event.mutable_train_progress()->set_step(step);
  event.mutable_train_progress()->set_total_steps(100);
  event.mutable_train_progress()->set_loss(1.0 / step);
  return event;
}

v1::JobEvent State(v1::JobState from, v1::JobState to, const std::string& reason = "") {
  v1::JobEvent event;
  event.mutable_state_changed()->set_from(from);
  event.mutable_state_changed()->set_to(to);
  event.mutable_state_changed()->set_reason(reason);
  return event;
}

// How one WatchJob call ends: after `events` events (-1 = all of them) with `status`.
struct StreamPlan {
  int events = -1;
  grpc::Status status = grpc::Status::OK;
};

class FakeJobService final : public v1::JobService::Service {
 public:
  void AddEvent(v1::JobEvent event) {
    std::lock_guard<std::mutex> lock(mu_);
    event.set_job_id("job-1");
    event.set_seq(static_cast<int64_t>(events_.size()) + 1);
    events_.push_back(event);
  }
  void Plan(StreamPlan plan) {
    std::lock_guard<std::mutex> lock(mu_);
    plans_.push_back(plan);
  }
  void SetJobState(v1::JobState state) {
    std::lock_guard<std::mutex> lock(mu_);
    state_ = state;
  }
  std::vector<int64_t> after_seqs() {
    std::lock_guard<std::mutex> lock(mu_);
    return after_seqs_;
  }

  grpc::Status WatchJob(grpc::ServerContext*, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    StreamPlan plan;
    std::vector<v1::JobEvent> events;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (request->job_id() != "job-1") {
        return grpc::Status(grpc::StatusCode::NOT_FOUND, "job " + request->job_id());
      }
      after_seqs_.push_back(request->after_seq());
      if (!plans_.empty()) {
        plan = plans_.front();
        plans_.pop_front();
      }
      events = events_;
    }
    int sent = 0;
    for (const v1::JobEvent& event : events) {
      if (event.seq() <= request->after_seq()) continue;
      if (plan.events >= 0 && sent == plan.events) break;
      writer->Write(event);
      ++sent;
    }
    return plan.status;
  }

  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest* request,
                      v1::Job* job) override {
    std::lock_guard<std::mutex> lock(mu_);
    job->set_id(request->job_id());
    job->set_state(state_);
    job->set_error("it broke");
    return grpc::Status::OK;
  }

 private:
  std::mutex mu_;
  std::vector<v1::JobEvent> events_;
  std::deque<StreamPlan> plans_;
  std::vector<int64_t> after_seqs_;
  v1::JobState state_ = v1::JOB_STATE_RUNNING;
};

class RecordingPrinter final : public EventPrinter {
 public:
  void Print(const v1::JobEvent& event) override { seqs.push_back(event.seq()); }
  void Notice(const std::string& message) override { notices.push_back(message); }
  void Finish() override { ++finished; }
  std::vector<int64_t> seqs;
  std::vector<std::string> notices;
  int finished = 0;
};

class WatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    stub_ = v1::JobService::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
    options_.initial_backoff = absl::Milliseconds(1);
    options_.max_backoff = absl::Milliseconds(5);
    options_.give_up_after = absl::Seconds(5);
  }
  void TearDown() override { server_->Shutdown(); }

  // A job that queues, runs 6 progress steps and ends in `end`.
  void Script(v1::JobState end) {
    service_.AddEvent(State(v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_QUEUED, "submitted"));
    service_.AddEvent(State(v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING));
    for (int step = 1; step <= 6; ++step) service_.AddEvent(Progress(step));
    service_.AddEvent(
        State(v1::JOB_STATE_RUNNING, end, end == v1::JOB_STATE_FAILED ? "out of memory" : ""));
  }

  FakeJobService service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::JobService::Stub> stub_;
  WatchOptions options_;
};

TEST_F(WatchTest, FollowsToTheEnd) {
  Script(v1::JOB_STATE_SUCCEEDED);
  RecordingPrinter printer;
  auto result = WatchJob(stub_.get(), "job-1", 0, &printer, options_);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->state, v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(result->last_seq, 9);
  EXPECT_EQ(result->resumes, 0);
  EXPECT_EQ(printer.seqs, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(printer.finished, 1);
}

TEST_F(WatchTest, ResumesFromTheLastSeqAfterDropsAndAborts) {
  Script(v1::JOB_STATE_FAILED);
  service_.Plan({3, grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection reset")});
  service_.Plan({2, grpc::Status(grpc::StatusCode::ABORTED, "too slow; resume after seq 5")});
  service_.Plan({0, grpc::Status(grpc::StatusCode::UNAVAILABLE, "controller restarting")});
  service_.Plan({1, grpc::Status::OK});  // ends early without an error
  RecordingPrinter printer;
  auto result = WatchJob(stub_.get(), "job-1", 0, &printer, options_);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->state, v1::JOB_STATE_FAILED);
  EXPECT_EQ(result->reason, "out of memory");
  EXPECT_EQ(result->resumes, 4);
  // Every event exactly once, in order, across the drops.
  EXPECT_EQ(printer.seqs, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(service_.after_seqs(), (std::vector<int64_t>{0, 3, 5, 5, 6}));
  // The user hears of the interruptions (not of the routine ABORTED resume).
  EXPECT_EQ(printer.notices.size(), 2u);
}

TEST_F(WatchTest, StartsAfterTheGivenSeq) {
  Script(v1::JOB_STATE_CANCELLED);
  RecordingPrinter printer;
  auto result = WatchJob(stub_.get(), "job-1", 7, &printer, options_);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->state, v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(printer.seqs, (std::vector<int64_t>{8, 9}));
}

TEST_F(WatchTest, AJobThatEndedBeforeAfterSeqIsLookedUp) {
  Script(v1::JOB_STATE_FAILED);
  service_.SetJobState(v1::JOB_STATE_FAILED);
  RecordingPrinter printer;
  auto result = WatchJob(stub_.get(), "job-1", 9, &printer, options_);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->state, v1::JOB_STATE_FAILED);
  EXPECT_EQ(result->reason, "it broke");
  EXPECT_TRUE(printer.seqs.empty());
}

TEST_F(WatchTest, UnknownJobIsNotFound) {
  RecordingPrinter printer;
  auto result = WatchJob(stub_.get(), "job-404", 0, &printer, options_);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(WatchTest, GivesUpWhenTheControllerStaysAway) {
  Script(v1::JOB_STATE_SUCCEEDED);
  for (int i = 0; i < 1000; ++i) {
    service_.Plan({0, grpc::Status(grpc::StatusCode::UNAVAILABLE, "down")});
  }
  options_.give_up_after = absl::Milliseconds(50);
  RecordingPrinter printer;
  auto result = WatchJob(stub_.get(), "job-1", 0, &printer, options_);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
}

TEST(WatchPrinterTest, JsonIsOneEventPerLineWithProtoNames) {
  std::ostringstream out;
  auto printer = MakeJsonPrinter(out);
  v1::JobEvent event = Progress(3);
  event.set_seq(4);
  event.set_job_id("job-1");
  printer->Print(event);
  printer->Print(State(v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED));
  std::vector<std::string> lines = absl::StrSplit(out.str(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(absl::StrContains(lines[0], "\"job_id\":\"job-1\"")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], "\"train_progress\"")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], "\"total_steps\"")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[1], "JOB_STATE_SUCCEEDED")) << lines[1];
}

TEST(WatchPrinterTest, PlainTextHasProgressEvalTableAndCheckpoints) {
  std::ostringstream out;
  auto printer = MakeTextPrinter(out, /*terminal=*/false);
  v1::JobEvent progress = Progress(10);
  progress.mutable_train_progress()->set_learning_rate(4e-5);
  progress.mutable_train_progress()->set_samples_per_sec(12.5);
  progress.mutable_train_progress()->set_eta_seconds(125);
  printer->Print(progress);
  v1::JobEvent eval;
  eval.mutable_eval_result()->set_epoch(1);
  eval.mutable_eval_result()->set_step(10);
  eval.mutable_eval_result()->set_accuracy(0.8125);
  eval.mutable_eval_result()->set_macro_f1(0.8);
  eval.mutable_eval_result()->set_is_best(true);
  printer->Print(eval);
  printer->Print(eval);
  v1::JobEvent checkpoint;
  checkpoint.mutable_checkpoint_saved()->set_path("/runs/1/checkpoint-10");
  checkpoint.mutable_checkpoint_saved()->set_step(10);
  printer->Print(checkpoint);
  printer->Finish();
  const std::string text = out.str();
  EXPECT_TRUE(absl::StrContains(text, "epoch 1 step 10/100 (10%)")) << text;
  EXPECT_TRUE(absl::StrContains(text, "lr 4.00e-05")) << text;
  EXPECT_TRUE(absl::StrContains(text, "12.5 samples/s")) << text;
  EXPECT_TRUE(absl::StrContains(text, "eta 2m05s")) << text;
  EXPECT_EQ(text.find("ACCURACY"), text.rfind("ACCURACY")) << "one table header";
  EXPECT_TRUE(absl::StrContains(text, "0.8125")) << text;
  EXPECT_TRUE(absl::StrContains(text, "checkpoint /runs/1/checkpoint-10")) << text;
  EXPECT_FALSE(absl::StrContains(text, "\r")) << "no terminal control codes in plain mode";
}

TEST(WatchPrinterTest, TerminalRedrawsOneLiveProgressLine) {
  std::ostringstream out;
  auto printer = MakeTextPrinter(out, /*terminal=*/true);
  printer->Print(Progress(1));
  printer->Print(Progress(2));
  printer->Print(State(v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED));
  printer->Finish();
  const std::string text = out.str();
  EXPECT_TRUE(absl::StrContains(text, "\r\033[K[")) << "progress bar redrawn in place";
  EXPECT_TRUE(absl::StrContains(text, "state running -> succeeded\n"));
  EXPECT_EQ(text.back(), '\n');
}

TEST(OutputTest, FormatsDurations) {
  EXPECT_EQ(FormatSeconds(12.4), "12s");
  EXPECT_EQ(FormatSeconds(185), "3m05s");
  EXPECT_EQ(FormatSeconds(3725), "1h02m");
  EXPECT_EQ(FormatSeconds(-1), "-");
}

TEST(OutputTest, JobTableColumnsLineUpWithLongIds) {
  v1::Job job;
  job.set_id("job-20261124-015006-3fcb20");
  job.set_state(v1::JOB_STATE_RUNNING);
  job.set_step(3);
  job.set_total_steps(6);
  std::ostringstream out;
  PrintJobTable(out, {job});
  std::vector<std::string> lines = absl::StrSplit(out.str(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].find("STATE"), lines[1].find("running"));
  EXPECT_TRUE(absl::StrContains(lines[1], "3/6"));
}

// A data-parallel job shows its rank count in the table and its gang in `ftctl get`; --json
// carries world_size and workers (protobuf names, as the REST API).
TEST(OutputTest, DataParallelJobsShowTheirRanksAndWorkers) {
  v1::Job job;
  job.set_id("job-1");
  job.set_state(v1::JOB_STATE_RUNNING);
  job.mutable_spec()->set_world_size(2);
  job.set_worker_id("w1");
  auto* rank0 = job.add_workers();
  rank0->set_worker_id("w1");
  rank0->set_device("cpu");
  auto* rank1 = job.add_workers();
  rank1->set_worker_id("w2");
  rank1->set_device("cpu");
  std::ostringstream table;
  PrintJobTable(table, {job});
  std::vector<std::string> lines = absl::StrSplit(table.str(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].find("RANKS") + 5, lines[1].find("2 ranks") + 7) << table.str();
  std::ostringstream detail;
  PrintJob(detail, job);
  EXPECT_TRUE(absl::StrContains(detail.str(), "ranks            2 ranks\n")) << detail.str();
  EXPECT_TRUE(absl::StrContains(detail.str(), "workers          w1 cpu, w2 cpu\n"))
      << detail.str();
  const std::string json = ToJson(job);
  EXPECT_TRUE(absl::StrContains(json, "\"world_size\":2")) << json;
  EXPECT_TRUE(absl::StrContains(
      json, "\"workers\":[{\"worker_id\":\"w1\",\"device\":\"cpu\"},{\"worker_id\":\"w2\""))
      << json;

  // One-device jobs keep the single worker line.
  job.mutable_spec()->set_world_size(1);
  job.clear_workers();
  std::ostringstream single;
  PrintJob(single, job);
  EXPECT_TRUE(absl::StrContains(single.str(), "worker           w1\n")) << single.str();
  EXPECT_FALSE(absl::StrContains(single.str(), "ranks")) << single.str();
}

}  // namespace
}  // namespace ftune::ctl
