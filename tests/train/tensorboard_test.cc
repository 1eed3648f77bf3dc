// TensorBoard event files: the TFRecord framing and its CRC, the sink that writes off the
// training thread (never blocking it, reporting write errors and drops once), resume without
// duplicate steps, and the files read back by an independent parser (read_tfevents.py).
#include "worker/train/tensorboard.h"

#include <filesystem>
#include <fstream>
#include <functional>
#include <atomic>
#include <future>
#include <map>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/process.h"
#include "tests/train/tfevents_reader.h"
#include "worker/train/tfrecord.h"

namespace ftune::train {
namespace {

namespace fs = std::filesystem;
using ftune::v1::JobEvent;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::ReadTensorBoardRun;
using testing::TagSteps;

class RecordingSink : public EventSink {
 public:
  void Emit(JobEvent event) override { events.push_back(std::move(event)); }
  std::vector<JobEvent> events;
};

JobEvent Progress(int64_t step, double loss, double lr = 1e-3) {
  JobEvent event;
  auto* p = event.mutable_train_progress();
  p->set_step(step);
  p->set_loss(loss);
  p->set_learning_rate(lr);
  p->set_grad_norm(0.5 * step);
  p->set_samples_per_sec(100 + step);
  p->set_epoch_progress(step / 10.0);
  return event;
}

JobEvent Eval(int64_t step, double accuracy) {
  JobEvent event;
  auto* r = event.mutable_eval_result();
  r->set_step(step);
  r->set_loss(1 - accuracy);
  r->set_accuracy(accuracy);
  r->set_macro_f1(accuracy / 2);
  return event;
}

JobEvent Log(const std::string& message) {
  JobEvent event;
  event.mutable_log()->set_message(message);
  return event;
}

// ---- Framing ----

TEST(TfRecordTest, Crc32cMatchesTheCastagnoliCheckValue) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(""), 0u);
  const uint32_t crc = Crc32c("abc");
  const uint32_t masked = MaskedCrc32c("abc");
  // Unmasking gives the CRC back.
  const uint32_t rotated = masked - 0xa282ead8u;
  EXPECT_EQ((rotated >> 17) | (rotated << 15), crc);
}

TEST(TfRecordTest, RecordsRoundTripAndDamageIsFoundNotRead) {
  const std::string dir = ftune::testing::MakeTempDir("tfrecord");
  std::string bytes;
  AppendRecord("first", &bytes);
  AppendRecord(std::string("se\0cond", 7), &bytes);
  AppendRecord("", &bytes);
  const std::string path = dir + "/records";
  std::ofstream(path, std::ios::binary) << bytes;
  auto read = ReadRecordFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->clean) << read->problem;
  EXPECT_THAT(read->records, ElementsAre("first", std::string("se\0cond", 7), ""));

  // A writer killed mid-record leaves a torn tail: the whole records before it are kept.
  std::ofstream(path, std::ios::binary) << bytes.substr(0, bytes.size() - 3);
  read = ReadRecordFile(path);
  ASSERT_TRUE(read.ok());
  EXPECT_FALSE(read->clean);
  EXPECT_THAT(read->problem, HasSubstr("torn"));
  EXPECT_EQ(read->records.size(), 2u);

  // A flipped data byte fails its CRC.
  std::string flipped = bytes;
  flipped[12] ^= 0x20;
  std::ofstream(path, std::ios::binary) << flipped;
  read = ReadRecordFile(path);
  ASSERT_TRUE(read.ok());
  EXPECT_FALSE(read->clean);
  EXPECT_THAT(read->problem, HasSubstr("bad data CRC"));
  EXPECT_TRUE(read->records.empty());
  EXPECT_EQ(ReadRecordFile(dir + "/absent").status().code(), absl::StatusCode::kNotFound);
}

// ---- The sink ----

// Records what the background thread writes; Write blocks while `gate` is closed.
class FakeWriter : public EventWriter {
 public:
  absl::Status Write(const tensorboard::Event& event) override {
    gate_.wait();
    std::lock_guard<std::mutex> lock(mu_);
    if (!fail_with_.ok()) return fail_with_;
    events_.push_back(event);
    return absl::OkStatus();
  }
  absl::Status Flush() override {
    std::lock_guard<std::mutex> lock(mu_);
    ++flushes_;
    return absl::OkStatus();
  }
  // Until Open(), Write blocks: a stalled disk.
  void Close() { gate_ = release_.get_future().share(); }
  void Open() { release_.set_value(); }
  void FailWith(absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_with_ = std::move(status);
  }
  std::vector<tensorboard::Event> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  std::promise<void> release_;
  std::shared_future<void> gate_ = [] {
    std::promise<void> open;
    open.set_value();
    return open.get_future().share();
  }();
  std::mutex mu_;
  absl::Status fail_with_;
  std::vector<tensorboard::Event> events_;
  int flushes_ = 0;
};

