#include "server/event_log.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace ftune::server {

using ftune::v1::JobEvent;
using ftune::v1::JobState;

bool IsTerminalEvent(const JobEvent& event) {
  if (!event.has_state_changed()) return false;
  const JobState to = event.state_changed().to();
  return to == ftune::v1::JOB_STATE_SUCCEEDED || to == ftune::v1::JOB_STATE_FAILED ||
         to == ftune::v1::JOB_STATE_CANCELLED;
}

Watch::Watch(EventLog* log, JobStore* store, std::string job_id, int64_t after_seq,
             int64_t end_seq, size_t limit, uint64_t published_before,
             std::function<void()> notify)
    : log_(log),
      store_(store),
      job_id_(std::move(job_id)),
      limit_(limit),
      published_before_(published_before),
      notify_(std::move(notify)),
      handed_seq_(after_seq),
      delivered_seq_(after_seq),
      end_seq_(end_seq) {}

Watch::~Watch() { Close(); }

int64_t Watch::delivered_seq() const {
  std::lock_guard<std::mutex> lock(mu_);
  return delivered_seq_;
}

void Watch::Push(const std::vector<Shared>& events) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_ || overflowed_ || !end_status_.ok()) return;
    for (const Shared& event : events) {
      if (event->seq() > handed_seq_) live_.push_back(event);
    }
    if (live_.size() > limit_) {
      // Cut off: free the queue now; the consumer learns it on its next Poll.
      overflowed_ = true;
      live_.clear();
      replay_.clear();
    }
  }
  Notify();
}

void Watch::Notify() {
  std::lock_guard<std::mutex> lock(notify_mu_);
  if (!notify_closed_ && notify_) notify_();
}

Watch::Next Watch::Poll() {
  std::unique_lock<std::mutex> lock(mu_);
  Next next;
  if (closed_) {
    next.kind = Kind::kDone;
    next.status = absl::CancelledError("watch closed");
    return next;
  }
  delivered_seq_ = handed_seq_;
  if (!end_status_.ok()) {
    next.kind = Kind::kDone;
    next.status = absl::Status(
        end_status_.code(),
        absl::StrCat(end_status_.message(), "; resume with after_seq=", delivered_seq_));
    return next;
  }
  if (overflowed_) {
    next.kind = Kind::kDone;
    next.status = absl::AbortedError(
        absl::StrCat("watcher fell behind; resume with after_seq=", delivered_seq_));
    return next;
  }
  if (terminal_handed_ || (end_seq_ > 0 && handed_seq_ >= end_seq_)) {
    next.kind = Kind::kDone;
    next.status = absl::OkStatus();
    return next;
  }
  while (!replay_.empty() && replay_.front().seq() <= handed_seq_) replay_.pop_front();
  if (replay_.empty() && !replayed_) {
    // Only the consumer touches the replay cursor, so the store is read without our lock
    // (publishers keep queueing meanwhile).
    const int64_t from = handed_seq_;
    lock.unlock();
    auto page = store_->ReadEvents(job_id_, from, kReplayPage);
    lock.lock();
    if (!page.ok()) {
      next.kind = Kind::kDone;
      next.status = page.status();
      return next;
    }
    if (overflowed_ || closed_ || !end_status_.ok()) {
      lock.unlock();
      return Poll();
    }
    replayed_ = page->size() < static_cast<size_t>(kReplayPage);
    for (ftune::v1::JobEvent& event : *page) replay_.push_back(std::move(event));
  }
  while (!live_.empty() && live_.front()->seq() <= handed_seq_) live_.pop_front();
  if (!replay_.empty()) {
    next.event = std::move(replay_.front());
    replay_.pop_front();
  } else if (replayed_ && !live_.empty()) {
    next.event = *live_.front();
    live_.pop_front();
  } else {
    return next;  // kWait
  }
  next.kind = Kind::kEvent;
  handed_seq_ = next.event.seq();
  terminal_handed_ = IsTerminalEvent(next.event);
  return next;
}

void Watch::End(absl::Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    end_status_ = std::move(status);
    live_.clear();
    replay_.clear();
  }
  Notify();
}

void Watch::Wake() { log_->ScheduleNotify(this); }

void Watch::Close() {
  {
    std::lock_guard<std::mutex> lock(notify_mu_);
    notify_closed_ = true;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    closed_ = true;
    live_.clear();
    replay_.clear();
  }
  log_->Unsubscribe(job_id_, this);
}

EventLog::EventLog(JobStore* store, Options options)
    : store_(store), options_(options), thread_([this] { FanOutLoop(); }) {}

EventLog::~EventLog() {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  thread_.join();
}

