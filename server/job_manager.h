// The controller's logic, without sockets: the queue, leases, cancellation, worker registry
// and the event stream of every job. State lives in memory; one mutex guards it, and no
// store write happens under it.
//
// Durability (group commit): a change is made in memory under the mutex and queued; the
// caller then waits outside the mutex, and whichever waiting caller finds no commit in flight
// commits everything queued so far in one SQLite transaction. A call
// answers only once what it changed and what it read is durable, so a restarted controller
// rebuilds exactly what it acknowledged; events reach watchers only after they are stored.
// Heartbeats answer from memory without waiting (they write nothing). If a commit fails, the
// memory is ahead of the disk: the manager stops (every later call fails UNAVAILABLE) and a
// restarted controller carries on from the last acknowledged state.
//
// Every state change goes through the table in job_transitions.h. Lease rules
// (docs/controller.md has the long form):
//  - AcquireJob hands the best queued job that fits one of the worker's free devices (and
//    whose backoff is over) to the worker under a new lease_id from the kernel's CSPRNG:
//    QUEUED -> ASSIGNED. The first ReportEvents of the lease moves ASSIGNED -> RUNNING.
//  - Heartbeat renews every lease it names that the worker still holds; verdict OK, CANCEL
//    (CANCELLING: stop and CompleteJob(CANCELLED)) or LOST (not yours any more).
//    ReportEvents and CompleteJob are refused unless they name the current lease and the
//    worker holding it.
//  - A lease not renewed for lease_seconds expires, and CompleteJob(RETRY) reports a
//    transient error: both count against max_restarts — QUEUED with attempt+1 after an
//    exponential backoff while restarts remain, else FAILED; CANCELLING -> CANCELLED.
//  - CompleteJob(REQUEUE) hands a job back (worker shutting down): QUEUED with attempt+1 at
//    once, NOT counted against max_restarts, since nothing went wrong.
//  - After a controller restart every held lease is re-armed to now + lease_seconds.
//
// Gang scheduling (JobSpec.world_size N > 1; docs/controller.md "Data-parallel jobs"):
//  - A gang is leased only when N free devices of one kind are offered at once by the parked
//    AcquireJob calls of online workers, on one worker or several (fewest workers first); all
//    N rank leases are granted in one commit (one JobRecord with RankLease per rank) or none.
//    Rank 0 goes to a worker with a rendezvous port; each rank's AcquireJobResponse carries
//    the rendezvous. A worker given several ranks gets the first in answer to its parked call
//    and the others (pending_ranks_) in answer to its next AcquireJob calls.
//  - Starvation: a gang that cannot be placed, once it has waited gang_reserve_after (default:
//    at once), reserves the kind of device it waits for: jobs behind it in queue order are
//    leased no device of that kind until it is placed. A gang that the online workers could
//    never hold reserves nothing.
//  - Every rank heartbeats its own lease. A rank's lease expiring, or any rank completing with
//    FAILED, RETRY, REQUEUE or CANCELLED, ends the whole gang attempt along the usual
//    transition; the other ranks then hear LOST. Rank 0's SUCCEEDED ends the job; another
//    rank's SUCCEEDED only releases its device. Only rank 0's ReportEvents are stored; other
//    ranks' are answered (verdict, last_seq) and dropped.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "ftune/v1/job_service.pb.h"
#include "ftune/v1/worker.pb.h"
#include "server/event_log.h"
#include "server/job_store.h"
#include "server/job_transitions.h"

