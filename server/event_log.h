// Fan-out of persisted job events to watchers. Events reach the store before they are
// published, and publishing runs on the log's own thread, so neither the store nor the
// watchers hold up whoever reported the events. The thread gathers what is published within
// a short window (50 ms by default) and hands each watcher all of it at once, so a stream
// sends many events per flush instead of one: with a hundred watchers, per-message
// syscalls and wake-ups would otherwise take the CPU that ingestion needs.
//
// A watch needs no snapshot: it registers, then replays from the store until a read comes
// back short, and takes everything newer from its live queue. Every event published before
// it registered is already in the store, so only later ones are queued for it; those its
// replay also finds are skipped by seq. It
// hands events out by ascending seq without duplicates; a gap (events removed by retention)
// is skipped.
//
// Each watcher has a bounded live queue. A watcher whose queue overflows is cut off (its
// queue is dropped at once) and its stream ends ABORTED with "watcher fell behind; resume
// with after_seq=N", N being the last event it received. Publishing never waits for a
// watcher.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
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

  // Asks for notify to be called from the fan-out thread (the consumer can send again).
  // Consumers call this instead of polling on their own completion threads, so the work
  // of sending to watchers stays on one low-priority thread and yields to ingestion.
  void Wake();

 private:
  friend class EventLog;
  using Shared = std::shared_ptr<const ftune::v1::JobEvent>;
  static constexpr int kReplayPage = 256;

  Watch(EventLog* log, JobStore* store, std::string job_id, int64_t after_seq, int64_t end_seq,
        size_t limit, uint64_t published_before, std::function<void()> notify);
  // Publisher side: queue events and wake the consumer.
  void Push(const std::vector<Shared>& events);
  void Notify();

  EventLog* const log_;
  JobStore* const store_;
  const std::string job_id_;
  const size_t limit_;
  // Batches numbered up to this were published before the watch registered: its replay
  // finds them in the store.
  const uint64_t published_before_;
  const std::function<void()> notify_;

  mutable std::mutex mu_;
  int64_t handed_seq_;     // seq of the last event Poll returned
  int64_t delivered_seq_;  // seq of the last event known delivered
  // Seq of the job's terminal event when it had ended at subscription (0: not ended).
  const int64_t end_seq_;
  bool replayed_ = false;  // a store read came back short: the store has nothing older left
  bool terminal_handed_ = false;
  bool overflowed_ = false;
  bool closed_ = false;
  absl::Status end_status_;
  std::deque<ftune::v1::JobEvent> replay_;
  std::deque<Shared> live_;

  // Held while notify_ runs, so Close can wait it out.
  std::mutex notify_mu_;
  bool notify_closed_ = false;
};

class EventLog {
 public:
  struct Options {
    // Bounds each watcher's live queue.
    size_t watcher_queue_limit = 1024;
    // Bounds the events waiting to be fanned out; past it every watcher is cut off and
    // resumes from the store.
    size_t backlog_limit = 1 << 16;
    // How long the fan-out thread gathers events before handing them out.
    absl::Duration window = absl::Milliseconds(50);
  };
  // `store` must outlive the log.
  EventLog(JobStore* store, Options options);
  // Fans out what is queued, then stops the thread.
  ~EventLog();

  // Starts a watch of `job_id` delivering seq > after_seq. `end_seq` is the seq of the job's
  // terminal event when it has ended (0 otherwise). `notify` is called from the fan-out
  // thread (possibly while the consumer is inside Poll) when Poll may have something new;
  // it must not block.
  std::shared_ptr<Watch> Subscribe(const std::string& job_id, int64_t after_seq,
                                   int64_t end_seq, std::function<void()> notify);

  // Queues persisted events of one job (ascending seq) for its watchers; returns at once.
  void Publish(const std::string& job_id, std::vector<ftune::v1::JobEvent> events);

  // Waits until everything published so far has reached the watchers' queues (cutting the
  // gathering window short).
  void Flush();

  size_t watcher_count() const;

  // Ends every watch with `status` (server shutdown).
  void EndAll(const absl::Status& status);

 private:
  friend class Watch;
  struct Batch {
    uint64_t number;  // publish order
    std::string job_id;
    std::vector<Watch::Shared> events;
  };
  void FanOutLoop();
  void Unsubscribe(const std::string& job_id, Watch* watch);
  void ScheduleNotify(Watch* watch);

  JobStore* const store_;
  const Options options_;

  mutable std::mutex mu_;  // watchers_
  std::map<std::string, std::set<Watch*>> watchers_;

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;  // fan-out thread: work or stop
  std::condition_variable idle_cv_;   // Flush: queue drained
  std::deque<Batch> queue_;
  std::set<Watch*> wakes_;  // watches whose consumer asked to be notified
  size_t queued_events_ = 0;
  uint64_t published_ = 0;  // number of the last batch published
  bool fanning_out_ = false;
  int flushes_waiting_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace ftune::server
