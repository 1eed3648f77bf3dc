// SqliteJobStore: what is committed survives closing and reopening; schema versioning.
#include "server/sqlite_job_store.h"

#include <sqlite3.h>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "server/job_manager.h"
#include "tests/server/test_util.h"
#include "tests/support/process.h"

namespace ftune::server {
namespace {

std::string DbPath() { return ftune::testing::MakeTempDir("sqlite") + "/ftcontroller.db"; }

JobRecord Record(const std::string& id, int64_t queue_seq) {
  JobRecord r;
  r.job.set_id(id);
  r.job.set_state(ftune::v1::JOB_STATE_RUNNING);
  *r.job.mutable_spec() = testing::ValidSpec(id);
  r.job.mutable_spec()->set_client_request_id("req-" + id);
  r.queue_seq = queue_seq;
  r.lease_id = "lease-" + id;
  r.device = "cuda:0";
  r.last_batch_id = 7;
  r.restarts = 2;
  return r;
}

ftune::v1::JobEvent Event(const std::string& id, int64_t seq) {
  ftune::v1::JobEvent e;
  e.set_job_id(id);
  e.set_seq(seq);
  e.mutable_log()->set_message("event " + std::to_string(seq));
  return e;
}

// One job's change as a batch of its own.
absl::Status CommitOne(JobStore& store, JobRecord record, std::vector<ftune::v1::JobEvent> events) {
  StoreBatch batch;
  batch.jobs.push_back(JobWrite{std::move(record), std::move(events)});
  return store.Commit(batch);
}

TEST(SqliteJobStoreTest, CommitsSurviveReopen) {
  const std::string path = DbPath();
  {
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE(CommitOne(**store, Record("b", 2), {Event("b", 1)}).ok());
    ASSERT_TRUE(CommitOne(**store, Record("a", 1), {Event("a", 1), Event("a", 2)}).ok());
    StoreBatch workers;
    workers.workers.emplace_back().set_id("w1");
    workers.workers.back().add_devices()->set_name("cpu");
    ASSERT_TRUE((*store)->Commit(workers).ok());
  }
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok());
  auto jobs = (*store)->LoadLiveJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].job.id(), "a");  // queue_seq order
  EXPECT_EQ((*jobs)[0].lease_id, "lease-a");
  EXPECT_EQ((*jobs)[0].device, "cuda:0");
  EXPECT_EQ((*jobs)[0].last_batch_id, 7u);
  EXPECT_EQ((*jobs)[0].restarts, 2u);
  EXPECT_EQ((*jobs)[0].job.SerializeAsString(), Record("a", 1).job.SerializeAsString());
  auto events = (*store)->ReadEvents("a", 0, 100);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[1].log().message(), "event 2");
  EXPECT_EQ((*store)->ReadEvents("a", 1, 100)->size(), 1u);
  EXPECT_EQ((*store)->ReadEvents("a", 0, 1)->size(), 1u);
  auto workers = (*store)->LoadWorkers();
  ASSERT_EQ(workers->size(), 1u);
  EXPECT_EQ((*workers)[0].id(), "w1");
}

TEST(SqliteJobStoreTest, DuplicateEventSeqRollsBackTheWholeCommit) {
  auto store = SqliteJobStore::Open(DbPath());
  ASSERT_TRUE(CommitOne(**store, Record("a", 1), {Event("a", 1)}).ok());
  JobRecord changed = Record("a", 1);
  changed.job.set_state(ftune::v1::JOB_STATE_FAILED);
  // A group commit: a new job, then the duplicate in another job's change, all undone.
  StoreBatch batch;
  batch.jobs.push_back(JobWrite{Record("b", 2), {Event("b", 1)}});
  batch.jobs.push_back(JobWrite{changed, {Event("a", 2), Event("a", 1)}});
  EXPECT_FALSE((*store)->Commit(batch).ok());
  ASSERT_EQ((*store)->LoadLiveJobs()->size(), 1u);
  EXPECT_EQ((*store)->LoadLiveJobs()->at(0).job.state(), ftune::v1::JOB_STATE_RUNNING);
  EXPECT_EQ((*store)->ReadEvents("a", 0, 100)->size(), 1u);
  EXPECT_TRUE((*store)->ReadEvents("b", 0, 100)->empty());
  // Still usable afterwards.
  EXPECT_TRUE(CommitOne(**store, changed, {Event("a", 2)}).ok());
}

