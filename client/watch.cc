#include "client/watch.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/output.h"
#include "common/job_spec_flags.h"
#include "common/grpc_status.h"

namespace ftune::ctl {

namespace v1 = ::ftune::v1;

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

namespace {

class JsonPrinter final : public EventPrinter {
 public:
  explicit JsonPrinter(std::ostream& out) : out_(out) {}
  void Print(const v1::JobEvent& event) override { out_ << ToJson(event) << "\n" << std::flush; }
  // Notices would break a JSON-lines consumer; they go nowhere.
  void Notice(const std::string&) override {}
  void Finish() override {}

 private:
  std::ostream& out_;
};

class TextPrinter final : public EventPrinter {
 public:
  TextPrinter(std::ostream& out, bool terminal) : out_(out), terminal_(terminal) {}

  void Print(const v1::JobEvent& event) override {
    switch (event.payload_case()) {
      case v1::JobEvent::kStateChanged:
        Line(StateLine(event.state_changed()));
        break;
      case v1::JobEvent::kDatasetSummary:
        Line(DatasetLine(event.dataset_summary()));
        break;
      case v1::JobEvent::kTrainProgress:
        ProgressLine(event.train_progress());
        break;
      case v1::JobEvent::kEvalResult:
        EvalRows(event.eval_result());
        break;
      case v1::JobEvent::kCheckpointSaved:
        Line(CheckpointLine(event.checkpoint_saved()));
        break;
      case v1::JobEvent::kLog:
        Line(LogLine(event.log()));
        break;
      case v1::JobEvent::PAYLOAD_NOT_SET:
        break;
    }
  }

  void Notice(const std::string& message) override { Line(message); }

  void Finish() override {
    if (live_) out_ << "\n" << std::flush;
    live_ = false;
  }

 private:
  // A whole line; on a terminal the live progress line is kept below it.
  void Line(const std::string& text) {
    if (live_) out_ << "\r\033[K";
    out_ << text << "\n";
    if (live_) out_ << progress_;
    out_ << std::flush;
  }

  void ProgressLine(const v1::TrainProgress& p) {
    const double fraction =
        p.total_steps() > 0 ? std::clamp(static_cast<double>(p.step()) / p.total_steps(), 0.0, 1.0)
                            : 0.0;
    std::string text = absl::StrFormat(
        "epoch %d step %d/%d (%.0f%%) loss %.4f lr %.2e %.1f samples/s elapsed %s eta %s",
        p.epoch(), p.step(), p.total_steps(), fraction * 100, p.loss(), p.learning_rate(),
        p.samples_per_sec(), FormatSeconds(p.elapsed_seconds()), FormatSeconds(p.eta_seconds()));
    if (p.skipped_steps() > 0) absl::StrAppend(&text, " skipped ", p.skipped_steps());
    if (!terminal_) {
      out_ << text << "\n" << std::flush;
      return;
    }
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(std::lround(fraction * kWidth));
    progress_ =
        absl::StrCat("[", std::string(filled, '#'), std::string(kWidth - filled, '.'), "] ", text);
    out_ << "\r\033[K" << progress_ << std::flush;
    live_ = true;
  }

  static std::string StateLine(const v1::StateChanged& s) {
    std::string text =
        s.from() == v1::JOB_STATE_UNSPECIFIED
            ? absl::StrCat("state ", JobStateName(s.to()))
            : absl::StrCat("state ", JobStateName(s.from()), " -> ", JobStateName(s.to()));
    if (!s.worker_id().empty()) absl::StrAppend(&text, " worker ", s.worker_id());
    if (s.attempt() > 0) absl::StrAppend(&text, " attempt ", s.attempt());
    if (!s.reason().empty()) absl::StrAppend(&text, " (", s.reason(), ")");
    return text;
  }

  static std::string DatasetLine(const v1::DatasetSummary& d) {
    std::vector<std::string> classes;
    for (const std::string& label : d.labels()) {
      auto it = d.classes().find(label);
      classes.push_back(absl::StrCat(label, "=", it == d.classes().end() ? 0u : it->second));
    }
    std::string text = absl::StrFormat(
        "dataset %s: %d files (%d usable), layout %s, split %s, train %d / eval %d, %.0fs of "
        "audio (%.1f-%.1fs per clip)",
        d.path(), d.total_files(), d.usable_files(), d.layout(), d.split(), d.train_files(),
        d.eval_files(), d.total_seconds(), d.min_seconds(), d.max_seconds());
    if (!classes.empty()) absl::StrAppend(&text, "\n  classes ", absl::StrJoin(classes, " "));
    if (d.eval_speakers_size() > 0) {
      absl::StrAppend(&text, "\n  eval speakers ", absl::StrJoin(d.eval_speakers(), ","));
    }
    if (d.skipped_size() > 0) {
      absl::StrAppend(&text, "\n  skipped ", d.skipped_size(), " files, e.g. ", d.skipped(0).path(),
                      ": ", d.skipped(0).reason());
    }
    return text;
  }

