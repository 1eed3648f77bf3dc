// Fan-out of persisted job events to watchers. Every event reaches the store before it is
// published, so a watcher replays seq <= (newest seq when it subscribed) from the store and
// takes everything newer from its live queue: no gap, no duplicate.
//
// Each watcher has a bounded live queue. A watcher whose queue overflows is cut off (its
// queue is dropped at once) and its stream ends ABORTED with "watcher fell behind; resume
// with after_seq=N", N being the last event it received. Publishing never waits for a
// watcher.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ftune/v1/job.pb.h"
#include "server/job_store.h"

namespace ftune::server {

class EventLog;

// True for the state_changed event that enters SUCCEEDED, FAILED or CANCELLED.
bool IsTerminalEvent(const ftune::v1::JobEvent& event);

// One watcher's position in one job's event stream.
class Watch {
 public:
  enum class Kind {
    kEvent,  // send `event`
    kWait,   // nothing now; notify will be called when there is
    kDone,   // end the stream with `status`
  };
  struct Next {
    Kind kind = Kind::kWait;
    ftune::v1::JobEvent event;
    absl::Status status;
  };

  ~Watch();

  // Called by the consumer whenever it can send (nothing outstanding). Calling it again
  // means the event it returned last was delivered. Never blocks on publishers.
  Next Poll();
  // Unsubscribes; once it returns, notify is not running and will not be called again.
  void Close();

  // Seq of the last event known delivered (resume point).
  int64_t delivered_seq() const;

  // Ends the watch early: the next Poll returns kDone with `status` plus
  // "; resume with after_seq=N".
  void End(absl::Status status);

 private:
  friend class EventLog;
  static constexpr int kReplayPage = 256;

  Watch(EventLog* log, JobStore* store, std::string job_id, int64_t after_seq,
        int64_t last_seq, bool terminal, size_t limit, std::function<void()> notify);
  // Publisher side (EventLog::mu_ held): queue events and wake the consumer.
  void Push(const std::vector<ftune::v1::JobEvent>& events);
  void Notify();

  EventLog* const log_;
  JobStore* const store_;
  const std::string job_id_;
  const size_t limit_;
  const std::function<void()> notify_;

  mutable std::mutex mu_;
  int64_t handed_seq_;     // seq of the last event Poll returned
  int64_t delivered_seq_;  // seq of the last event known delivered
  int64_t replay_until_;   // events up to here come from the store
  const bool terminal_at_start_;
  bool terminal_handed_ = false;
  bool overflowed_ = false;
  bool closed_ = false;
  absl::Status end_status_;
  std::deque<ftune::v1::JobEvent> replay_;
  std::deque<ftune::v1::JobEvent> live_;

  // Held while notify_ runs, so Close can wait it out.
  std::mutex notify_mu_;
  bool notify_closed_ = false;
};

class EventLog {
 public:
  // `store` must outlive the log; `watcher_queue_limit` bounds each watcher's live queue.
  EventLog(JobStore* store, size_t watcher_queue_limit)
      : store_(store), limit_(watcher_queue_limit) {}

  // Starts a watch of `job_id` delivering seq > after_seq. `last_seq` is the job's newest
  // persisted seq and `terminal` whether the job has ended; the caller must hold the lock
  // that also orders Publish, so no event slips between the two. `notify` is called from
  // publishing threads (possibly while the consumer is inside Poll) when Poll may have
  // something new; it must not block.
  std::shared_ptr<Watch> Subscribe(const std::string& job_id, int64_t after_seq,
                                   int64_t last_seq, bool terminal,
                                   std::function<void()> notify);

  // Hands persisted events of one job (ascending seq) to its watchers.
  void Publish(const std::string& job_id, const std::vector<ftune::v1::JobEvent>& events);

  size_t watcher_count() const;

  // Ends every watch with `status` (server shutdown).
  void EndAll(const absl::Status& status);

 private:
  friend class Watch;
  void Unsubscribe(const std::string& job_id, Watch* watch);

  JobStore* const store_;
  const size_t limit_;
  mutable std::mutex mu_;
  std::map<std::string, std::set<Watch*>> watchers_;
};

}  // namespace ftune::server
