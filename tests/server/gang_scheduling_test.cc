// Gang scheduling of data-parallel jobs (JobSpec.world_size > 1) in the JobManager, on the
// in-memory store (SQLite for the restart) with a fake clock: all-or-nothing leases across
// workers, the rendezvous each rank is told, packing, the starvation policy, a rank's fault
// ending the whole gang attempt, and recovery after a controller restart.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "server/job_manager.h"
#include "server/sqlite_job_store.h"
#include "tests/server/test_util.h"
#include "tests/support/process.h"

namespace ftune::server {
namespace {

using ftune::v1::AcquireJobResponse;
using ftune::v1::JobOutcome;
using ftune::v1::JobState;
using ftune::v1::LeaseVerdict;
using testing::ValidSpec;

// An AcquireJob call as a worker makes it: answered at once, later, or never.
struct Call {
  int answers = 0;
  absl::StatusOr<AcquireJobResponse> result = absl::UnknownError("not answered");
  bool leased() const { return answers == 1 && result.ok() && result->has_job(); }
};

// A rank as its worker holds it.
struct Rank {
  std::string worker;
  AcquireJobResponse lease;
};

class GangSchedulingTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen(absl::Duration gang_reserve_after = absl::ZeroDuration()) {
    manager_.reset();
    JobManagerOptions options;
    options.lease = absl::Seconds(30);
    options.heartbeat = absl::Seconds(10);
    options.retry_backoff = absl::ZeroDuration();
    options.gang_reserve_after = gang_reserve_after;
    auto manager = JobManager::Create(store_, &clock_, options);
    ASSERT_TRUE(manager.ok()) << manager.status();
    manager_ = std::move(*manager);
  }

  // A worker whose rank 0 would listen on `host`:`port` + device index (port 0: no rank 0).
  void Register(const std::string& id, std::vector<std::string> devices = {"cpu"},
                uint32_t port = 29500, const std::string& host = "") {
    ftune::v1::RegisterWorkerRequest request;
    request.set_worker_id(id);
    request.set_host(id + ".lan");
    for (const std::string& d : devices) request.add_devices()->set_name(d);
    request.set_rendezvous_port(port);
    if (port > 0) request.set_rendezvous_host(host.empty() ? id + ".lan" : host);
    auto registered = manager_->RegisterWorker(request);
    ASSERT_TRUE(registered.ok()) << registered.status();
  }

  ftune::v1::Job Submit(const std::string& name, uint32_t world_size,
                        const std::string& device = "auto") {
    auto spec = ValidSpec(name);
    spec.set_world_size(world_size);
    spec.set_device(device);
    auto result = manager_->SubmitJob(spec);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? result->job : ftune::v1::Job();
  }

  // An AcquireJob offering `free`; wait 0 answers at once, a longer one parks.
  std::shared_ptr<Call> Acquire(const std::string& worker, std::vector<std::string> free = {"cpu"},
                                double wait_seconds = 20) {
    ftune::v1::AcquireJobRequest request;
    request.set_worker_id(worker);
    for (const std::string& d : free) request.add_free_devices(d);
    request.set_wait_seconds(wait_seconds);
    auto call = std::make_shared<Call>();
    manager_->AcquireJob(request, [call](absl::StatusOr<AcquireJobResponse> r) {
      ++call->answers;
      call->result = std::move(r);
    });
    return call;
  }

  static Rank RankOf(const std::string& worker, const Call& call) {
    EXPECT_TRUE(call.leased()) << worker << ": " << call.result.status();
    return Rank{worker, call.leased() ? *call.result : AcquireJobResponse()};
  }