namespace ftune::server {

struct JobManagerOptions {
  // A lease expires after this long without a heartbeat naming it.
  absl::Duration lease = absl::Seconds(30);
  // How often workers are told to heartbeat.
  absl::Duration heartbeat = absl::Seconds(10);
  // Longest AcquireJob long-poll (a request asking for more is capped).
  absl::Duration max_acquire_wait = absl::Seconds(60);
  // Live events queued per watcher before it is cut off.
  size_t watcher_queue_limit = 1024;
  // How long fan-out gathers events before handing them to watchers (EventLog::Options).
  absl::Duration watch_batch_window = absl::Milliseconds(50);
  // Wait before a counted restart: retry_backoff, doubling with each restart, at most
  // max_retry_backoff.
  absl::Duration retry_backoff = absl::Seconds(5);
  absl::Duration max_retry_backoff = absl::Minutes(5);
  // Event retention: the train_progress and log events of jobs that ended longer ago than
  // this are dropped by CompactEvents; infinite keeps everything.
  absl::Duration event_retention = absl::InfiniteDuration();
  // A gang (world_size > 1) that cannot be placed reserves devices for itself once it has
  // been queued (past its backoff) this long; zero: at once. See the header comment.
  absl::Duration gang_reserve_after = absl::ZeroDuration();
};

// What the manager has done since it started, for metrics.
struct JobManagerCounters {
  // Jobs created by SubmitJob (a repeated client_request_id creates none).
  uint64_t submitted = 0;
  // One per rank of a data-parallel job.
  uint64_t leases_granted = 0;
  // Leases that ran out without a heartbeat (the worker went silent).
  uint64_t leases_expired = 0;
  // Jobs queued again: after an expired lease, handed back by a worker shutting down, or
  // after an error that may pass on a later attempt.
  uint64_t requeued_after_expiry = 0;
  uint64_t requeued_handed_back = 0;
  uint64_t requeued_after_error = 0;
  // Events stored, by kind (the JobEvent payload field: train_progress, log, ...).
  std::map<std::string, uint64_t> events;
};

struct SubmitResult {
  ftune::v1::Job job;
  // False when client_request_id matched an earlier job, which is returned.
  bool created = false;
};

// Receives the outcome of an AcquireJob exactly once: a leased job (once its lease is
// durable), an empty response when the wait ran out, or an error. Runs on the thread of
// AcquireJob or of whichever call made a job available, possibly with the manager's lock
// held, so it must not block or call the manager.
using AcquireCallback = std::function<void(absl::StatusOr<ftune::v1::AcquireJobResponse>)>;

class JobManager {
 public:
  // Loads jobs and workers from `store` and re-arms held leases. `store` and `clock` must
  // outlive the manager.
  static absl::StatusOr<std::unique_ptr<JobManager>> Create(JobStore* store, Clock* clock,
                                                            JobManagerOptions options);
  // Answers AcquireJob calls still waiting with "no job".
  ~JobManager();

  // --- JobService ---
  absl::StatusOr<SubmitResult> SubmitJob(const ftune::v1::JobSpec& spec);
  absl::StatusOr<ftune::v1::Job> GetJob(const std::string& job_id);
  absl::StatusOr<ftune::v1::ListJobsResponse> ListJobs(
      const ftune::v1::ListJobsRequest& request);
  // QUEUED -> CANCELLED at once; ASSIGNED/RUNNING -> CANCELLING (the worker hears CANCEL);
  // CANCELLING: unchanged; ended jobs: FailedPrecondition.
  absl::StatusOr<ftune::v1::Job> CancelJob(const std::string& job_id, const std::string& reason);
  // Events of `job_id` with seq > after_seq, then live ones; see EventLog::Subscribe.
  absl::StatusOr<std::shared_ptr<Watch>> WatchJob(const std::string& job_id, int64_t after_seq,
                                                  std::function<void()> notify);
  std::vector<ftune::v1::Worker> ListWorkers() const;

  // --- WorkerService ---
  absl::StatusOr<ftune::v1::RegisterWorkerResponse> RegisterWorker(
      const ftune::v1::RegisterWorkerRequest& request);
  // Leases a job now when one fits, else waits up to wait_seconds (capped). Returns an id for
  // CancelAcquire.
  uint64_t AcquireJob(const ftune::v1::AcquireJobRequest& request, AcquireCallback done);
  // Withdraws a waiting AcquireJob (its caller went away). True when it was still waiting;
  // `done` is then never called.
  bool CancelAcquire(uint64_t waiter_id);
  absl::StatusOr<ftune::v1::HeartbeatResponse> Heartbeat(
      const ftune::v1::HeartbeatRequest& request);
  absl::StatusOr<ftune::v1::ReportEventsResponse> ReportEvents(
      const ftune::v1::ReportEventsRequest& request);
  absl::StatusOr<ftune::v1::CompleteJobResponse> CompleteJob(
      const ftune::v1::CompleteJobRequest& request);

  // Expires leases and AcquireJob waits whose time is up and marks silent workers offline.
  // Returns the number of leases expired. The sweeper thread calls it; tests call it after
  // moving a FakeClock.
  int Sweep();

  // Applies event_retention to up to `max_jobs` ended jobs (see JobStore::CompactEvents).
  // Returns the number of events dropped. The controller calls it every minute.
  absl::StatusOr<int64_t> CompactEvents(int max_jobs = 100);