TEST(TensorBoardSinkTest, ForwardsEveryEventAndWritesTheScalarsOfProgressAndEvals) {
  RecordingSink next;
  auto writer = std::make_unique<FakeWriter>();
  FakeWriter* fake = writer.get();
  TensorBoardSink sink(std::move(writer), 16, &next);
  sink.Emit(Log("hello"));
  sink.Emit(Progress(10, 2.5, 0.0));
  sink.Emit(Eval(10, 0.75));
  ASSERT_TRUE(sink.Close().ok());
  ASSERT_EQ(next.events.size(), 3u);
  EXPECT_EQ(next.events[0].log().message(), "hello");
  EXPECT_EQ(next.events[1].train_progress().loss(), 2.5);
  EXPECT_EQ(next.events[2].eval_result().accuracy(), 0.75);

  std::map<std::string, std::pair<int64_t, float>> written;
  for (const auto& e : fake->events()) {
    ASSERT_EQ(e.summary().value_size(), 1);
    written[e.summary().value(0).tag()] = {e.step(), e.summary().value(0).simple_value()};
    EXPECT_GT(e.wall_time(), 1.6e9);
  }
  EXPECT_EQ(written.size(), 8u);
  EXPECT_EQ(written["train/loss"], std::make_pair(int64_t{10}, 2.5f));
  EXPECT_EQ(written["train/learning_rate"], std::make_pair(int64_t{10}, 0.0f));
  EXPECT_EQ(written["train/grad_norm"], std::make_pair(int64_t{10}, 5.0f));
  EXPECT_EQ(written["train/samples_per_second"], std::make_pair(int64_t{10}, 110.0f));
  EXPECT_EQ(written["train/epoch"], std::make_pair(int64_t{10}, 1.0f));
  EXPECT_EQ(written["eval/loss"], std::make_pair(int64_t{10}, 0.25f));
  EXPECT_EQ(written["eval/accuracy"], std::make_pair(int64_t{10}, 0.75f));
  EXPECT_EQ(written["eval/macro_f1"], std::make_pair(int64_t{10}, 0.375f));
  // After Close, events still go on.
  sink.Emit(Progress(20, 1));
  EXPECT_EQ(next.events.size(), 4u);
}

// The training thread must never wait for the disk: with the writer stuck, Emit returns at
// once; beyond the queue's capacity events are dropped and said once, and after the disk
// recovers everything queued is written.
TEST(TensorBoardSinkTest, EmitNeverWaitsForAStalledWriter) {
  RecordingSink next;
  auto writer = std::make_unique<FakeWriter>();
  FakeWriter* fake = writer.get();
  fake->Close();
  TensorBoardSink sink(std::move(writer), 4, &next);
  // The first event may already be in the writer's hands (blocked in Write), the next four
  // fill the queue, the rest are dropped. None of these calls can block: if one did, the test
  // would hang here (ctest's timeout fails it).
  for (int step = 1; step <= 20; ++step) sink.Emit(Progress(step, 1.0));
  EXPECT_GE(sink.dropped(), 15);
  EXPECT_LE(sink.dropped(), 16);
  int warnings = 0;
  for (const auto& e : next.events) {
    if (e.has_log() && e.log().level() == ftune::v1::LOG_LEVEL_WARNING) {
      ++warnings;
      EXPECT_THAT(e.log().message(), HasSubstr("events are dropped"));
    }
  }
  EXPECT_EQ(warnings, 1);
  EXPECT_EQ(next.events.size(), 21u);  // every event, plus the one warning
  fake->Open();
  ASSERT_TRUE(sink.Close().ok());
  const int64_t kept = 20 - sink.dropped();
  EXPECT_EQ(static_cast<int64_t>(fake->events().size()), kept * 5);  // 5 scalars per progress
}

TEST(TensorBoardSinkTest, AWriteErrorIsReportedOnceAndTrainingGoesOn) {
  RecordingSink next;
  auto writer = std::make_unique<FakeWriter>();
  writer->FailWith(absl::ResourceExhaustedError("disk full"));
  TensorBoardSink sink(std::move(writer), 16, &next);
  sink.Emit(Progress(1, 1.0));
  sink.Emit(Progress(2, 1.0));
  const absl::Status closed = sink.Close();
  EXPECT_EQ(closed.code(), absl::StatusCode::kResourceExhausted);
  int warnings = 0;
  for (const auto& e : next.events) {
    if (e.has_log()) {
      ++warnings;
      EXPECT_THAT(e.log().message(), HasSubstr("disk full"));
      EXPECT_THAT(e.log().message(), HasSubstr("goes on without TensorBoard"));
    }
  }
  EXPECT_EQ(warnings, 1);
  EXPECT_EQ(next.events.size(), 3u);
}