  LeaseVerdict Beat(const Rank& rank) {
    ftune::v1::HeartbeatRequest request;
    request.set_worker_id(rank.worker);
    auto* renewal = request.add_leases();
    renewal->set_job_id(rank.lease.job().id());
    renewal->set_lease_id(rank.lease.lease_id());
    auto response = manager_->Heartbeat(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->leases(0).verdict() : ftune::v1::LEASE_VERDICT_LOST;
  }

  absl::StatusOr<ftune::v1::ReportEventsResponse> Report(const Rank& rank, uint64_t batch,
                                                         int progress_events) {
    ftune::v1::ReportEventsRequest request;
    request.set_job_id(rank.lease.job().id());
    request.set_lease_id(rank.lease.lease_id());
    request.set_worker_id(rank.worker);
    request.set_batch_id(batch);
    for (int i = 0; i < progress_events; ++i) {
      request.add_events()->mutable_train_progress()->set_step(i + 1);
    }
    return manager_->ReportEvents(request);
  }

  absl::StatusOr<ftune::v1::Job> Complete(const Rank& rank, JobOutcome outcome,
                                          const std::string& error = "") {
    ftune::v1::CompleteJobRequest request;
    request.set_job_id(rank.lease.job().id());
    request.set_lease_id(rank.lease.lease_id());
    request.set_worker_id(rank.worker);
    request.set_outcome(outcome);
    request.set_error(error);
    auto response = manager_->CompleteJob(request);
    if (!response.ok()) return response.status();
    return response->job();
  }

  ftune::v1::Job Get(const std::string& id) {
    auto job = manager_->GetJob(id);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : ftune::v1::Job();
  }

  std::vector<ftune::v1::JobEvent> AllEvents(const std::string& id) {
    auto watch = manager_->WatchJob(id, 0, [] {});
    EXPECT_TRUE(watch.ok());
    testing::Drained drained;
    testing::DrainInto(**watch, &drained);
    return drained.events;
  }

  // Jobs ListWorkers shows on `worker`.
  std::vector<std::string> JobsOn(const std::string& worker) {
    for (const ftune::v1::Worker& w : manager_->ListWorkers()) {
      if (w.id() == worker) return {w.job_ids().begin(), w.job_ids().end()};
    }
    return {};
  }

  // A two-rank CPU gang: rank 0 on w1, rank 1 on w2.
  std::pair<Rank, Rank> LeaseTwoRanks(const std::string& name = "gang") {
    Register("w1");
    Register("w2", {"cpu"}, /*port=*/0);  // cannot be rank 0: w1 is
    job_ = Submit(name, 2, "cpu");
    auto first = Acquire("w1");
    auto second = Acquire("w2");
    Rank r0 = RankOf("w1", *first);
    Rank r1 = RankOf("w2", *second);
    EXPECT_EQ(r0.lease.rendezvous().rank(), 0u);
    EXPECT_EQ(r1.lease.rendezvous().rank(), 1u);
    return {r0, r1};
  }

  // An empty controller on a new in-memory store.
  void FreshStore() {
    manager_.reset();
    memory_ = std::make_unique<MemoryJobStore>();
    store_ = memory_.get();
    Reopen();
  }

  std::unique_ptr<MemoryJobStore> memory_ = std::make_unique<MemoryJobStore>();
  std::unique_ptr<SqliteJobStore> sqlite_;
  JobStore* store_ = memory_.get();
  FakeClock clock_;
  std::unique_ptr<JobManager> manager_;  // destroyed before the stores
  ftune::v1::Job job_;
};

TEST_F(GangSchedulingTest, LeasedAllOrNothingAcrossTwoWorkersInOneCommit) {
  Register("w1", {"cpu"}, 29500, "10.0.0.1");
  Register("w2", {"cpu"}, 29600, "10.0.0.2");
  const auto job = Submit("gang", 2, "cpu");
  EXPECT_EQ(job.spec().world_size(), 2u);

  // One device offered: nothing is leased, the call stays parked.
  auto first = Acquire("w1");
  EXPECT_EQ(first->answers, 0);
  EXPECT_EQ(manager_->waiting_acquires(), 1u);
  EXPECT_EQ(Get(job.id()).state(), ftune::v1::JOB_STATE_QUEUED);
  EXPECT_EQ(AllEvents(job.id()).size(), 1u);  // submitted only

  // The second device completes the gang: both calls are answered from one commit.
  const uint64_t commits = memory_->commits();
  auto second = Acquire("w2", {"cpu"}, /*wait_seconds=*/0);
  ASSERT_TRUE(first->leased()) << first->result.status();
  ASSERT_TRUE(second->leased()) << second->result.status();
  EXPECT_EQ(memory_->commits(), commits + 1);
  EXPECT_EQ(manager_->waiting_acquires(), 0u);

  const AcquireJobResponse& a = *first->result;
  const AcquireJobResponse& b = *second->result;
  EXPECT_EQ(a.job().id(), job.id());
  EXPECT_EQ(b.job().id(), job.id());
  EXPECT_NE(a.lease_id(), b.lease_id());
  EXPECT_EQ(a.device(), "cpu");
  EXPECT_EQ(b.device(), "cpu");
  // Each rank is told its rank and the same rendezvous: rank 0's worker's host and port.
  std::set<uint32_t> ranks = {a.rendezvous().rank(), b.rendezvous().rank()};
  EXPECT_EQ(ranks, (std::set<uint32_t>{0, 1}));
  EXPECT_EQ(a.rendezvous().world_size(), 2u);
  EXPECT_EQ(b.rendezvous().world_size(), 2u);
  EXPECT_EQ(a.rendezvous().host(), b.rendezvous().host());
  EXPECT_EQ(a.rendezvous().port(), b.rendezvous().port());

  const ftune::v1::Job leased = Get(job.id());
  EXPECT_EQ(leased.state(), ftune::v1::JOB_STATE_ASSIGNED);
  ASSERT_EQ(leased.workers_size(), 2);
  const std::string& rank0 = leased.workers(0).worker_id();
  EXPECT_EQ(leased.worker_id(), rank0);
  EXPECT_EQ((a.rendezvous().rank() == 0 ? "w1" : "w2"), rank0);
  EXPECT_EQ(a.rendezvous().host(), rank0 == "w1" ? "10.0.0.1" : "10.0.0.2");
  EXPECT_EQ(a.rendezvous().port(), rank0 == "w1" ? 29500u : 29600u);
  EXPECT_EQ(leased.workers(1).worker_id(), rank0 == "w1" ? "w2" : "w1");
  EXPECT_EQ(JobsOn("w1"), (std::vector<std::string>{job.id()}));
  EXPECT_EQ(JobsOn("w2"), (std::vector<std::string>{job.id()}));
  EXPECT_EQ(manager_->counters().leases_granted, 2u);
  // A one-device job never carries a rendezvous.
  Register("w3");
  Submit("single", 1);
  auto single = Acquire("w3", {"cpu"}, 0);
  ASSERT_TRUE(single->leased());
  EXPECT_FALSE(single->result->has_rendezvous());
  EXPECT_EQ(single->result->job().workers_size(), 0);
}

TEST_F(GangSchedulingTest, RankZeroGoesToAWorkerWithARendezvousPort) {
  Register("a", {"cpu"}, /*port=*/0);
  Register("b", {"cpu"}, /*port=*/0);
  const auto job = Submit("gang", 2, "cpu");
  auto on_a = Acquire("a");
  auto on_b = Acquire("b");
  // Two devices, but neither worker can serve the rendezvous.
  EXPECT_EQ(on_a->answers + on_b->answers, 0);
  EXPECT_EQ(Get(job.id()).state(), ftune::v1::JOB_STATE_QUEUED);

  Register("c", {"cpu"}, 31000, "c.example");
  auto on_c = Acquire("c", {"cpu"}, 0);
  ASSERT_TRUE(on_c->leased());
  EXPECT_EQ(on_c->result->rendezvous().rank(), 0u);
  EXPECT_EQ(on_c->result->rendezvous().host(), "c.example");
  EXPECT_EQ(on_c->result->rendezvous().port(), 31000u);
  // Rank 1 went to a (the oldest parked call); b still waits.
  ASSERT_TRUE(on_a->leased());
  EXPECT_EQ(on_a->result->rendezvous().rank(), 1u);
  EXPECT_EQ(on_a->result->rendezvous().host(), "c.example");
  EXPECT_EQ(on_b->answers, 0);
  const ftune::v1::Job leased = Get(job.id());
  EXPECT_EQ(leased.worker_id(), "c");
  ASSERT_EQ(leased.workers_size(), 2);
  EXPECT_EQ(leased.workers(0).worker_id(), "c");
  EXPECT_EQ(leased.workers(1).worker_id(), "a");
}

// Two daemons on one box (one per GPU) registered with the same rendezvous port: a second
// gang's rank 0 must not be given the endpoint a running gang's rank 0 serves.
TEST_F(GangSchedulingTest, TwoRankZerosNeverShareARendezvousEndpoint) {
  Register("box-0", {"cpu"}, 29500, "box.lan");
  Register("box-1", {"cpu"}, 29500, "box.lan");
  Register("other-0", {"cpu"}, 0);
  Register("other-1", {"cpu"}, 0);
  const auto first = Submit("first", 2, "cpu");
  auto b0 = Acquire("box-0");
  auto o0 = Acquire("other-0", {"cpu"}, 0);
  ASSERT_TRUE(b0->leased());
  ASSERT_TRUE(o0->leased());
  EXPECT_EQ(b0->result->rendezvous().rank(), 0u);
  EXPECT_EQ(b0->result->rendezvous().host(), "box.lan");
  EXPECT_EQ(b0->result->rendezvous().port(), 29500u);

  const auto second = Submit("second", 2, "cpu");
  auto b1 = Acquire("box-1");
  auto o1 = Acquire("other-1", {"cpu"}, 0);
  EXPECT_FALSE(o1->leased()) << "box-1's rank 0 would listen on box.lan:29500 too";
  EXPECT_EQ(b1->answers, 0);
  EXPECT_EQ(Get(second.id()).state(), ftune::v1::JOB_STATE_QUEUED);
  // Once the first gang is over, the endpoint is free again.
  ASSERT_TRUE(Complete(Rank{"box-0", *b0->result}, ftune::v1::JOB_OUTCOME_SUCCEEDED).ok());
  EXPECT_EQ(Get(first.id()).state(), ftune::v1::JOB_STATE_SUCCEEDED);
  auto o1_again = Acquire("other-1", {"cpu"}, 0);
  ASSERT_TRUE(o1_again->leased());
  ASSERT_TRUE(b1->leased());
  EXPECT_EQ(b1->result->rendezvous().rank(), 0u);
  EXPECT_EQ(b1->result->rendezvous().port(), 29500u);
}

// Ranks are packed on as few workers as possible: one worker that fits the whole gang (the
// smallest such), whose extra ranks arrive on its next AcquireJob calls; port = base + the
// index of rank 0's device among the worker's registered devices.
TEST_F(GangSchedulingTest, PacksRanksOnTheFewestWorkers) {
  Register("big", {"cpu", "cuda:0", "cuda:1", "cuda:2"}, 29500);
  Register("pair", {"cpu", "cuda:0", "cuda:1"}, 29600);
  Register("one", {"cuda:0"}, 29700);
  auto big = Acquire("big", {"cpu", "cuda:0", "cuda:1", "cuda:2"});
  auto one = Acquire("one", {"cuda:0"});
  auto pair = Acquire("pair", {"cpu", "cuda:0", "cuda:1"});
  const auto job = Submit("gang", 2, "cuda");
  // pair fits exactly: not big (it would leave one CUDA device), never split.
  ASSERT_TRUE(pair->leased());
  EXPECT_EQ(big->answers, 0);
  EXPECT_EQ(one->answers, 0);
  const AcquireJobResponse& r0 = *pair->result;
  EXPECT_EQ(r0.job().id(), job.id());
  EXPECT_EQ(r0.rendezvous().rank(), 0u);
  EXPECT_EQ(r0.device(), "cuda:0");
  EXPECT_EQ(r0.rendezvous().port(), 29601u);  // cuda:0 is pair's device 1
  EXPECT_EQ(r0.rendezvous().host(), "pair.lan");

  // pair's next call (its cuda:0 now busy) gets rank 1 at once, without a new commit.
  const uint64_t commits = memory_->commits();
  auto next = Acquire("pair", {"cpu", "cuda:1"}, 0);
  ASSERT_TRUE(next->leased());
  EXPECT_EQ(memory_->commits(), commits);
  EXPECT_EQ(next->result->job().id(), job.id());
  EXPECT_EQ(next->result->rendezvous().rank(), 1u);
  EXPECT_EQ(next->result->device(), "cuda:1");
  EXPECT_EQ(next->result->rendezvous().port(), 29601u);
  EXPECT_NE(next->result->lease_id(), r0.lease_id());
  const ftune::v1::Job leased = Get(job.id());
  ASSERT_EQ(leased.workers_size(), 2);
  EXPECT_EQ(leased.workers(0).device(), "cuda:0");
  EXPECT_EQ(leased.workers(1).device(), "cuda:1");
  EXPECT_EQ(leased.workers(1).worker_id(), "pair");

  // Three ranks fit big alone: its parked call gets rank 0, its next two calls ranks 1 and 2.
  const auto three = Submit("three", 3, "cuda");
  ASSERT_TRUE(big->leased());
  EXPECT_EQ(big->result->job().id(), three.id());
  EXPECT_EQ(big->result->device(), "cuda:0");
  EXPECT_EQ(big->result->rendezvous().port(), 29501u);
  EXPECT_EQ(one->answers, 0);
  auto rank1 = Acquire("big", {"cpu", "cuda:1", "cuda:2"}, 0);
  auto rank2 = Acquire("big", {"cpu", "cuda:2"}, 0);
  ASSERT_TRUE(rank1->leased());
  ASSERT_TRUE(rank2->leased());
  EXPECT_EQ(rank1->result->rendezvous().rank(), 1u);
  EXPECT_EQ(rank2->result->rendezvous().rank(), 2u);
  EXPECT_EQ(rank2->result->device(), "cuda:2");
  EXPECT_FALSE(Acquire("big", {"cpu"}, 0)->leased());
  // Leased devices are not handed out again, whatever a worker claims.
  Submit("single", 1, "cuda");
  EXPECT_FALSE(Acquire("big", {"cuda:0", "cuda:1", "cuda:2"}, 0)->leased());
}

TEST_F(GangSchedulingTest, SplitsAcrossWorkersWhenNoneFitsAlone) {
  Register("a", {"cuda:0", "cuda:1"}, 29500);
  Register("b", {"cuda:0"}, /*port=*/0);
  Register("c", {"cuda:0", "cuda:1", "cuda:2"}, /*port=*/0);
  const auto job = Submit("gang", 4, "cuda");
  auto b = Acquire("b", {"cuda:0"});
  auto c = Acquire("c", {"cuda:0", "cuda:1", "cuda:2"});
  auto a = Acquire("a", {"cuda:0", "cuda:1"});
  // Rank 0 on a (the only one with a port), the remaining two on c: its first two devices
  // (two workers, b is not needed).
  ASSERT_TRUE(a->leased());
  ASSERT_TRUE(c->leased());
  EXPECT_EQ(b->answers, 0);
  const ftune::v1::Job leased = Get(job.id());
  ASSERT_EQ(leased.workers_size(), 4);
  const std::vector<std::pair<std::string, std::string>> want = {
      {"a", "cuda:0"}, {"a", "cuda:1"}, {"c", "cuda:0"}, {"c", "cuda:1"}};
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(leased.workers(r).worker_id(), want[r].first) << "rank " << r;
    EXPECT_EQ(leased.workers(r).device(), want[r].second) << "rank " << r;
  }
  EXPECT_EQ(a->result->rendezvous().rank(), 0u);
  EXPECT_EQ(c->result->rendezvous().rank(), 2u);
  EXPECT_EQ(c->result->rendezvous().port(), 29500u);
  EXPECT_EQ(c->result->rendezvous().host(), "a.lan");
  // Each of a and c has one more rank waiting for its next call.
  auto a_next = Acquire("a", {"cuda:1"}, 0);
  auto c_next = Acquire("c", {"cuda:1", "cuda:2"}, 0);
  ASSERT_TRUE(a_next->leased());
  ASSERT_TRUE(c_next->leased());
  EXPECT_EQ(a_next->result->rendezvous().rank(), 1u);
  EXPECT_EQ(c_next->result->rendezvous().rank(), 3u);
  EXPECT_EQ(c_next->result->device(), "cuda:1");
}

// A gang never mixes device kinds: its ranks share one c10d backend.
TEST_F(GangSchedulingTest, RanksAreAllOfOneDeviceKind) {
  Register("gpu", {"cpu", "cuda:0"}, 29500);
  const auto job = Submit("gang", 2, "auto");
  auto call = Acquire("gpu", {"cpu", "cuda:0"});
  EXPECT_EQ(call->answers, 0);  // one CUDA and one CPU device do not make a gang
  Register("gpu2", {"cuda:0"}, 0);
  auto other = Acquire("gpu2", {"cuda:0"}, 0);
  ASSERT_TRUE(call->leased());
  ASSERT_TRUE(other->leased());
  EXPECT_EQ(call->result->device(), "cuda:0");
  EXPECT_EQ(other->result->device(), "cuda:0");
  EXPECT_EQ(Get(job.id()).workers(1).worker_id(), "gpu2");
}

TEST_F(GangSchedulingTest, OnlyRankZerosSuccessEndsTheJob) {
  auto [r0, r1] = LeaseTwoRanks();
  ASSERT_TRUE(Report(r0, 1, 1).ok());
  // Rank 1 finishes first: its device is free again, the job runs on.
  auto released = Complete(r1, ftune::v1::JOB_OUTCOME_SUCCEEDED);
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(released->state(), ftune::v1::JOB_STATE_RUNNING);
  EXPECT_TRUE(JobsOn("w2").empty());
  EXPECT_EQ(Beat(r0), ftune::v1::LEASE_VERDICT_OK);
  EXPECT_EQ(Beat(r1), ftune::v1::LEASE_VERDICT_LOST);  // released: nothing to renew
  Submit("next", 1, "cpu");
  auto next = Acquire("w2", {"cpu"}, 0);
  ASSERT_TRUE(next->leased()) << "rank 1's device went back to the pool";
  // Its repeat is accepted and changes nothing.
  ASSERT_TRUE(Complete(r1, ftune::v1::JOB_OUTCOME_SUCCEEDED).ok());
  EXPECT_EQ(Get(job_.id()).state(), ftune::v1::JOB_STATE_RUNNING);

  auto done = Complete(r0, ftune::v1::JOB_OUTCOME_SUCCEEDED);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), ftune::v1::JOB_STATE_SUCCEEDED);
  // The gang stays on the job for display.
  const ftune::v1::Job ended = Get(job_.id());
  ASSERT_EQ(ended.workers_size(), 2);
  EXPECT_EQ(ended.worker_id(), "w1");
  EXPECT_EQ(ended.workers(1).worker_id(), "w2");
}