  void EvalRows(const v1::EvalResult& e) {
    if (!eval_header_) {
      Line(absl::StrFormat("%-6s %8s %9s %9s %9s %8s %s", "EPOCH", "STEP", "LOSS", "ACCURACY",
                           "MACRO-F1", "SECONDS", "BEST"));
      eval_header_ = true;
    }
    Line(absl::StrFormat("%-6d %8d %9.4f %9.4f %9.4f %8.1f %s", e.epoch(), e.step(), e.loss(),
                         e.accuracy(), e.macro_f1(), e.seconds(), e.is_best() ? "*" : ""));
  }

  static std::string CheckpointLine(const v1::CheckpointSaved& c) {
    std::string text =
        absl::StrFormat("checkpoint %s (epoch %d, step %d)", c.path(), c.epoch(), c.step());
    if (c.is_best()) {
      absl::StrAppend(&text,
                      absl::StrFormat(", new best %s %.4f", c.metric_name(), c.metric_value()));
    }
    return text;
  }

  static std::string LogLine(const v1::LogMessage& log) {
    switch (log.level()) {
      case v1::LOG_LEVEL_WARNING:
        return absl::StrCat("warning: ", log.message());
      case v1::LOG_LEVEL_ERROR:
        return absl::StrCat("error: ", log.message());
      case v1::LOG_LEVEL_DEBUG:
        return absl::StrCat("debug: ", log.message());
      default:
        return log.message();
    }
  }

  std::ostream& out_;
  const bool terminal_;
  bool live_ = false;
  std::string progress_;
  bool eval_header_ = false;
};

// Codes after which reopening the stream can help.
bool Resumable(const absl::Status& status) {
  return absl::IsAborted(status) || absl::IsUnavailable(status) ||
         absl::IsDeadlineExceeded(status) || absl::IsCancelled(status) ||
         absl::IsInternal(status) || absl::IsUnknown(status) || absl::IsResourceExhausted(status);
}

}  // namespace

std::unique_ptr<EventPrinter> MakeJsonPrinter(std::ostream& out) {
  return std::make_unique<JsonPrinter>(out);
}

std::unique_ptr<EventPrinter> MakeTextPrinter(std::ostream& out, bool terminal) {
  return std::make_unique<TextPrinter>(out, terminal);
}

absl::StatusOr<WatchResult> WatchJob(v1::JobService::StubInterface* stub, const std::string& job_id,
                                     int64_t after_seq, EventPrinter* printer,
                                     const WatchOptions& options) {
  WatchResult result;
  result.last_seq = after_seq;
  std::mt19937_64 rng(std::random_device{}());
  absl::Duration backoff = options.initial_backoff;
  absl::Time healthy_since = absl::Now();  // last time the stream delivered or opened

  for (bool first = true;; first = false) {
    if (!first) ++result.resumes;
    grpc::ClientContext context;
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    request.set_after_seq(result.last_seq);
    std::unique_ptr<grpc::ClientReaderInterface<v1::JobEvent>> reader =
        stub->WatchJob(&context, request);
    v1::JobEvent event;
    bool delivered = false;
    while (reader->Read(&event)) {
      delivered = true;
      // Replays after a resume can overlap what was printed; print each seq once.
      if (event.seq() != 0 && event.seq() <= result.last_seq) continue;
      if (event.seq() != 0) result.last_seq = event.seq();
      printer->Print(event);
      if (event.has_state_changed() && IsTerminal(event.state_changed().to())) {
        result.state = event.state_changed().to();
        result.reason = event.state_changed().reason();
      }
    }
    const absl::Status status = FromGrpcStatus(reader->Finish());
    if (result.state != v1::JOB_STATE_UNSPECIFIED) {
      printer->Finish();
      return result;
    }
    if (!status.ok() && !Resumable(status)) {
      printer->Finish();
      return status;
    }
    if (status.ok()) {
      // A clean end without a terminal event printed: the job ended before after_seq.
      grpc::ClientContext get_context;
      get_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      v1::GetJobRequest get;
      get.set_job_id(job_id);
      v1::Job job;
      const absl::Status got = FromGrpcStatus(stub->GetJob(&get_context, get, &job));
      if (got.ok() && IsTerminal(job.state())) {
        printer->Finish();
        result.state = job.state();
        result.reason = job.error();
        return result;
      }
      if (!got.ok() && !Resumable(got)) {
        printer->Finish();
        return got;
      }
    }
    // Ended without the terminal state (dropped, or a slow watcher cut off): go on from the
    // last seq printed.
    if (delivered) {
      healthy_since = absl::Now();
      backoff = options.initial_backoff;
    }
    if (absl::Now() - healthy_since > options.give_up_after) {
      printer->Finish();
      return status.ok() ? absl::UnavailableError("the event stream keeps ending early") : status;
    }
    if (!status.ok() && !absl::IsAborted(status)) {
      printer->Notice(absl::StrCat("(stream interrupted: ", status.message(),
                                   "; resuming after seq ", result.last_seq, ")"));
    }
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    // ABORTED means "you fell behind": resume at once; other errors wait a little.
    if (!absl::IsAborted(status)) {
      std::this_thread::sleep_for(absl::ToChronoNanoseconds(backoff * jitter(rng)));
      backoff = std::min(backoff * 2, options.max_backoff);
    }
  }
}

}  // namespace ftune::ctl