// Fencing: once the write guard says no (the worker lost its lease), nothing more reaches the
// event file, though events still flow on to the next sink.
TEST(TensorBoardSinkTest, NothingIsWrittenOnceTheGuardRefuses) {
  RecordingSink next;
  auto writer = std::make_unique<FakeWriter>();
  FakeWriter* fake = writer.get();
  std::atomic<bool> may_write{true};
  TensorBoardSink sink(std::move(writer), 16, &next, [&] { return may_write.load(); });
  sink.Emit(Progress(1, 1.0));
  // Close waits for the writer, so what it wrote so far is known; a fresh sink continues.
  ASSERT_TRUE(sink.Close().ok());
  ASSERT_EQ(fake->events().size(), 5u);

  auto fenced_writer = std::make_unique<FakeWriter>();
  FakeWriter* fenced = fenced_writer.get();
  may_write = false;
  TensorBoardSink after(std::move(fenced_writer), 16, &next, [&] { return may_write.load(); });
  after.Emit(Progress(2, 1.0));
  after.Emit(Progress(3, 1.0));
  ASSERT_TRUE(after.Close().ok());
  EXPECT_TRUE(fenced->events().empty());
  EXPECT_EQ(next.events.size(), 3u);
}

TEST(TensorBoardTest, RunDirIsNamedAfterTheJobOrTrain) {
  EXPECT_EQ(TensorBoardRunDir("/out", ""), "/out/runs/train");
  EXPECT_EQ(TensorBoardRunDir("/out", "ser 1/x"), "/out/runs/ser_1_x");
  EXPECT_EQ(TensorBoardRunDir("/out", ".."), "/out/runs/train");
  EXPECT_EQ(TensorBoardRunDir("out", "a.b-c_d"), "out/runs/a.b-c_d");
}

// ---- Event files, read back independently ----

// One start of a job's TensorBoard sink on `run_dir`: created (resuming from `resume_step`),
// fed by `feed`, closed.
void WriteRun(const std::string& run_dir, std::optional<int64_t> resume_step,
              const std::function<void(EventSink*)>& feed,
              const std::string& hyperparameters = "    {}") {
  RecordingSink next;
  TensorBoardOptions options;
  options.run_dir = run_dir;
  options.resume_step = resume_step;
  options.hyperparameters_markdown = hyperparameters;
  auto sink = TensorBoardSink::Create(options, &next);
  ASSERT_TRUE(sink.ok()) << sink.status();
  feed(sink->get());
  ASSERT_TRUE((*sink)->Close().ok());
}

TEST(TensorBoardFilesTest, AnIndependentReaderSeesTheCurvesAndTheHyperparameters) {
  const std::string run_dir = TensorBoardRunDir(ftune::testing::MakeTempDir("tb"), "");
  WriteRun(
      run_dir, std::nullopt,
      [](EventSink* sink) {
        for (int step = 1; step <= 4; ++step) sink->Emit(Progress(step, 2.0 / step));
        sink->Emit(Eval(4, 0.5));
      },
      "    {\n      \"model\": \"tiny\"\n    }");

  const nlohmann::json run = ReadTensorBoardRun(run_dir);
  ASSERT_EQ(run["files"].size(), 1u);
  const std::string file = run["files"][0];
  EXPECT_TRUE(absl::StartsWith(file, "events.out.tfevents.")) << file;
  EXPECT_EQ(run["file_versions"], nlohmann::json::array({"brain.Event:2"}));
  EXPECT_THAT(TagSteps(run, "train/loss"), ElementsAre(1, 2, 3, 4));
  EXPECT_FLOAT_EQ(run["scalars"]["train/loss"][1][1].get<float>(), 1.0f);
  EXPECT_THAT(TagSteps(run, "eval/accuracy"), ElementsAre(4));
  EXPECT_FLOAT_EQ(run["scalars"]["eval/accuracy"][0][1].get<float>(), 0.5f);
  for (const char* tag : {"train/learning_rate", "train/grad_norm", "train/samples_per_second",
                          "eval/loss", "eval/macro_f1"}) {
    EXPECT_FALSE(run["scalars"][tag].empty()) << tag;
  }
  ASSERT_EQ(run["texts"]["hyperparameters"].size(), 1u);
  EXPECT_EQ(run["texts"]["hyperparameters"][0][0], 0);
  EXPECT_THAT(run["texts"]["hyperparameters"][0][1].get<std::string>(),
              HasSubstr("\"model\": \"tiny\""));
  EXPECT_TRUE(run["session_logs"].empty());
}

