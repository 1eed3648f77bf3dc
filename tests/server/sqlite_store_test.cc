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

TEST(SqliteJobStoreTest, CommitsSurviveReopen) {
  const std::string path = DbPath();
  {
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Commit(Record("b", 2), {Event("b", 1)}).ok());
    ASSERT_TRUE((*store)->Commit(Record("a", 1), {Event("a", 1), Event("a", 2)}).ok());
    ftune::v1::Worker w;
    w.set_id("w1");
    w.add_devices()->set_name("cpu");
    ASSERT_TRUE((*store)->PutWorker(w).ok());
  }
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok());
  auto jobs = (*store)->LoadJobs();
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
  ASSERT_TRUE((*store)->Commit(Record("a", 1), {Event("a", 1)}).ok());
  JobRecord changed = Record("a", 1);
  changed.job.set_state(ftune::v1::JOB_STATE_FAILED);
  EXPECT_FALSE((*store)->Commit(changed, {Event("a", 2), Event("a", 1)}).ok());
  EXPECT_EQ((*store)->LoadJobs()->at(0).job.state(), ftune::v1::JOB_STATE_RUNNING);
  EXPECT_EQ((*store)->ReadEvents("a", 0, 100)->size(), 1u);
  // Still usable afterwards.
  EXPECT_TRUE((*store)->Commit(changed, {Event("a", 2)}).ok());
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

}  // namespace
}  // namespace ftune::server