std::shared_ptr<Watch> EventLog::Subscribe(const std::string& job_id, int64_t after_seq,
                                           int64_t end_seq, std::function<void()> notify) {
  uint64_t published;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    published = published_;
  }
  std::shared_ptr<Watch> watch(new Watch(this, store_, job_id, after_seq, end_seq,
                                         options_.watcher_queue_limit, published,
                                         std::move(notify)));
  std::lock_guard<std::mutex> lock(mu_);
  watchers_[job_id].insert(watch.get());
  return watch;
}

void EventLog::Publish(const std::string& job_id, std::vector<JobEvent> events) {
  if (events.empty()) return;
  Batch batch{0, job_id, {}};
  batch.events.reserve(events.size());
  for (JobEvent& event : events) {
    batch.events.push_back(std::make_shared<const JobEvent>(std::move(event)));
  }
  bool overflow = false;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    batch.number = ++published_;
    queued_events_ += batch.events.size();
    queue_.push_back(std::move(batch));
    if (queued_events_ > options_.backlog_limit) {
      // The watchers cannot keep up as a whole: drop the backlog, and end every watch so
      // that each resumes from the store, where all of it is.
      overflow = true;
      queue_.clear();
      queued_events_ = 0;
    }
  }
  if (overflow) {
    EndAll(absl::AbortedError("watchers fell behind the event rate"));
    idle_cv_.notify_all();
  }
  queue_cv_.notify_one();
}

void EventLog::ScheduleNotify(Watch* watch) {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    wakes_.insert(watch);
  }
  queue_cv_.notify_one();
}

void EventLog::FanOutLoop() {
  // Sending to watchers is the work that can wait: ingestion comes first.
  setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 10);
  std::unique_lock<std::mutex> lock(queue_mu_);
  while (true) {
    queue_cv_.wait(lock, [this] { return stopping_ || !queue_.empty() || !wakes_.empty(); });
    if (queue_.empty() && wakes_.empty()) return;  // stopping with nothing left
    if (!queue_.empty() && wakes_.empty()) {
      // Gather for a moment: whatever else arrives goes out in the same writes.
      queue_cv_.wait_for(lock, absl::ToChronoNanoseconds(options_.window), [this] {
        return stopping_ || flushes_waiting_ > 0 || !wakes_.empty();
      });
    }
    std::deque<Batch> gathered;
    gathered.swap(queue_);
    queued_events_ = 0;
    std::set<Watch*> wakes;
    wakes.swap(wakes_);
    fanning_out_ = true;
    lock.unlock();
    // One hand-over per job and watcher, in publish order, of the batches published after
    // the watcher registered.
    std::map<std::string, std::vector<const Batch*>> by_job;
    for (const Batch& batch : gathered) by_job[batch.job_id].push_back(&batch);
    {
      // Under mu_, a watch cannot finish closing, so every pointer here is alive.
      std::lock_guard<std::mutex> watchers_lock(mu_);
      for (const auto& [job_id, batches] : by_job) {
        auto it = watchers_.find(job_id);
        if (it == watchers_.end()) continue;
        for (Watch* watch : it->second) {
          std::vector<Watch::Shared> events;
          for (const Batch* batch : batches) {
            if (batch->number <= watch->published_before_) continue;
            events.insert(events.end(), batch->events.begin(), batch->events.end());
          }
          if (events.empty()) continue;
          wakes.erase(watch);  // Push notifies
          watch->Push(events);
        }
      }
      for (Watch* watch : wakes) {
        auto it = watchers_.find(watch->job_id_);
        if (it != watchers_.end() && it->second.count(watch) != 0) watch->Notify();
      }
    }
    lock.lock();
    fanning_out_ = false;
    if (queue_.empty()) idle_cv_.notify_all();
  }
}

void EventLog::Flush() {
  std::unique_lock<std::mutex> lock(queue_mu_);
  ++flushes_waiting_;
  queue_cv_.notify_all();
  idle_cv_.wait(lock, [this] { return queue_.empty() && !fanning_out_; });
  --flushes_waiting_;
}

void EventLog::Unsubscribe(const std::string& job_id, Watch* watch) {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    wakes_.erase(watch);
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = watchers_.find(job_id);
  if (it == watchers_.end()) return;
  it->second.erase(watch);
  if (it->second.empty()) watchers_.erase(it);
}

void EventLog::EndAll(const absl::Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [job_id, set] : watchers_) {
    for (Watch* watch : set) watch->End(status);
  }
}

size_t EventLog::watcher_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const auto& [id, set] : watchers_) n += set.size();
  return n;
}

}  // namespace ftune::server