// A run killed after step 7 whose newest checkpoint is step 5 resumes there and logs steps
// 6.. again: afterwards every curve has each step once, from the run that continued.
TEST(TensorBoardFilesTest, AResumedRunContinuesTheCurvesWithoutDuplicateSteps) {
  const std::string run_dir = TensorBoardRunDir(ftune::testing::MakeTempDir("tb-resume"), "ser");
  WriteRun(run_dir, std::nullopt, [](EventSink* sink) {
    for (int step = 1; step <= 7; ++step) sink->Emit(Progress(step, 10.0 + step));
    sink->Emit(Eval(5, 0.25));
  });
  // The killed writer's last record is torn.
  const std::string first_file =
      run_dir + "/" + ReadTensorBoardRun(run_dir)["files"][0].get<std::string>();
  {
    std::ofstream torn(first_file, std::ios::binary | std::ios::app);
    torn << std::string("\x20\x00\x00\x00\x00\x00\x00\x00\x01", 9);
  }
  WriteRun(run_dir, /*resume_step=*/5, [](EventSink* sink) {
    for (int step = 6; step <= 10; ++step) sink->Emit(Progress(step, 20.0 + step));
    sink->Emit(Eval(10, 0.5));
  });

  const nlohmann::json run = ReadTensorBoardRun(run_dir);
  EXPECT_EQ(run["files"].size(), 2u);
  EXPECT_THAT(TagSteps(run, "train/loss"), ElementsAre(1, 2, 3, 4, 5, 6, 7, 8, 9, 10));
  for (const auto& point : run["scalars"]["train/loss"]) {
    const int64_t step = point[0];
    EXPECT_FLOAT_EQ(point[1].get<float>(), step <= 5 ? 10.0f + step : 20.0f + step) << step;
  }
  EXPECT_THAT(TagSteps(run, "eval/accuracy"), ElementsAre(5, 10));
  // Written once, by the first start.
  EXPECT_EQ(run["texts"]["hyperparameters"].size(), 1u);
  // The restart mark TensorBoard uses to drop what it loaded past the checkpoint.
  EXPECT_EQ(run["session_logs"], nlohmann::json::array({nlohmann::json::array({6, 1})}));
}

TEST(TensorBoardFilesTest, AFreshStartRemovesTheEventsOfARunThatLeftNoCheckpoint) {
  const std::string run_dir = TensorBoardRunDir(ftune::testing::MakeTempDir("tb-fresh"), "");
  for (int attempt = 0; attempt < 2; ++attempt) {
    WriteRun(run_dir, std::nullopt, [attempt](EventSink* sink) {
      for (int step = 1; step <= 3; ++step) sink->Emit(Progress(step, attempt));
    });
  }
  std::ofstream(run_dir + "/notes.txt") << "mine";
  const nlohmann::json run = ReadTensorBoardRun(run_dir);
  EXPECT_EQ(run["files"].size(), 1u);
  EXPECT_THAT(TagSteps(run, "train/loss"), ElementsAre(1, 2, 3));
  EXPECT_FLOAT_EQ(run["scalars"]["train/loss"][0][1].get<float>(), 1.0f);
  EXPECT_EQ(run["texts"]["hyperparameters"].size(), 1u);
  // Only event files are touched.
  ASSERT_TRUE(PrepareRunDir(run_dir, std::nullopt).ok());
  EXPECT_TRUE(fs::exists(run_dir + "/notes.txt"));
  EXPECT_EQ(ReadTensorBoardRun(run_dir)["files"].size(), 0u);
}

TEST(TensorBoardFilesTest, CannotCreateTheRunFolderIsAnError) {
  const std::string out = ftune::testing::MakeTempDir("tb-bad");
  std::ofstream(out + "/runs") << "a file where the folder should be";
  RecordingSink next;
  TensorBoardOptions options;
  options.run_dir = TensorBoardRunDir(out, "");
  auto sink = TensorBoardSink::Create(options, &next);
  ASSERT_FALSE(sink.ok());
  EXPECT_THAT(std::string(sink.status().message()), HasSubstr("runs"));
}

}  // namespace
}  // namespace ftune::train
