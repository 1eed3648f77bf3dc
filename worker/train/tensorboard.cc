#include "worker/train/tensorboard.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "worker/train/tfrecord.h"

namespace ftune::train {
namespace {

namespace fs = std::filesystem;

constexpr char kRunsDir[] = "runs";
constexpr char kDefaultRun[] = "train";
constexpr char kEventFileMarker[] = "tfevents";
constexpr char kFileVersion[] = "brain.Event:2";

double Now() { return absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()); }

std::string HostName() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') return "localhost";
  return host;
}

// Event files of `run_dir`, in name order (the order TensorBoard reads them in).
std::vector<fs::path> EventFiles(const fs::path& run_dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(run_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && absl::StrContains(name, kEventFileMarker) &&
        !absl::StartsWith(name, ".")) {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

absl::Status FsError(const std::string& what, const fs::path& path, const std::error_code& ec) {
  return absl::InternalError(absl::StrCat(what, " ", path.string(), ": ", ec.message()));
}

// Cuts the records past `resume_step` (and a damaged tail) from one event file.
absl::Status TruncateEventFile(const fs::path& file, int64_t resume_step) {
  ASSIGN_OR_RETURN(RecordFile read, ReadRecordFile(file.string()));
  std::string kept;
  bool changed = !read.clean;
  bool has_summary = false;
  for (const std::string& record : read.records) {
    tensorboard::Event event;
    if (!event.ParseFromString(record) || event.step() > resume_step) {
      changed = true;
      continue;
    }
    has_summary |= event.has_summary();
    AppendRecord(record, &kept);
  }
  std::error_code ec;
  if (!has_summary) {
    fs::remove(file, ec);
    if (ec) return FsError("cannot remove", file, ec);
    return absl::OkStatus();
  }
  if (!changed) return absl::OkStatus();
  const fs::path temp = file.parent_path() / absl::StrCat(".", file.filename().string(), ".tmp");
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out.write(kept.data(), static_cast<std::streamsize>(kept.size()));
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", temp.string()));
  }
  fs::rename(temp, file, ec);
  if (ec) return FsError("cannot replace", file, ec);
  return absl::OkStatus();
}

tensorboard::Event Scalar(const std::string& tag, double value, int64_t step, double wall_time) {
  tensorboard::Event event;
  event.set_wall_time(wall_time);
  event.set_step(step);
  tensorboard::Summary::Value* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));
  return event;
}

}  // namespace

std::string TensorBoardRunDir(const std::string& output_dir, const std::string& job_name) {
  std::string run;
  for (char c : job_name) {
    run += absl::ascii_isalnum(c) || c == '.' || c == '-' || c == '_' ? c : '_';
  }
  if (run.empty() || run == "." || run == "..") run = kDefaultRun;
  return (fs::path(output_dir) / kRunsDir / run).string();
}

absl::Status PrepareRunDir(const std::string& run_dir, std::optional<int64_t> resume_step) {
  for (const fs::path& file : EventFiles(run_dir)) {
    if (!resume_step) {
      std::error_code ec;
      fs::remove(file, ec);
      if (ec) return FsError("cannot remove", file, ec);
      continue;
    }
    RETURN_IF_ERROR(TruncateEventFile(file, *resume_step));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<EventFileWriter>> EventFileWriter::Open(
    const std::string& run_dir, std::optional<int64_t> resume_step) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) return FsError("cannot create", run_dir, ec);
  RETURN_IF_ERROR(PrepareRunDir(run_dir, resume_step));
  const double now = Now();
  const std::string base =
      absl::StrCat(run_dir, "/events.out.tfevents.", static_cast<int64_t>(now), ".", HostName());
  // A restart within the same second on the same host must not reuse the file.
  std::string path = base;
  for (int n = 1; fs::exists(path); ++n) path = absl::StrCat(base, ".", n);
  std::FILE* file = std::fopen(path.c_str(), "wbx");
  if (file == nullptr) {
    return absl::InternalError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  }
  std::unique_ptr<EventFileWriter> writer(new EventFileWriter(path, file));
  tensorboard::Event version;
  version.set_wall_time(now);
  version.set_file_version(kFileVersion);
  RETURN_IF_ERROR(writer->Write(version));
  if (resume_step) {
    tensorboard::Event start;
    start.set_wall_time(now);
    start.set_step(*resume_step + 1);
    start.mutable_session_log()->set_status(tensorboard::SessionLog::START);
    RETURN_IF_ERROR(writer->Write(start));
  }
  RETURN_IF_ERROR(writer->Flush());
  return writer;
}

EventFileWriter::~EventFileWriter() { std::fclose(file_); }

