// JobStore on SQLite: WAL journal with synchronous=FULL, so a commit that returned is on disk
// (acknowledged work survives kill -9 and power loss). Versioned schema, migrated on open.
// The schema is described in docs/controller.md.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "server/job_store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace ftune::server {

class SqliteJobStore final : public JobStore {
 public:
  // Newest schema version this build writes.
  static constexpr int kSchemaVersion = 3;

  // Opens (creating if needed) the database file at `path` and migrates it to
  // kSchemaVersion. FailedPrecondition when the file was written by a newer ftcontroller.
  static absl::StatusOr<std::unique_ptr<SqliteJobStore>> Open(const std::string& path);
  ~SqliteJobStore() override;

  absl::Status Commit(const StoreBatch& batch) override;
  absl::StatusOr<std::vector<JobRecord>> LoadLiveJobs() override;
  absl::StatusOr<StoreSummary> Summarize() override;
  absl::StatusOr<JobRecord> FindJob(const std::string& job_id) override;
  absl::StatusOr<JobRecord> FindJobByRequestId(const std::string& request_id) override;
  absl::StatusOr<std::vector<JobRecord>> ListEndedJobs(int64_t before_queue_seq,
                                                       const std::set<ftune::v1::JobState>& states,
                                                       int limit) override;
  absl::StatusOr<int64_t> CompactEvents(absl::Time ended_before, int max_jobs) override;
  absl::StatusOr<std::vector<ftune::v1::JobEvent>> ReadEvents(const std::string& job_id,
                                                              int64_t after_seq,
                                                              int limit) override;
  absl::StatusOr<std::vector<ftune::v1::Worker>> LoadWorkers() override;

  // Schema version recorded in the file.
  absl::StatusOr<int> SchemaVersion();

 private:
  explicit SqliteJobStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  absl::Status Migrate();
  absl::Status Prepare();
  absl::Status BackfillEndTimes();
  // SELECTs job rows with `where_and_order` after the FROM, parameters bound by `bind`.
  absl::StatusOr<std::vector<JobRecord>> QueryJobs(
      const std::string& where_and_order, const std::function<void(sqlite3_stmt*)>& bind);
  absl::Status Exec(const char* sql);
  absl::Status Error(const char* what) const;

  std::mutex mu_;
  sqlite3* db_ = nullptr;
  std::string path_;
  sqlite3_stmt* upsert_job_ = nullptr;
  sqlite3_stmt* insert_event_ = nullptr;
  sqlite3_stmt* read_events_ = nullptr;
  sqlite3_stmt* upsert_worker_ = nullptr;
};

}  // namespace ftune::server