TEST_F(GangSchedulingTest, OtherRanksMayFinishAfterRankZero) {
  auto [r0, r1] = LeaseTwoRanks();
  ASSERT_TRUE(Complete(r0, ftune::v1::JOB_OUTCOME_SUCCEEDED).ok());
  EXPECT_EQ(Get(job_.id()).state(), ftune::v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Beat(r1), ftune::v1::LEASE_VERDICT_LOST);  // the job is over
  // Once the ended job has left memory, rank 1's late success is still accepted.
  manager_->Flush();
  manager_->Sweep();
  EXPECT_EQ(manager_->jobs_in_memory(), 0u);
  auto late = Complete(r1, ftune::v1::JOB_OUTCOME_SUCCEEDED);
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_EQ(late->state(), ftune::v1::JOB_STATE_SUCCEEDED);
}

TEST_F(GangSchedulingTest, OnlyRankZerosEventsAreStored) {
  auto [r0, r1] = LeaseTwoRanks();
  const size_t before = AllEvents(job_.id()).size();  // submitted, assigned
  auto dropped = Report(r1, 1, 3);
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_EQ(dropped->verdict(), ftune::v1::LEASE_VERDICT_OK);
  EXPECT_EQ(dropped->last_seq(), static_cast<int64_t>(before));
  EXPECT_EQ(AllEvents(job_.id()).size(), before);
  EXPECT_EQ(Get(job_.id()).state(), ftune::v1::JOB_STATE_ASSIGNED);  // rank 1 does not start it

  auto stored = Report(r0, 1, 3);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->last_seq(), static_cast<int64_t>(before) + 4);  // running + 3 progress
  EXPECT_EQ(Get(job_.id()).state(), ftune::v1::JOB_STATE_RUNNING);
  EXPECT_EQ(Get(job_.id()).step(), 3);
}