absl::Status EventFileWriter::Write(const tensorboard::Event& event) {
  std::string record;
  AppendRecord(event.SerializeAsString(), &record);
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size()) {
    return absl::InternalError(absl::StrCat("cannot write ", path_, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status EventFileWriter::Flush() {
  if (std::fflush(file_) != 0) {
    return absl::InternalError(absl::StrCat("cannot write ", path_, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

std::vector<tensorboard::Event> ScalarEvents(const ftune::v1::JobEvent& event, double wall_time) {
  std::vector<tensorboard::Event> events;
  if (event.has_train_progress()) {
    const ftune::v1::TrainProgress& p = event.train_progress();
    events.push_back(Scalar("train/loss", p.loss(), p.step(), wall_time));
    events.push_back(Scalar("train/learning_rate", p.learning_rate(), p.step(), wall_time));
    events.push_back(Scalar("train/grad_norm", p.grad_norm(), p.step(), wall_time));
    events.push_back(Scalar("train/samples_per_second", p.samples_per_sec(), p.step(), wall_time));
    events.push_back(Scalar("train/epoch", p.epoch_progress(), p.step(), wall_time));
  } else if (event.has_eval_result()) {
    const ftune::v1::EvalResult& r = event.eval_result();
    events.push_back(Scalar("eval/loss", r.loss(), r.step(), wall_time));
    events.push_back(Scalar("eval/accuracy", r.accuracy(), r.step(), wall_time));
    events.push_back(Scalar("eval/macro_f1", r.macro_f1(), r.step(), wall_time));
  }
  return events;
}

tensorboard::Event TextEvent(const std::string& tag, const std::string& markdown, int64_t step,
                             double wall_time) {
  tensorboard::Event event;
  event.set_wall_time(wall_time);
  event.set_step(step);
  tensorboard::Summary::Value* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  v->mutable_metadata()->mutable_plugin_data()->set_plugin_name("text");
  tensorboard::TensorProto* tensor = v->mutable_tensor();
  tensor->set_dtype(tensorboard::DT_STRING);
  tensor->mutable_tensor_shape()->add_dim()->set_size(1);
  tensor->add_string_val(markdown);
  return event;
}

absl::StatusOr<std::unique_ptr<TensorBoardSink>> TensorBoardSink::Create(
    const TensorBoardOptions& options, EventSink* next) {
  ASSIGN_OR_RETURN(std::unique_ptr<EventFileWriter> writer,
                   EventFileWriter::Open(options.run_dir, options.resume_step));
  if (!options.resume_step && !options.hyperparameters_markdown.empty()) {
    RETURN_IF_ERROR(
        writer->Write(TextEvent("hyperparameters", options.hyperparameters_markdown, 0, Now())));
    RETURN_IF_ERROR(writer->Flush());
  }
  return std::make_unique<TensorBoardSink>(std::move(writer), options.queue_capacity, next,
                                           options.may_write);
}

TensorBoardSink::TensorBoardSink(std::unique_ptr<EventWriter> writer, size_t queue_capacity,
                                 EventSink* next, std::function<bool()> may_write)
    : writer_(std::move(writer)),
      capacity_(std::max<size_t>(1, queue_capacity)),
      next_(next),
      may_write_(std::move(may_write)) {
  thread_ = std::thread([this] { WriteLoop(); });
}

TensorBoardSink::~TensorBoardSink() { (void)Close(); }

void TensorBoardSink::Emit(ftune::v1::JobEvent event) {
  std::string warning;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if ((event.has_train_progress() || event.has_eval_result()) && !closing_) {
      if (queue_.size() < capacity_) {
        queue_.push_back({event, Now()});
        // A non-empty queue has woken the writer already; it takes the whole queue.
        if (queue_.size() == 1) wake_.notify_one();
      } else {
        ++dropped_;
      }
    }
    warning = TakeWarningLocked();
  }
  if (!warning.empty()) EmitWarning(warning);
  next_->Emit(std::move(event));
}

std::string TensorBoardSink::TakeWarningLocked() {
  if (!error_.ok() && !reported_error_) {
    reported_error_ = true;
    return absl::StrCat("TensorBoard: ", error_.message(),
                        "; the job goes on without TensorBoard curves");
  }
  if (dropped_ > 0 && !reported_drops_) {
    reported_drops_ = true;
    return absl::StrCat("TensorBoard: the event writer fell ", capacity_,
                        " events behind (a stalled disk?); events are dropped until it catches up");
  }
  return "";
}

void TensorBoardSink::EmitWarning(const std::string& message) {
  ftune::v1::JobEvent event;
  event.mutable_log()->set_level(ftune::v1::LOG_LEVEL_WARNING);
  event.mutable_log()->set_message(message);
  next_->Emit(std::move(event));
}

void TensorBoardSink::WriteLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    wake_.wait(lock, [this] { return closing_ || !queue_.empty(); });
    std::deque<Pending> batch;
    batch.swap(queue_);
    const bool closing = closing_;
    const bool failed = !error_.ok();
    lock.unlock();
    absl::Status status;
    if (!fenced_ && !batch.empty() && may_write_ && !may_write_()) fenced_ = true;
    if (!failed && !fenced_ && !batch.empty()) {
      for (const Pending& pending : batch) {
        for (const tensorboard::Event& e : ScalarEvents(pending.event, pending.wall_time)) {
          if (status.ok()) status = writer_->Write(e);
        }
      }
      if (status.ok()) status = writer_->Flush();
    }
    lock.lock();
    error_.Update(status);
    if (closing && queue_.empty()) return;
  }
}

absl::Status TensorBoardSink::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
  std::string warning;
  absl::Status error;
  {
    std::lock_guard<std::mutex> lock(mu_);
    warning = TakeWarningLocked();
    error = error_;
  }
  if (!warning.empty()) EmitWarning(warning);
  return error;
}

int64_t TensorBoardSink::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

}  // namespace ftune::train
