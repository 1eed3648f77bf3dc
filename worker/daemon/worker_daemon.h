// The worker daemon's job loop: registers with the controller, long-polls AcquireJob for its
// free devices, runs each leased job on its own thread (one job per device), renews leases
// by heartbeat and turns the controller's verdicts into cancel requests, and completes each
// job with the runner's outcome. Survives controller restarts (reconnects with backoff and
// registers again). Shutdown() hands running jobs back to the queue.
//
// A lease with a rendezvous is one rank of a data-parallel job: it runs with that rank's
// DistributedOptions (rank 0 serves the c10d store on the port the controller chose), and
// only rank 0's events go to the controller (the other ranks' warnings and errors are logged
// here). Each rank heartbeats and completes its own lease.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ftune/v1/worker.pb.h"
#include "worker/daemon/allowed_roots.h"
#include "worker/daemon/backoff.h"
#include "worker/daemon/event_reporter.h"
#include "worker/daemon/job_observer.h"
#include "worker/daemon/worker_client.h"
#include "worker/train/cancel_token.h"
#include "worker/train/job_runner.h"

namespace ftune::daemon {

struct DaemonConfig {
  // Stable across restarts of the daemon; required.
  std::string worker_id;
  std::string host;
  std::string version;
  // At least one; each runs one job (or one rank of a data-parallel job) at a time.
  std::vector<ftune::v1::Device> devices;
  // Where this worker serves the rendezvous (c10d TCPStore) of a data-parallel job whose rank
  // 0 it runs: rank 0 on devices[i] listens on rendezvous_port + i of rendezvous_host, which
  // the other ranks must reach. Port 0: the controller never makes this worker rank 0.
  std::string rendezvous_host;
  uint32_t rendezvous_port = 0;
  // See AllowedRoots; empty = any path.
  std::vector<std::string> allowed_roots;
  // AcquireJob long-poll bound.
  absl::Duration acquire_wait = absl::Seconds(30);
  // Waits between failed calls to an unreachable controller.
  BackoffPolicy reconnect;
  // Used when the controller does not say.
  absl::Duration heartbeat_interval = absl::Seconds(5);
  EventReporterOptions events;
  // How long a finished job waits for its events to be delivered before CompleteJob.
  absl::Duration flush_timeout = absl::Seconds(30);
  // From Shutdown, how long delivering the stopping jobs' last events and handing them back
  // may take, whatever the controller does; past it the daemon gives up (the controller then
  // requeues the jobs when their leases expire).
  absl::Duration drain_timeout = absl::Seconds(30);
};

class WorkerDaemon {
 public:
  // `client`, `runner` and `observer` (may be null) are not owned and must outlive the
  // daemon.
  static absl::StatusOr<std::unique_ptr<WorkerDaemon>> Create(DaemonConfig config,
                                                              WorkerClient* client,
                                                              train::JobRunner* runner,
                                                              JobObserver* observer = nullptr);
  // Shuts down if still running.
  ~WorkerDaemon();

  WorkerDaemon(const WorkerDaemon&) = delete;
  WorkerDaemon& operator=(const WorkerDaemon&) = delete;

  // Starts the acquire loop and the heartbeat thread.
  void Start();

  // Takes no new jobs, asks running ones to checkpoint and hand back (kHandBack), waits for
  // each to complete (REQUEUE, or its own outcome if it finished first), then returns.
  void Shutdown();

  // Ids of the jobs running now (a job twice when two of its ranks run here).
  std::vector<std::string> RunningJobs() const;

 private:
  struct RunningJob {
    ftune::v1::Job job;
    std::string lease_id;
    std::string device;
    // Set for a rank of a data-parallel job.
    std::optional<ftune::v1::Rendezvous> rendezvous;
    // The lease lapses this long after its last renewal.
    absl::Duration lease = absl::ZeroDuration();
    absl::Time renewed;
    train::CancelToken cancel;
    std::thread thread;
    bool done = false;
  };

  WorkerDaemon(DaemonConfig config, AllowedRoots roots, WorkerClient* client,
               train::JobRunner* runner, JobObserver* observer);

  void AcquireLoop();
  void HeartbeatLoop();
  void RunJob(RunningJob* running);
  // The job's write guard (CancelToken::MayWrite): OK while the lease is surely held, i.e.
  // renewed less than half a lease ago; otherwise (the process was stopped, heartbeats
  // failed) it asks the controller with a heartbeat for this lease and refuses unless the
  // controller renews it.
  absl::Status ConfirmLease(RunningJob* running);
  // Completes the job, retrying transient failures.
  void Complete(RunningJob* running, const train::JobRunResult& result);
  absl::Status Register();
  std::vector<std::string> FreeDevicesLocked() const;
  // Joins the threads of finished jobs and forgets them.
  void ReapLocked(std::vector<std::thread>* finished);
  // Waits up to `d` or until shutdown; true when shutting down.
  bool WaitOrStop(std::unique_lock<std::mutex>& lock, absl::Duration d);

  const DaemonConfig config_;
  const AllowedRoots roots_;
  WorkerClient* const client_;
  train::JobRunner* const runner_;
  JobObserver* const observer_;

  mutable std::mutex mu_;
  std::condition_variable changed_;  // a job finished, shutdown began, registration changed
  bool started_ = false;
  bool stopping_ = false;
  bool stop_heartbeat_ = false;
  bool shut_down_ = false;
  // Set by Shutdown: when talking to the controller stops (drain_timeout).
  absl::Time drain_deadline_ = absl::InfiniteFuture();
  bool registered_ = false;
  absl::Duration heartbeat_interval_;
  // By lease id: one worker may run several ranks of the same job.
  std::map<std::string, std::unique_ptr<RunningJob>> jobs_;
  std::thread acquire_thread_;
  std::thread heartbeat_thread_;
};

}  // namespace ftune::daemon