TEST_F(GangSchedulingTest, ALostRankLeaseRequeuesTheWholeGang) {
  auto [r0, r1] = LeaseTwoRanks();
  ASSERT_TRUE(Report(r0, 1, 1).ok());
  // Rank 0 keeps heartbeating; rank 1's worker goes silent.
  for (int i = 0; i < 3; ++i) {
    clock_.Advance(absl::Seconds(11));
    EXPECT_EQ(Beat(r0), ftune::v1::LEASE_VERDICT_OK);
    manager_->Sweep();
  }
  const ftune::v1::Job requeued = Get(job_.id());
  EXPECT_EQ(requeued.state(), ftune::v1::JOB_STATE_QUEUED);
  EXPECT_EQ(requeued.attempt(), 1u);
  EXPECT_EQ(manager_->counters().requeued_after_expiry, 1u);
  const auto events = AllEvents(job_.id());
  const std::string& reason = events.back().state_changed().reason();
  EXPECT_TRUE(absl::StrContains(reason, "rank 1")) << reason;
  EXPECT_TRUE(absl::StrContains(reason, "w2")) << reason;
  EXPECT_TRUE(absl::StrContains(reason, "restart 1 of 3")) << reason;
  // Every rank hears LOST; rank 0 can neither report nor complete.
  EXPECT_EQ(Beat(r0), ftune::v1::LEASE_VERDICT_LOST);
  EXPECT_EQ(Beat(r1), ftune::v1::LEASE_VERDICT_LOST);
  EXPECT_EQ(Report(r0, 2, 1)->verdict(), ftune::v1::LEASE_VERDICT_LOST);
  EXPECT_EQ(Complete(r0, ftune::v1::JOB_OUTCOME_SUCCEEDED).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(JobsOn("w1").empty());
  // The last gang stays shown until the next one is leased, with fresh leases.
  EXPECT_EQ(requeued.workers_size(), 2);
  Register("w2", {"cpu"}, 0);  // back online
  auto again0 = Acquire("w1");
  auto again1 = Acquire("w2", {"cpu"}, 0);
  ASSERT_TRUE(again0->leased());
  ASSERT_TRUE(again1->leased());
  EXPECT_EQ(again0->result->job().attempt(), 1u);
  EXPECT_NE(again0->result->lease_id(), r0.lease.lease_id());
  EXPECT_NE(again1->result->lease_id(), r1.lease.lease_id());
}

// A rank's lease runs out only by its own silence: heartbeats from the other workers do not
// renew it, and a rank never delivered (its worker never asked again) also expires.
TEST_F(GangSchedulingTest, AnUndeliveredRankExpiresToo) {
  Register("box", {"cuda:0", "cuda:1"}, 29500);
  const auto job = Submit("gang", 2, "cuda");
  auto call = Acquire("box", {"cuda:0", "cuda:1"}, 0);
  ASSERT_TRUE(call->leased());
  const Rank r0{"box", *call->result};
  for (int i = 0; i < 3; ++i) {
    clock_.Advance(absl::Seconds(11));
    EXPECT_EQ(Beat(r0), ftune::v1::LEASE_VERDICT_OK);
    manager_->Sweep();
  }
  EXPECT_EQ(Get(job.id()).state(), ftune::v1::JOB_STATE_QUEUED);
  // The stale rank is not handed out any more.
  Register("box", {"cuda:0", "cuda:1"}, 0);  // no rank 0 here now: the gang cannot be placed
  auto later = Acquire("box", {"cuda:1"}, 0);
  EXPECT_FALSE(later->leased());
}

TEST_F(GangSchedulingTest, AnyRanksFailureEndsTheGangAttempt) {
  struct Case {
    JobOutcome outcome;
    JobState state;
    uint32_t restarts_counted;
  };
  const Case cases[] = {
      {ftune::v1::JOB_OUTCOME_RETRY, ftune::v1::JOB_STATE_QUEUED, 1},
      {ftune::v1::JOB_OUTCOME_FAILED, ftune::v1::JOB_STATE_FAILED, 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(ftune::v1::JobOutcome_Name(c.outcome));
    FreshStore();
    auto [r0, r1] = LeaseTwoRanks();
    ASSERT_TRUE(Report(r0, 1, 1).ok());
    auto ended = Complete(r1, c.outcome, "out of memory");
    ASSERT_TRUE(ended.ok()) << ended.status();
    EXPECT_EQ(ended->state(), c.state);
    const std::string reason = AllEvents(job_.id()).back().state_changed().reason();
    EXPECT_TRUE(absl::StrContains(reason, "w2 (rank 1 of 2)")) << reason;
    if (c.state == ftune::v1::JOB_STATE_QUEUED) {
      EXPECT_EQ(ended->attempt(), 1u);
      EXPECT_EQ(absl::StrContains(reason, "restart 1 of 3"), c.restarts_counted == 1) << reason;
    } else {
      EXPECT_TRUE(absl::StrContains(ended->error(), "out of memory")) << ended->error();
    }
    // Rank 0 is told to stop, and its own completion is refused or a no-op.
    EXPECT_EQ(Beat(r0), ftune::v1::LEASE_VERDICT_LOST);
    EXPECT_EQ(Report(r0, 2, 1)->verdict(), ftune::v1::LEASE_VERDICT_LOST);
    EXPECT_TRUE(JobsOn("w1").empty());
  }
}

TEST_F(GangSchedulingTest, CancelReachesEveryRank) {
  auto [r0, r1] = LeaseTwoRanks();
  ASSERT_TRUE(manager_->CancelJob(job_.id(), "").ok());
  EXPECT_EQ(Beat(r0), ftune::v1::LEASE_VERDICT_CANCEL);
  EXPECT_EQ(Beat(r1), ftune::v1::LEASE_VERDICT_CANCEL);
  EXPECT_EQ(Report(r1, 1, 0)->verdict(), ftune::v1::LEASE_VERDICT_CANCEL);
  // Rank 1 stops first and gives its device back; rank 0 writes the checkpoint, then ends it.
  auto first = Complete(r1, ftune::v1::JOB_OUTCOME_CANCELLED);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->state(), ftune::v1::JOB_STATE_CANCELLING);
  EXPECT_EQ(Beat(r0), ftune::v1::LEASE_VERDICT_CANCEL);
  ftune::v1::CompleteJobRequest last;
  last.set_job_id(job_.id());
  last.set_lease_id(r0.lease.lease_id());
  last.set_worker_id(r0.worker);
  last.set_outcome(ftune::v1::JOB_OUTCOME_CANCELLED);
  last.set_last_checkpoint("/out/checkpoint-7");
  auto second = manager_->CompleteJob(last);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->job().state(), ftune::v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(second->job().last_checkpoint(), "/out/checkpoint-7");
}

// A hand-back (a rank's worker shutting down) stops every rank at the same step; the other
// ranks' REQUEUE only frees their devices, and rank 0's, after its checkpoint, requeues the
// job without counting a restart.
TEST_F(GangSchedulingTest, AHandBackEndsWithRankZerosReport) {
  auto [r0, r1] = LeaseTwoRanks();
  ASSERT_TRUE(Report(r0, 1, 1).ok());
  auto first = Complete(r1, ftune::v1::JOB_OUTCOME_REQUEUE);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->state(), ftune::v1::JOB_STATE_RUNNING);
  EXPECT_TRUE(JobsOn("w2").empty());
  EXPECT_EQ(Beat(r0), ftune::v1::LEASE_VERDICT_OK);
  auto second = Complete(r0, ftune::v1::JOB_OUTCOME_REQUEUE);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->state(), ftune::v1::JOB_STATE_QUEUED);
  EXPECT_EQ(second->attempt(), 1u);
  const std::string reason = AllEvents(job_.id()).back().state_changed().reason();
  EXPECT_FALSE(absl::StrContains(reason, "restart 1 of")) << reason;
}

