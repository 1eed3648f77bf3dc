#include "server/event_log.h"

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
             int64_t last_seq, bool terminal, size_t limit, std::function<void()> notify)
    : log_(log),
      store_(store),
      job_id_(std::move(job_id)),
      limit_(limit),
      notify_(std::move(notify)),
      handed_seq_(after_seq),
      delivered_seq_(after_seq),
      replay_until_(last_seq),
      terminal_at_start_(terminal) {}

Watch::~Watch() { Close(); }

int64_t Watch::delivered_seq() const {
  std::lock_guard<std::mutex> lock(mu_);
  return delivered_seq_;
}

void Watch::Push(const std::vector<JobEvent>& events) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_ || overflowed_ || !end_status_.ok()) return;
    for (const JobEvent& event : events) {
      if (event.seq() <= replay_until_ || event.seq() <= handed_seq_) continue;
      live_.push_back(event);
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
  if (terminal_handed_ || (terminal_at_start_ && handed_seq_ >= replay_until_)) {
    next.kind = Kind::kDone;
    next.status = absl::OkStatus();
    return next;
  }
  if (handed_seq_ < replay_until_ && replay_.empty()) {
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
    if (overflowed_ || closed_) {
      lock.unlock();
      return Poll();
    }
    for (JobEvent& event : *page) {
      if (event.seq() <= replay_until_) replay_.push_back(std::move(event));
    }
    if (replay_.empty()) replay_until_ = handed_seq_;  // the store holds no more
  }
  std::deque<JobEvent>* source = !replay_.empty() ? &replay_ : &live_;
  while (!source->empty() && source->front().seq() <= handed_seq_) source->pop_front();
  if (source->empty()) {
    if (terminal_at_start_ && handed_seq_ >= replay_until_) {
      next.kind = Kind::kDone;
      next.status = absl::OkStatus();
    }
    return next;  // kWait
  }
  next.kind = Kind::kEvent;
  next.event = std::move(source->front());
  source->pop_front();
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

std::shared_ptr<Watch> EventLog::Subscribe(const std::string& job_id, int64_t after_seq,
                                           int64_t last_seq, bool terminal,
                                           std::function<void()> notify) {
  std::shared_ptr<Watch> watch(new Watch(this, store_, job_id, after_seq, last_seq, terminal,
                                         limit_, std::move(notify)));
  std::lock_guard<std::mutex> lock(mu_);
  watchers_[job_id].insert(watch.get());
  return watch;
}

void EventLog::Publish(const std::string& job_id, const std::vector<JobEvent>& events) {
  if (events.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = watchers_.find(job_id);
  if (it == watchers_.end()) return;
  for (Watch* watch : it->second) watch->Push(events);
}

void EventLog::Unsubscribe(const std::string& job_id, Watch* watch) {
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
