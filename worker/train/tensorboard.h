// TensorBoard event files for a job (JobSpec.report_to = tensorboard, the default): the
// training curves of the events the trainer already emits, written off the training thread.
//
//   output_dir/runs/<run>/events.out.tfevents.<unix seconds>.<host>
//
// Scalars, with the global step as step: train/loss, train/learning_rate, train/grad_norm,
// train/samples_per_second, train/epoch; eval/loss, eval/accuracy, eval/macro_f1. The job's
// hyperparameters go in once as text (tag "hyperparameters", step 0).
//
// A resumed run continues the same curves without writing a step twice: records past the
// checkpoint it resumes from were written by the interrupted run after that checkpoint, and
// the resumed run writes those steps again, so they are cut from the older files before the new
// file starts (see PrepareRunDir).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ftune/v1/job.pb.h"
#include "tensorboard/event.pb.h"
#include "worker/train/event_sink.h"

namespace ftune::train {

// output_dir/runs/<run>: the job's name with anything but letters, digits, '.', '-' and '_'
// replaced by '_', or "train" when it has none. One name per output folder keeps a resumed
// job's curves in one run; `tensorboard --logdir` over several output folders tells them apart
// by their paths.
std::string TensorBoardRunDir(const std::string& output_dir, const std::string& job_name);

// Makes `run_dir`'s existing event files agree with a run that continues from `resume_step`:
// - nullopt (nothing to resume): they are removed; the run that wrote them left no checkpoint.
// - N: records with a step above N are removed from them (a file left with no summary at all
//   is removed); a damaged tail (a writer killed mid-record) is cut off too.
// Files are rewritten through a temporary file and a rename. Other files are left alone.
absl::Status PrepareRunDir(const std::string& run_dir, std::optional<int64_t> resume_step);

// Where TensorBoardSink's background thread puts events: an event file, or a fake in tests.
class EventWriter {
 public:
  virtual ~EventWriter() = default;
  virtual absl::Status Write(const tensorboard::Event& event) = 0;
  // Makes what was written visible to readers.
  virtual absl::Status Flush() = 0;
};

// A new event file in `run_dir`, after PrepareRunDir(run_dir, resume_step). It starts with the
// file_version record and, when resuming from step N, a SessionLog START at step N + 1 (a
// TensorBoard that already loaded the cut records then drops them too).
class EventFileWriter : public EventWriter {
 public:
  static absl::StatusOr<std::unique_ptr<EventFileWriter>> Open(const std::string& run_dir,
                                                               std::optional<int64_t> resume_step);
  ~EventFileWriter() override;

  absl::Status Write(const tensorboard::Event& event) override;
  absl::Status Flush() override;
  const std::string& path() const { return path_; }

 private:
  EventFileWriter(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  std::string path_;
  std::FILE* file_;
};

// The TensorBoard events a job event carries (none for most kinds), at `wall_time` seconds.
std::vector<tensorboard::Event> ScalarEvents(const ftune::v1::JobEvent& event, double wall_time);
// A text summary (TensorBoard's text plugin renders it as Markdown).
tensorboard::Event TextEvent(const std::string& tag, const std::string& markdown, int64_t step,
                             double wall_time);

struct TensorBoardOptions {
  std::string run_dir;
  // The step of the checkpoint the run continues from; nullopt for a fresh start.
  std::optional<int64_t> resume_step;
  // Written as text at step 0 on a fresh start (a resumed run already has it).
  std::string hyperparameters_markdown;
  // Job events waiting for the writer; beyond it they are dropped, never waited for.
  size_t queue_capacity = 4096;
  // Asked before each write (CancelToken::MayWrite().ok()): once it says no (the worker lost its
  // lease), nothing more is written; the folder belongs to whoever holds the job now.
  std::function<bool()> may_write;
};

// An EventSink decorator: every event goes on to `next` unchanged; training progress and
// evaluations are also queued for a background thread that writes and flushes their scalars,
// so the training thread never waits for the disk. A write error stops the writing and a full
// queue drops events; each is reported once, as a warning log event through `next` on the
// emitting thread, and the job goes on.
class TensorBoardSink : public EventSink {
 public:
  // Opens the event file (EventFileWriter::Open) and writes the hyperparameters.
  static absl::StatusOr<std::unique_ptr<TensorBoardSink>> Create(const TensorBoardOptions& options,
                                                                 EventSink* next);
  TensorBoardSink(std::unique_ptr<EventWriter> writer, size_t queue_capacity, EventSink* next,
                  std::function<bool()> may_write = {});
  ~TensorBoardSink() override;

  void Emit(ftune::v1::JobEvent event) override;

  // Writes everything queued, stops the thread and reports what went wrong (if not yet done);
  // returns the first write error. Later events only go on to `next`.
  absl::Status Close();

  // Events dropped because the queue was full.
  int64_t dropped() const;

 private:
  struct Pending {
    ftune::v1::JobEvent event;
    double wall_time;
  };
  void WriteLoop();
  // The warning for a write error or for dropped events, once each ("" when there is none
  // to give); mu_ held.
  std::string TakeWarningLocked();
  void EmitWarning(const std::string& message);

  std::unique_ptr<EventWriter> writer_;
  const size_t capacity_;
  EventSink* next_;
  const std::function<bool()> may_write_;
  bool fenced_ = false;  // may_write_ said no: written nothing since (writer thread only)

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Pending> queue_;
  bool closing_ = false;
  absl::Status error_;
  int64_t dropped_ = 0;
  bool reported_error_ = false;
  bool reported_drops_ = false;
  std::thread thread_;
};

}  // namespace ftune::train