// The starvation policy: a queued gang at the head of the line reserves the devices it waits
// for (gang_reserve_after 0: at once), so one-device jobs arriving all the time cannot keep
// taking them one by one.
TEST_F(GangSchedulingTest, AGangIsNotStarvedByOneDeviceJobs) {
  Register("w1");
  Register("w2");
  Submit("small-0", 1, "cpu");
  auto busy = Acquire("w1", {"cpu"}, 0);
  ASSERT_TRUE(busy->leased());
  Rank running{"w1", *busy->result};
  const auto gang = Submit("gang", 2, "cpu");
  for (int i = 1; i <= 3; ++i) {
    Submit("small-" + std::to_string(i), 1, "cpu");
    // w2 is free, but a job behind the gang may not take it.
    auto w2 = Acquire("w2", {"cpu"}, 0);
    EXPECT_FALSE(w2->leased()) << "small-" << i << " overtook the gang";
  }
  auto w2 = Acquire("w2");  // parks
  ASSERT_TRUE(Complete(running, ftune::v1::JOB_OUTCOME_SUCCEEDED).ok());
  auto w1 = Acquire("w1", {"cpu"}, 0);
  ASSERT_TRUE(w1->leased());
  ASSERT_TRUE(w2->leased());
  EXPECT_EQ(w1->result->job().id(), gang.id());
  EXPECT_EQ(w2->result->job().id(), gang.id());
}