  // Before the server drains: answers parked AcquireJob calls with "no job" and ends every
  // WatchJob stream with UNAVAILABLE (naming the seq to resume after), so nothing holds the
  // drain up.
  void EndLongCalls();

  // Waits until every change made so far is durable and its events have reached the
  // watchers' queues (tests; shutdown).
  void Flush();

  const JobManagerOptions& options() const { return options_; }
  size_t watcher_count() const { return events_.watcher_count(); }
  size_t waiting_acquires() const;
  // Jobs held in memory (live ones, and ended ones until the next sweep after their end is
  // durable).
  size_t jobs_in_memory() const;
  // Changes waiting for the store (not counting a commit in flight).
  size_t queued_writes() const;
  JobManagerCounters counters() const;
  // Every state with its number of jobs (zero included).
  std::map<ftune::v1::JobState, int> JobsByState() const;

 private:
  struct Entry {
    JobRecord record;
    // A one-device job's lease; a gang's are in rank_deadlines, by rank.
    absl::Time lease_deadline = absl::InfiniteFuture();
    std::vector<absl::Time> rank_deadlines;
    // When it last became QUEUED (or was loaded): how long a gang has waited.
    absl::Time queued_since = absl::InfinitePast();
  };
  struct WorkerEntry {
    ftune::v1::Worker worker;
    absl::Time last_heartbeat;
  };
  struct Waiter {
    std::string worker_id;
    std::vector<std::string> free_devices;
    absl::Time deadline;
    AcquireCallback done;
  };
  // What one dispatch pass may hand out on a worker: the free devices its parked AcquireJob
  // calls named, less those a lease holds, in its registered order; and those calls.
  struct Offer {
    const ftune::v1::Worker* worker = nullptr;
    std::vector<std::string> free;
    std::vector<uint64_t> waiters;  // in the order they are answered
  };
  // A granted rank whose worker has not asked for it yet (it was given another rank first).
  struct PendingRank {
    std::string job_id;
    std::string lease_id;
    ftune::v1::AcquireJobResponse response;
  };
  // Queue order: higher priority first, then submission order.
  using QueueKey = std::tuple<int32_t, int64_t, std::string>;  // -priority, queue_seq, id

  JobManager(JobStore* store, Clock* clock, JobManagerOptions options);
  absl::Status Load();

  // --- group commit ---
  // Fails once a commit has failed (the manager has stopped).
  absl::Status StoreHealth();
  // Queues a store write; the next group commit (see WaitDurable) carries it.
  void QueueWriteLocked(JobWrite write);
  void QueueWorkerWriteLocked(const ftune::v1::Worker& worker);
  // Runs `callback` once the changes made so far are durable (or with the store's error).
  void DeferLocked(std::function<void(const absl::Status&)> callback);
  // Releases `lock` and waits until every change queued so far is durable, committing them
  // itself when no other caller is (group commit with a leader). Returns the store's error
  // when that commit failed.
  absl::Status WaitDurable(std::unique_lock<std::mutex>& lock);
  // WaitDurable, then runs the callbacks deferred meanwhile.
  absl::Status Settle(std::unique_lock<std::mutex>& lock);

