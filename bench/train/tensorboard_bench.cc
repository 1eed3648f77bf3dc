// What TensorBoard writing costs the training thread: the time of EventSink::Emit for a
// train_progress event (what the trainer calls after an optimizer step) without TensorBoard;
// through TensorBoardSink onto a real event file, back to back (every event queued) and paced
// at one per millisecond (faster than any real step); and with the writer stalled (a disk that
// stopped answering: the queue fills, then events are dropped). Prints median, p99 and max in
// microseconds; asserts nothing.
//   train_tensorboard_bench [--events N]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "worker/train/tensorboard.h"

namespace {

using Clock = std::chrono::steady_clock;
using ftune::v1::JobEvent;

class NullSink : public ftune::train::EventSink {
 public:
  void Emit(JobEvent) override {}
};

// A writer whose first Write never returns until released: the stalled disk.
class StalledWriter : public ftune::train::EventWriter {
 public:
  explicit StalledWriter(std::shared_future<void> release) : release_(std::move(release)) {}
  absl::Status Write(const tensorboard::Event&) override {
    release_.wait();
    return absl::OkStatus();
  }
  absl::Status Flush() override { return absl::OkStatus(); }

 private:
  std::shared_future<void> release_;
};

JobEvent Progress(int64_t step) {
  JobEvent event;
  auto* p = event.mutable_train_progress();
  p->set_epoch(1);
  p->set_step(step);
  p->set_total_steps(1000000);
  p->set_loss(1.0 / (1 + step));
  p->set_learning_rate(1e-4);
  p->set_grad_norm(0.7);
  p->set_samples_per_sec(42);
  return event;
}

// Emit latency in microseconds, sorted; `pace` > 0 emits one event per `pace`.
std::vector<double> TimeEmits(ftune::train::EventSink* sink, int events,
                              std::chrono::microseconds pace = std::chrono::microseconds(0)) {
  std::vector<double> us;
  us.reserve(events);
  Clock::time_point next = Clock::now();
  for (int i = 1; i <= events; ++i) {
    if (pace.count() > 0) {
      next += pace;
      std::this_thread::sleep_until(next);
    }
    JobEvent event = Progress(i);
    const Clock::time_point start = Clock::now();
    sink->Emit(std::move(event));
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
  }
  std::sort(us.begin(), us.end());
  return us;
}

void Print(const char* what, const std::vector<double>& us) {
  std::printf("  %-46s median %6.2f us  p99 %7.2f us  max %8.1f us\n", what, us[us.size() / 2],
              us[us.size() * 99 / 100], us.back());
}

}  // namespace

int main(int argc, char** argv) {
  int events = 20000;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--events") == 0) events = std::max(100, std::atoi(argv[i + 1]));
  }
  std::printf("EventSink::Emit of %d train_progress events (5 scalars each):\n", events);
  NullSink null;
  Print("no TensorBoard", TimeEmits(&null, events));

  const std::string dir =
      (std::filesystem::temp_directory_path() / ("ftune-tb-bench-" + std::to_string(getpid())))
          .string();
  struct Run {
    const char* what;
    int events;
    std::chrono::microseconds pace;
  };
  for (const Run& run :
       {Run{"TensorBoardSink, event file, back to back", events, std::chrono::microseconds(0)},
        Run{"TensorBoardSink, event file, one per ms", std::min(events, 3000),
            std::chrono::microseconds(1000)}}) {
    ftune::train::TensorBoardOptions options;
    options.run_dir = dir + "/runs/train";
    options.queue_capacity = static_cast<size_t>(run.events);  // every event is queued
    auto sink = ftune::train::TensorBoardSink::Create(options, &null);
    if (!sink.ok()) {
      std::fprintf(stderr, "%s\n", std::string(sink.status().message()).c_str());
      return 1;
    }
    const Clock::time_point start = Clock::now();
    Print(run.what, TimeEmits(sink->get(), run.events, run.pace));
    const absl::Status closed = (*sink)->Close();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("  (%d events emitted, written and flushed in %.3f s%s; %lld dropped)\n",
                run.events, seconds, closed.ok() ? "" : ", with an error",
                static_cast<long long>((*sink)->dropped()));
  }
  {
    std::promise<void> release;
    ftune::train::TensorBoardSink sink(
        std::make_unique<StalledWriter>(release.get_future().share()), 4096, &null);
    Print("TensorBoardSink, writer stalled", TimeEmits(&sink, events));
    std::printf("  (%lld of %d events dropped while stalled)\n",
                static_cast<long long>(sink.dropped()), events);
    release.set_value();
    (void)sink.Close();
  }
  std::filesystem::remove_all(dir);
  return 0;
}