TEST_F(GangSchedulingTest, ReservationStartsAfterTheConfiguredWait) {
  Reopen(/*gang_reserve_after=*/absl::Minutes(2));
  Register("w1");
  Register("w2");
  Submit("first", 1, "cpu");
  ASSERT_TRUE(Acquire("w1", {"cpu"}, 0)->leased());
  const auto gang = Submit("gang", 2, "cpu");
  // Within the bound, a job behind the gang may use the free device (backfill)...
  const auto early = Submit("early", 1, "cpu");
  auto w2 = Acquire("w2", {"cpu"}, 0);
  ASSERT_TRUE(w2->leased());
  EXPECT_EQ(w2->result->job().id(), early.id());
  ASSERT_TRUE(Complete(Rank{"w2", *w2->result}, ftune::v1::JOB_OUTCOME_SUCCEEDED).ok());
  // ...once it has waited longer, not any more.
  clock_.Advance(absl::Minutes(2));
  for (const char* worker : {"w1", "w2"}) {
    ftune::v1::HeartbeatRequest alive;
    alive.set_worker_id(worker);
    ASSERT_TRUE(manager_->Heartbeat(alive).ok());
  }
  Submit("late", 1, "cpu");
  EXPECT_FALSE(Acquire("w2", {"cpu"}, 0)->leased());
  EXPECT_EQ(Get(gang.id()).state(), ftune::v1::JOB_STATE_QUEUED);
}