  static bool HoldsLease(ftune::v1::JobState state);
  static QueueKey KeyOf(const JobRecord& record);
  Entry* FindLocked(const std::string& job_id);
  const Entry* FindLocked(const std::string& job_id) const;
  // Makes `updated` the current state with `events` appended (seq, job_id and time filled in
  // here) and queues both for the store; the events are fanned out once stored.
  void CommitLocked(Entry& entry, JobRecord updated, std::vector<ftune::v1::JobEvent> events);
  // Moves the job along `trigger` (job_transitions.h): state, attempt, counted restarts and
  // their backoff, lease, end time; then commits `updated` (which carries the caller's other
  // changes) with the state change as the first event. FailedPrecondition when the table has
  // no such transition from the job's state.
  absl::Status TransitionLocked(Entry& entry, JobTrigger trigger, std::string reason,
                                JobRecord updated, std::vector<ftune::v1::JobEvent> more = {});
  // Counts a committed transition for metrics.
  void CountTransition(JobTrigger trigger, ftune::v1::JobState to);
  // Applies the job fields an event carries (step, checkpoints, accuracy).
  static void ApplyEventFields(const ftune::v1::JobEvent& event, ftune::v1::Job* job);
  // The rank of `record` whose lease is `lease_id` held by `worker_id` (0 for a one-device
  // job's lease); nullopt when it holds none of them.
  static std::optional<size_t> RankOf(const JobRecord& record, const std::string& lease_id,
                                      const std::string& worker_id);
  // (worker, device) of every lease `record` holds now (none once it holds no lease).
  static std::vector<std::pair<std::string, std::string>> HeldDevices(const JobRecord& record);
  // Devices of `worker_id` held by a lease now.
  std::set<std::string> BusyDevicesLocked(const std::string& worker_id) const;
  // Matches queued jobs to parked AcquireJob calls (`first`, when given, before the others,
  // then oldest first), answering each matched call once the lease is durable (call Settle).
  // Returns the number of calls answered.
  int DispatchLocked(uint64_t first = 0);
  // Leases a one-device job to the first call in `order` with a device that suits it and is
  // of no `reserved` kind. False when none has one.
  bool LeaseOneLocked(Entry& entry, std::vector<uint64_t>& order,
                      std::map<std::string, Offer>& offers, const std::set<std::string>& reserved);
  // Leases a gang when `offers` hold enough devices of one kind not `reserved`; false if not.
  bool LeaseGangLocked(Entry& entry, std::vector<uint64_t>& order,
                       std::map<std::string, Offer>& offers, const std::set<std::string>& reserved);
  // The device kind ("cpu", "cuda") a gang that cannot be placed now waits for: one that the
  // online workers' registered devices could hold it on; "" when none could.
  std::string GangKindLocked(const ftune::v1::Job& job) const;
  // Parked call `waiter_id` leaves waiters_, `order` and `offers` and is answered with
  // `leased` once it is durable.
  void AnswerWaiterLocked(uint64_t waiter_id, std::vector<uint64_t>& order,
                          std::map<std::string, Offer>& offers,
                          ftune::v1::AcquireJobResponse leased);
  // The first rank granted to `worker_id` and not yet handed over whose device is in `free`
  // (stale ones are dropped).
  std::optional<ftune::v1::AcquireJobResponse> TakePendingRankLocked(
      const std::string& worker_id, const std::vector<std::string>& free);
  // Drops ended jobs whose end is durable from memory.
  void ForgetEndedLocked();
  // Answers an AcquireJob with `leased` once the lease is durable (see Settle).
  void AnswerLeasedLocked(AcquireCallback done,
                          absl::StatusOr<ftune::v1::AcquireJobResponse> leased);

  JobStore* const store_;
  Clock* const clock_;
  const JobManagerOptions options_;
  EventLog events_;

  mutable std::mutex mu_;
  // Jobs in memory: every live one, and ended ones until their end is durable (then the
  // store answers for them).
  std::map<std::string, Entry> jobs_;
  std::map<std::string, std::string> by_request_id_;  // of the jobs in memory
  // Jobs that ended, with the ticket of that change, oldest first.
  std::deque<std::pair<uint64_t, std::string>> ended_;
  std::map<ftune::v1::JobState, int64_t> ended_counts_;  // ended jobs no longer in memory
  uint64_t forgotten_ = 0;                              // jobs dropped from memory so far
  std::set<QueueKey> queue_;
  std::set<std::string> leased_;
  std::map<std::string, WorkerEntry> workers_;
  std::map<uint64_t, Waiter> waiters_;
  // By worker id, oldest first.
  std::map<std::string, std::deque<PendingRank>> pending_ranks_;
  uint64_t next_waiter_id_ = 1;
  int64_t next_queue_seq_ = 1;
  JobManagerCounters counters_;
  // Callbacks waiting for the changes queued so far to be durable (see Settle).
  std::vector<std::function<void(const absl::Status&)>> deferred_;

  // Group commit. Tickets number the queued writes; a change is durable once
  // durable_ticket_ reaches its ticket. Whichever waiting caller finds no commit in flight
  // commits everything queued.
  mutable std::mutex write_mu_;
  std::condition_variable durable_cv_;  // durable_ticket_ moved, a commit ended
  StoreBatch queued_;
  uint64_t queued_ticket_ = 0;  // written under mu_ and write_mu_
  uint64_t durable_ticket_ = 0;
  bool committing_ = false;
  absl::Status store_error_;
};

}  // namespace ftune::server