TEST(SqliteJobStoreTest, GroupCommitKeepsEveryEventAndTheNewestRecord) {
  auto store = SqliteJobStore::Open(DbPath());
  StoreBatch batch;
  JobRecord first = Record("a", 1);
  JobRecord second = first;
  second.job.set_state(ftune::v1::JOB_STATE_SUCCEEDED);
  batch.jobs.push_back(JobWrite{first, {Event("a", 1), Event("a", 2)}});
  batch.jobs.push_back(JobWrite{Record("b", 2), {Event("b", 1)}});
  batch.jobs.push_back(JobWrite{second, {Event("a", 3)}});
  ASSERT_TRUE((*store)->Commit(batch).ok());
  EXPECT_EQ((*store)->FindJob("a")->job.state(), ftune::v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ((*store)->LoadLiveJobs()->size(), 1u);  // b
  EXPECT_EQ((*store)->ReadEvents("a", 0, 100)->size(), 3u);
  EXPECT_EQ((*store)->ReadEvents("b", 0, 100)->size(), 1u);
}

TEST(SqliteJobStoreTest, SchemaVersionIsRecordedAndNewerIsRefused) {
  const std::string path = DbPath();
  {
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok());
    EXPECT_EQ(*(*store)->SchemaVersion(), SqliteJobStore::kSchemaVersion);
  }
  {
    // Reopening does not migrate twice.
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE schema_version SET version = 99", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto store = SqliteJobStore::Open(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(store.status().message(), "schema version 99"));
}

TEST(SqliteJobStoreTest, UsesWalAndFullSync) {
  const std::string path = DbPath();
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))), "wal");
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

TEST(SqliteJobStoreTest, JobManagerOnSqliteRestoresAfterReopen) {
  const std::string path = DbPath();
  FakeClock clock;
  std::string id;
  int64_t last_seq = 0;
  {
    auto store = SqliteJobStore::Open(path);
    auto manager = JobManager::Create(store->get(), &clock, {});
    ASSERT_TRUE(manager.ok());
    auto submitted = (*manager)->SubmitJob(testing::ValidSpec());
    ASSERT_TRUE(submitted.ok()) << submitted.status();
    id = submitted->job.id();
    ASSERT_TRUE((*manager)->CancelJob(id, "stop").ok());
    last_seq = (*manager)->GetJob(id)->last_event_seq();
  }
  auto store = SqliteJobStore::Open(path);
  auto manager = JobManager::Create(store->get(), &clock, {});
  ASSERT_TRUE(manager.ok());
  auto job = (*manager)->GetJob(id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), ftune::v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(job->last_event_seq(), last_seq);
  EXPECT_EQ(job->error(), "stop");
}

// What the controller asks of a store once only live jobs stay in its memory, on both
// stores: lookups, pages of ended jobs, counts, and event retention.
class StoreContractTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (GetParam()) {
      auto sqlite = SqliteJobStore::Open(DbPath());
      ASSERT_TRUE(sqlite.ok());
      store_ = std::move(*sqlite);
    } else {
      store_ = std::make_unique<MemoryJobStore>();
    }
  }

  // Job `id` submitted `queue_seq`-th, in `state`; ended ones at `ended` (Unix seconds).
  void Put(const std::string& id, int64_t queue_seq, ftune::v1::JobState state, int64_t ended = 0) {
    JobRecord r = Record(id, queue_seq);
    r.job.set_state(state);
    if (ended > 0) r.job.mutable_end_time()->set_seconds(ended);
    std::vector<ftune::v1::JobEvent> events;
    for (int64_t seq = 1; seq <= 4; ++seq) events.push_back(Event(id, seq));  // log events
    events.emplace_back();
    events.back().set_seq(5);
    events.back().mutable_eval_result()->set_accuracy(0.5);
    ASSERT_TRUE(CommitOne(*store_, r, events).ok());
  }

  std::unique_ptr<JobStore> store_;
};