// A reservation holds back only the kind of device the gang waits for, and only when the
// online workers could ever hold it.
TEST_F(GangSchedulingTest, ReservationIsByKindAndOnlyForAPlaceableGang) {
  Register("gpu", {"cpu", "cuda:0", "cuda:1"});
  Submit("cuda-0", 1, "cuda");
  ASSERT_TRUE(Acquire("gpu", {"cuda:0"}, 0)->leased());
  Submit("gang", 2, "cuda");
  Submit("cpu-job", 1, "cpu");
  Submit("cuda-job", 1, "cuda");
  auto cpu = Acquire("gpu", {"cpu", "cuda:1"}, 0);
  ASSERT_TRUE(cpu->leased());
  EXPECT_EQ(cpu->result->job().spec().name(), "cpu-job") << "CPU jobs pass a CUDA gang";
  EXPECT_FALSE(Acquire("gpu", {"cuda:1"}, 0)->leased()) << "cuda:1 is held for the gang";

  // Eight ranks: no online workers could ever hold it, so it holds nothing back.
  FreshStore();
  Register("w1");
  Submit("huge", 8, "cpu");
  Submit("small", 1, "cpu");
  auto w1 = Acquire("w1", {"cpu"}, 0);
  ASSERT_TRUE(w1->leased());
  EXPECT_EQ(w1->result->job().spec().name(), "small");
}

TEST_F(GangSchedulingTest, CancellingAWaitingGangReleasesItsReservation) {
  Register("w1");
  Register("w2");
  Submit("first", 1, "cpu");
  ASSERT_TRUE(Acquire("w1", {"cpu"}, 0)->leased());
  const auto gang = Submit("gang", 2, "cpu");
  Submit("small", 1, "cpu");
  auto w2 = Acquire("w2");
  EXPECT_EQ(w2->answers, 0);
  ASSERT_TRUE(manager_->CancelJob(gang.id(), "").ok());
  ASSERT_TRUE(w2->leased());
  EXPECT_EQ(w2->result->job().spec().name(), "small");
}