TEST_P(StoreContractTest, LooksUpListsAndCountsEndedJobs) {
  Put("q", 1, ftune::v1::JOB_STATE_QUEUED);
  Put("s1", 2, ftune::v1::JOB_STATE_SUCCEEDED, 100);
  Put("f", 3, ftune::v1::JOB_STATE_FAILED, 100);
  Put("s2", 4, ftune::v1::JOB_STATE_SUCCEEDED, 100);
  Put("r", 5, ftune::v1::JOB_STATE_RUNNING);

  auto live = store_->LoadLiveJobs();
  ASSERT_TRUE(live.ok());
  ASSERT_EQ(live->size(), 2u);
  EXPECT_EQ((*live)[0].job.id(), "q");
  EXPECT_EQ((*live)[1].job.id(), "r");

  auto summary = store_->Summarize();
  ASSERT_TRUE(summary.ok());
  EXPECT_EQ(summary->max_queue_seq, 5);
  EXPECT_EQ(summary->ended[ftune::v1::JOB_STATE_SUCCEEDED], 2);
  EXPECT_EQ(summary->ended[ftune::v1::JOB_STATE_FAILED], 1);
  EXPECT_EQ(summary->ended.count(ftune::v1::JOB_STATE_QUEUED), 0u);

  EXPECT_EQ(store_->FindJob("f")->job.state(), ftune::v1::JOB_STATE_FAILED);
  EXPECT_EQ(store_->FindJob("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->FindJobByRequestId("req-s2")->job.id(), "s2");
  EXPECT_EQ(store_->FindJobByRequestId("req-nope").status().code(), absl::StatusCode::kNotFound);

  auto ids = [](const absl::StatusOr<std::vector<JobRecord>>& jobs) {
    std::vector<std::string> out;
    for (const JobRecord& r : *jobs) out.push_back(r.job.id());
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(ids(store_->ListEndedJobs(INT64_MAX, {}, 10)), (V{"s2", "f", "s1"}));
  EXPECT_EQ(ids(store_->ListEndedJobs(4, {}, 10)), (V{"f", "s1"}));
  EXPECT_EQ(ids(store_->ListEndedJobs(INT64_MAX, {}, 2)), (V{"s2", "f"}));
  EXPECT_EQ(ids(store_->ListEndedJobs(INT64_MAX, {ftune::v1::JOB_STATE_SUCCEEDED}, 10)),
            (V{"s2", "s1"}));
  EXPECT_TRUE(ids(store_->ListEndedJobs(INT64_MAX, {ftune::v1::JOB_STATE_QUEUED}, 10)).empty());
}

TEST_P(StoreContractTest, RetentionDropsProgressAndLogsOfJobsEndedBeforeTheCutOff) {
  Put("old", 1, ftune::v1::JOB_STATE_SUCCEEDED, 1000);
  Put("new", 2, ftune::v1::JOB_STATE_SUCCEEDED, 5000);
  Put("live", 3, ftune::v1::JOB_STATE_RUNNING);
  auto dropped = store_->CompactEvents(absl::FromUnixSeconds(2000), 100);
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_EQ(*dropped, 4);
  auto kept = store_->ReadEvents("old", 0, 100);
  ASSERT_EQ(kept->size(), 1u);
  EXPECT_TRUE(kept->at(0).has_eval_result());
  EXPECT_EQ(store_->ReadEvents("new", 0, 100)->size(), 5u);
  EXPECT_EQ(store_->ReadEvents("live", 0, 100)->size(), 5u);
  // Done once: a second pass finds nothing left to do.
  EXPECT_EQ(*store_->CompactEvents(absl::FromUnixSeconds(2000), 100), 0);
  // At most max_jobs per pass.
  Put("a", 4, ftune::v1::JOB_STATE_FAILED, 10);
  Put("b", 5, ftune::v1::JOB_STATE_CANCELLED, 20);
  EXPECT_EQ(*store_->CompactEvents(absl::FromUnixSeconds(2000), 1), 4);
  EXPECT_EQ(*store_->CompactEvents(absl::FromUnixSeconds(2000), 1), 4);
}

// A gang's rank leases, released ones marked, come back as they were written; a one-device
// job has none.
TEST_P(StoreContractTest, RankLeasesRoundTrip) {
  JobRecord gang = Record("gang", 1);
  gang.ranks = {{"lease-0a", false}, {"lease-1b", true}, {"lease-2c", false}};
  ASSERT_TRUE(CommitOne(*store_, gang, {}).ok());
  ASSERT_TRUE(CommitOne(*store_, Record("single", 2), {}).ok());
  auto live = store_->LoadLiveJobs();
  ASSERT_TRUE(live.ok()) << live.status();
  ASSERT_EQ(live->size(), 2u);
  const JobRecord& loaded = (*live)[0];
  ASSERT_EQ(loaded.ranks.size(), 3u);
  for (size_t r = 0; r < 3; ++r) {
    EXPECT_EQ(loaded.ranks[r].lease_id, gang.ranks[r].lease_id) << "rank " << r;
    EXPECT_EQ(loaded.ranks[r].released, gang.ranks[r].released) << "rank " << r;
  }
  EXPECT_TRUE((*live)[1].ranks.empty());
  // Kept once the job ended (late completions of its ranks are checked against them).
  gang.job.set_state(ftune::v1::JOB_STATE_SUCCEEDED);
  ASSERT_TRUE(CommitOne(*store_, gang, {}).ok());
  EXPECT_EQ(store_->FindJob("gang")->ranks.size(), 3u);
  EXPECT_TRUE(store_->FindJob("gang")->ranks[1].released);
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreContractTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Sqlite" : "Memory"; });

// A database written before end times were recorded (schema 1) is migrated, and its ended
// jobs get their end time from the stored job, so retention applies to them too.
TEST(SqliteJobStoreTest, MigrationFromSchemaOneFillsInEndTimes) {
  const std::string path = DbPath();
  {
    auto store = SqliteJobStore::Open(path);
    JobRecord ended = Record("old", 1);
    ended.job.set_state(ftune::v1::JOB_STATE_SUCCEEDED);
    ended.job.mutable_end_time()->set_seconds(1000);
    ASSERT_TRUE(CommitOne(**store, ended, {Event("old", 1)}).ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "DROP INDEX jobs_state_queue_seq; DROP INDEX jobs_end_time; "
                         "ALTER TABLE jobs DROP COLUMN end_time; "
                         "ALTER TABLE jobs DROP COLUMN events_compacted; "
                         "ALTER TABLE jobs DROP COLUMN rank_leases; "
                         "UPDATE schema_version SET version = 1",
                         nullptr, nullptr, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(*(*store)->SchemaVersion(), SqliteJobStore::kSchemaVersion);
  EXPECT_EQ(*(*store)->CompactEvents(absl::FromUnixSeconds(2000), 10), 1);
}

// A database from before data-parallel jobs (schema 2) is migrated; its jobs load with no
// rank leases, and gangs written afterwards keep theirs.
TEST(SqliteJobStoreTest, MigrationFromSchemaTwoAddsRankLeases) {
  const std::string path = DbPath();
  {
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(CommitOne(**store, Record("old", 1), {Event("old", 1)}).ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "ALTER TABLE jobs DROP COLUMN rank_leases; "
                         "UPDATE schema_version SET version = 2",
                         nullptr, nullptr, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(*(*store)->SchemaVersion(), 3);
  auto old = (*store)->FindJob("old");
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->lease_id, "lease-old");
  EXPECT_TRUE(old->ranks.empty());
}

}  // namespace
}  // namespace ftune::server