TEST_F(GangSchedulingTest, DrainingAndOfflineWorkersTakeNoRanks) {
  Register("w1");
  Register("w2");
  Register("w3");
  Submit("gang", 2, "cpu");
  auto w1 = Acquire("w1");
  ftune::v1::HeartbeatRequest draining;
  draining.set_worker_id("w2");
  draining.set_draining(true);
  ASSERT_TRUE(manager_->Heartbeat(draining).ok());
  EXPECT_FALSE(Acquire("w2", {"cpu"}, 0)->leased());
  EXPECT_EQ(w1->answers, 0);
  // w3 has been silent for a lease period: offline, not trusted with a rank either.
  clock_.Advance(absl::Seconds(31));
  ftune::v1::HeartbeatRequest alive;
  alive.set_worker_id("w1");
  ASSERT_TRUE(manager_->Heartbeat(alive).ok());
  manager_->Sweep();
  EXPECT_EQ(w1->answers, 1);  // its wait ran out
  EXPECT_FALSE(w1->leased());
  auto w1_again = Acquire("w1");
  EXPECT_FALSE(Acquire("w3", {"cpu"}, 0)->leased());
  alive.set_worker_id("w3");
  ASSERT_TRUE(manager_->Heartbeat(alive).ok());
  EXPECT_TRUE(Acquire("w3", {"cpu"}, 0)->leased());
  EXPECT_TRUE(w1_again->leased());
}

TEST_F(GangSchedulingTest, RegistrationChecksTheRendezvous) {
  ftune::v1::RegisterWorkerRequest request;
  request.set_worker_id("w");
  request.add_devices()->set_name("cpu");
  request.set_rendezvous_port(29500);
  auto no_host = manager_->RegisterWorker(request);
  EXPECT_EQ(no_host.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(no_host.status().message(), "rendezvous_host"));
  request.set_rendezvous_host("w.lan");
  request.add_devices()->set_name("cuda:0");
  request.set_rendezvous_port(65535);
  auto overflow = manager_->RegisterWorker(request);
  EXPECT_EQ(overflow.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(overflow.status().message(), "65535"));
  request.set_rendezvous_port(65534);
  ASSERT_TRUE(manager_->RegisterWorker(request).ok());
  const auto workers = manager_->ListWorkers();
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0].rendezvous_host(), "w.lan");
  EXPECT_EQ(workers[0].rendezvous_port(), 65534u);
}

// A restarted controller (SQLite) brings every rank's lease back, re-armed; a rank that had
// already finished stays released, and the gang still ends as one.
TEST_F(GangSchedulingTest, RestartRecoversGangLeasesConsistently) {
  manager_.reset();
  auto sqlite = SqliteJobStore::Open(ftune::testing::MakeTempDir("gang") + "/ftcontroller.db");
  ASSERT_TRUE(sqlite.ok()) << sqlite.status();
  sqlite_ = std::move(*sqlite);
  store_ = sqlite_.get();
  Reopen();
  Register("w1");
  Register("w2", {"cpu"}, 0);
  Register("w3", {"cpu"}, 0);
  const auto job = Submit("gang", 3, "cpu");
  auto c1 = Acquire("w1");
  auto c2 = Acquire("w2");
  auto c3 = Acquire("w3", {"cpu"}, 0);
  std::map<uint32_t, Rank> ranks;
  const std::vector<std::pair<std::string, std::shared_ptr<Call>>> calls = {
      {"w1", c1}, {"w2", c2}, {"w3", c3}};
  for (const auto& [worker, call] : calls) {
    Rank rank = RankOf(worker, *call);
    ranks[rank.lease.rendezvous().rank()] = rank;
  }
  ASSERT_EQ(ranks.size(), 3u);
  const Rank r0 = ranks[0], r1 = ranks[1], r2 = ranks[2];
  ASSERT_EQ(r0.worker, "w1");
  ASSERT_TRUE(Report(r0, 1, 1).ok());
  ASSERT_TRUE(Complete(r2, ftune::v1::JOB_OUTCOME_SUCCEEDED).ok());  // rank 2 done early
  clock_.Advance(absl::Seconds(25));

  Reopen();
  const ftune::v1::Job loaded = Get(job.id());
  EXPECT_EQ(loaded.state(), ftune::v1::JOB_STATE_RUNNING);
  ASSERT_EQ(loaded.workers_size(), 3);
  EXPECT_EQ(loaded.workers(2).worker_id(), r2.worker);
  // Every held lease was re-armed from the restart: 25 s later they all still hold.
  clock_.Advance(absl::Seconds(25));
  EXPECT_EQ(manager_->Sweep(), 0);
  EXPECT_EQ(Beat(r0), ftune::v1::LEASE_VERDICT_OK);
  EXPECT_EQ(Beat(r1), ftune::v1::LEASE_VERDICT_OK);
  EXPECT_EQ(Beat(r2), ftune::v1::LEASE_VERDICT_LOST);  // released before the restart
  EXPECT_EQ(JobsOn(r1.worker), (std::vector<std::string>{job.id()}));
  EXPECT_TRUE(JobsOn(r2.worker).empty());
  // Rank 1's worker then goes silent: the whole gang is requeued.
  clock_.Advance(absl::Seconds(20));
  EXPECT_EQ(Beat(r0), ftune::v1::LEASE_VERDICT_OK);
  clock_.Advance(absl::Seconds(11));
  EXPECT_EQ(manager_->Sweep(), 1);
  const ftune::v1::Job requeued = Get(job.id());
  EXPECT_EQ(requeued.state(), ftune::v1::JOB_STATE_QUEUED);
  EXPECT_EQ(requeued.attempt(), 1u);
  EXPECT_EQ(Beat(r0), ftune::v1::LEASE_VERDICT_LOST);
  // That too survives a restart: no lease comes back.
  Reopen();
  EXPECT_EQ(Beat(r0), ftune::v1::LEASE_VERDICT_LOST);
  EXPECT_EQ(Complete(r0, ftune::v1::JOB_OUTCOME_SUCCEEDED).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace ftune::server
