#include "server/sqlite_job_store.h"

#include <sqlite3.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"

namespace ftune::server {
namespace {

// Migration N (1-based) takes the schema from version N-1 to N. Append only; never edit one
// that has shipped.
constexpr const char* kMigrations[] = {
    // 1: jobs with their lease, events keyed by (job, seq), workers.
    R"sql(
      CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        queue_seq INTEGER NOT NULL UNIQUE,
        state INTEGER NOT NULL,
        client_request_id TEXT,
        lease_id TEXT NOT NULL DEFAULT '',
        device TEXT NOT NULL DEFAULT '',
        last_batch_id INTEGER NOT NULL DEFAULT 0,
        restarts INTEGER NOT NULL DEFAULT 0,
        job BLOB NOT NULL
      );
      CREATE UNIQUE INDEX jobs_client_request_id ON jobs(client_request_id)
        WHERE client_request_id IS NOT NULL;
      CREATE TABLE events (
        job_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event BLOB NOT NULL,
        PRIMARY KEY (job_id, seq)
      ) WITHOUT ROWID;
      CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        worker BLOB NOT NULL
      );
    )sql",
    // 2: only live jobs stay in the controller's memory, so ended ones are listed from here;
    // event retention compacts jobs by end time (Unix seconds; filled in for old rows by
    // BackfillEndTimes).
    R"sql(
      ALTER TABLE jobs ADD COLUMN end_time INTEGER;
      ALTER TABLE jobs ADD COLUMN events_compacted INTEGER NOT NULL DEFAULT 0;
      CREATE INDEX jobs_state_queue_seq ON jobs(state, queue_seq);
      CREATE INDEX jobs_end_time ON jobs(end_time) WHERE end_time IS NOT NULL;
    )sql",
    // 3: data-parallel jobs hold one lease per rank (see EncodeRankLeases).
    R"sql(
      ALTER TABLE jobs ADD COLUMN rank_leases TEXT NOT NULL DEFAULT '';
    )sql",
};
constexpr int kMigrationCount = sizeof(kMigrations) / sizeof(kMigrations[0]);
static_assert(kMigrationCount == SqliteJobStore::kSchemaVersion);

// Resets a statement for reuse when it goes out of scope.
class StatementReset {
 public:
  explicit StatementReset(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~StatementReset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

 private:
  sqlite3_stmt* stmt_;
};

void BindText(sqlite3_stmt* stmt, int index, const std::string& text) {
  sqlite3_bind_text(stmt, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
}

void BindBlob(sqlite3_stmt* stmt, int index, const std::string& blob) {
  sqlite3_bind_blob(stmt, index, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
}

std::string ColumnBytes(sqlite3_stmt* stmt, int column) {
  const void* data = sqlite3_column_blob(stmt, column);
  const int size = sqlite3_column_bytes(stmt, column);
  return data == nullptr ? std::string() : std::string(static_cast<const char*>(data), size);
}

constexpr absl::string_view kReleased = ":released";

// A gang's rank leases as one column: the lease ids by rank, comma-separated, a rank that
// already gave its device back marked ":released" ("lease-1a..,lease-2b..:released"); empty
// for one-device jobs. Lease ids are "lease-" and hex digits, so neither mark can occur in one.
std::string EncodeRankLeases(const std::vector<RankLease>& ranks) {
  std::vector<std::string> parts;
  for (const RankLease& rank : ranks) {
    parts.push_back(absl::StrCat(rank.lease_id, rank.released ? kReleased : ""));
  }
  return absl::StrJoin(parts, ",");
}

std::vector<RankLease> DecodeRankLeases(const std::string& text) {
  std::vector<RankLease> ranks;
  if (text.empty()) return ranks;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    RankLease& rank = ranks.emplace_back();
    rank.released = absl::ConsumeSuffix(&part, kReleased);
    rank.lease_id = std::string(part);
  }
  return ranks;
}

}  // namespace

absl::Status SqliteJobStore::Error(const char* what) const {
  return absl::InternalError(
      absl::StrCat("database ", path_, ": ", what, ": ", sqlite3_errmsg(db_)));
}

absl::Status SqliteJobStore::Exec(const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    absl::Status status = absl::InternalError(absl::StrCat(
        "database ", path_, ": ", message == nullptr ? "error" : message, " (in: ", sql, ")"));
    sqlite3_free(message);
    return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SqliteJobStore>> SqliteJobStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                     SQLITE_OPEN_FULLMUTEX,
                                 nullptr);
  std::unique_ptr<SqliteJobStore> store(new SqliteJobStore(db, path));
  if (rc != SQLITE_OK) {
    return absl::UnavailableError(absl::StrCat("cannot open database ", path, ": ",
                                               db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
  }
  sqlite3_busy_timeout(db, 5000);
  RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL"));
  // FULL: every commit is fsynced before it returns, so what we acknowledged is durable.
  RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=FULL"));
  RETURN_IF_ERROR(store->Migrate());
  RETURN_IF_ERROR(store->Prepare());
  return store;
}

SqliteJobStore::~SqliteJobStore() {
  for (sqlite3_stmt* stmt : {upsert_job_, insert_event_, read_events_, upsert_worker_}) {
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db_);
}

absl::StatusOr<int> SqliteJobStore::SchemaVersion() {
  std::lock_guard<std::mutex> lock(mu_);
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT version FROM schema_version", -1, &stmt, nullptr) !=
      SQLITE_OK) {
    return Error("read schema version");
  }
  int version = 0;
  if (sqlite3_step(stmt) == SQLITE_ROW) version = sqlite3_column_int(stmt, 0);
  sqlite3_finalize(stmt);
  return version;
}

absl::Status SqliteJobStore::Migrate() {
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto rollback_on_error = [this](absl::Status status) {
    if (!status.ok()) Exec("ROLLBACK").IgnoreError();
    return status;
  };
  absl::Status status = Exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
  if (!status.ok()) return rollback_on_error(status);
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT version FROM schema_version", -1, &stmt, nullptr) !=
      SQLITE_OK) {
    return rollback_on_error(Error("read schema version"));
  }
  int version = 0;
  bool has_row = false;
  if (sqlite3_step(stmt) == SQLITE_ROW) {
    version = sqlite3_column_int(stmt, 0);
    has_row = true;
  }
  sqlite3_finalize(stmt);
  if (version > kSchemaVersion) {
    return rollback_on_error(absl::FailedPreconditionError(absl::StrCat(
        "database ", path_, " has schema version ", version, ", newer than this ftcontroller's ",
        kSchemaVersion, "; run a newer ftcontroller")));
  }
  for (int v = version; v < kSchemaVersion; ++v) {
    status = Exec(kMigrations[v]);
    if (!status.ok()) return rollback_on_error(status);
  }
  if (version < 2) {
    status = BackfillEndTimes();
    if (!status.ok()) return rollback_on_error(status);
  }
  if (!has_row) {
    status = Exec(absl::StrCat("INSERT INTO schema_version (version) VALUES (", kSchemaVersion,
                               ")").c_str());
  } else if (version != kSchemaVersion) {
    status = Exec(absl::StrCat("UPDATE schema_version SET version = ", kSchemaVersion).c_str());
  }
  if (!status.ok()) return rollback_on_error(status);
  return Exec("COMMIT");
}

absl::Status SqliteJobStore::BackfillEndTimes() {
  ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, QueryJobs("", [](sqlite3_stmt*) {}));
  for (const JobRecord& record : jobs) {
    if (!IsEndedState(record.job.state())) continue;
    RETURN_IF_ERROR(Exec(absl::StrCat("UPDATE jobs SET end_time = ",
                                      record.job.end_time().seconds(), " WHERE queue_seq = ",
                                      record.queue_seq)
                             .c_str()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<JobRecord>> SqliteJobStore::QueryJobs(
    const std::string& where_and_order, const std::function<void(sqlite3_stmt*)>& bind) {
  const std::string sql = absl::StrCat(
      "SELECT id, queue_seq, lease_id, device, last_batch_id, restarts, job, rank_leases "
      "FROM jobs ",
      where_and_order);
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
    return Error("read jobs");
  }
  bind(stmt);
  std::vector<JobRecord> out;
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    JobRecord record;
    record.queue_seq = sqlite3_column_int64(stmt, 1);
    record.lease_id = ColumnBytes(stmt, 2);
    record.device = ColumnBytes(stmt, 3);
    record.last_batch_id = static_cast<uint64_t>(sqlite3_column_int64(stmt, 4));
    record.restarts = static_cast<uint32_t>(sqlite3_column_int64(stmt, 5));
    record.ranks = DecodeRankLeases(ColumnBytes(stmt, 7));
    if (!record.job.ParseFromString(ColumnBytes(stmt, 6))) {
      const std::string id = ColumnBytes(stmt, 0);
      sqlite3_finalize(stmt);
      return absl::DataLossError(absl::StrCat("database ", path_, ": job ", id, " is corrupt"));
    }
    out.push_back(std::move(record));
  }
  sqlite3_finalize(stmt);
  if (rc != SQLITE_DONE) return Error("read jobs");
  return out;
}

absl::Status SqliteJobStore::Prepare() {
  struct {
    sqlite3_stmt** stmt;
    const char* sql;
  } statements[] = {
      {&upsert_job_,
       "INSERT OR REPLACE INTO jobs (id, queue_seq, state, client_request_id, lease_id, device, "
       "last_batch_id, restarts, job, end_time, rank_leases) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
       "?7, ?8, ?9, ?10, ?11)"},
      {&insert_event_, "INSERT INTO events (job_id, seq, event) VALUES (?1, ?2, ?3)"},
      {&read_events_,
       "SELECT event FROM events WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"},
      {&upsert_worker_, "INSERT OR REPLACE INTO workers (id, worker) VALUES (?1, ?2)"},
  };
  for (auto& s : statements) {
    if (sqlite3_prepare_v2(db_, s.sql, -1, s.stmt, nullptr) != SQLITE_OK) {
      return Error("prepare statement");
    }
  }
  return absl::OkStatus();
}

absl::Status SqliteJobStore::Commit(const StoreBatch& batch) {
  if (batch.empty()) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [this](absl::Status status) {
    Exec("ROLLBACK").IgnoreError();
    return status;
  };
  // A job changed several times in one batch is written once, as it ended up.
  std::map<std::string, const JobRecord*> newest;
  for (const JobWrite& write : batch.jobs) newest[write.record.job.id()] = &write.record;
  for (const auto& [id, record] : newest) {
    StatementReset reset(upsert_job_);
    BindText(upsert_job_, 1, id);
    sqlite3_bind_int64(upsert_job_, 2, record->queue_seq);
    sqlite3_bind_int(upsert_job_, 3, record->job.state());
    if (record->job.spec().client_request_id().empty()) {
      sqlite3_bind_null(upsert_job_, 4);
    } else {
      BindText(upsert_job_, 4, record->job.spec().client_request_id());
    }
    BindText(upsert_job_, 5, record->lease_id);
    BindText(upsert_job_, 6, record->device);
    sqlite3_bind_int64(upsert_job_, 7, static_cast<int64_t>(record->last_batch_id));
    sqlite3_bind_int64(upsert_job_, 8, record->restarts);
    BindBlob(upsert_job_, 9, record->job.SerializeAsString());
    if (IsEndedState(record->job.state())) {
      sqlite3_bind_int64(upsert_job_, 10, record->job.end_time().seconds());
    } else {
      sqlite3_bind_null(upsert_job_, 10);
    }
    BindText(upsert_job_, 11, EncodeRankLeases(record->ranks));
    if (sqlite3_step(upsert_job_) != SQLITE_DONE) return fail(Error("write job"));
  }
  for (const JobWrite& write : batch.jobs) {
    for (const auto& event : write.events) {
      StatementReset reset(insert_event_);
      BindText(insert_event_, 1, write.record.job.id());
      sqlite3_bind_int64(insert_event_, 2, event.seq());
      BindBlob(insert_event_, 3, event.SerializeAsString());
      if (sqlite3_step(insert_event_) != SQLITE_DONE) return fail(Error("write event"));
    }
  }
  for (const auto& worker : batch.workers) {
    StatementReset reset(upsert_worker_);
    BindText(upsert_worker_, 1, worker.id());
    BindBlob(upsert_worker_, 2, worker.SerializeAsString());
    if (sqlite3_step(upsert_worker_) != SQLITE_DONE) return fail(Error("write worker"));
  }
  absl::Status committed = Exec("COMMIT");
  if (!committed.ok()) return fail(committed);
  return absl::OkStatus();
}

namespace {

// The ended states as an SQL list: "(4, 5, 6)".
std::string EndedStatesSql() {
  std::vector<std::string> states;
  for (int s = ftune::v1::JobState_MIN; s <= ftune::v1::JobState_MAX; ++s) {
    if (ftune::v1::JobState_IsValid(s) && IsEndedState(static_cast<ftune::v1::JobState>(s))) {
      states.push_back(absl::StrCat(s));
    }
  }
  return absl::StrCat("(", absl::StrJoin(states, ", "), ")");
}

}  // namespace

absl::StatusOr<std::vector<JobRecord>> SqliteJobStore::LoadLiveJobs() {
  std::lock_guard<std::mutex> lock(mu_);
  return QueryJobs(absl::StrCat("WHERE state NOT IN ", EndedStatesSql(), " ORDER BY queue_seq"),
                   [](sqlite3_stmt*) {});
}

absl::StatusOr<StoreSummary> SqliteJobStore::Summarize() {
  std::lock_guard<std::mutex> lock(mu_);
  StoreSummary summary;
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_,
                         absl::StrCat("SELECT state, COUNT(*) FROM jobs WHERE state IN ",
                                      EndedStatesSql(), " GROUP BY state")
                             .c_str(),
                         -1, &stmt, nullptr) != SQLITE_OK) {
    return Error("count jobs");
  }
  while (sqlite3_step(stmt) == SQLITE_ROW) {
    summary.ended[static_cast<ftune::v1::JobState>(sqlite3_column_int(stmt, 0))] =
        sqlite3_column_int64(stmt, 1);
  }
  sqlite3_finalize(stmt);
  if (sqlite3_prepare_v2(db_, "SELECT COALESCE(MAX(queue_seq), 0) FROM jobs", -1, &stmt,
                         nullptr) != SQLITE_OK) {
    return Error("count jobs");
  }
  if (sqlite3_step(stmt) == SQLITE_ROW) summary.max_queue_seq = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  return summary;
}

absl::StatusOr<JobRecord> SqliteJobStore::FindJob(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(std::vector<JobRecord> found,
                   QueryJobs("WHERE id = ?1", [&](sqlite3_stmt* s) { BindText(s, 1, job_id); }));
  if (found.empty()) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  return std::move(found.front());
}

absl::StatusOr<JobRecord> SqliteJobStore::FindJobByRequestId(const std::string& request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(std::vector<JobRecord> found,
                   QueryJobs("WHERE client_request_id = ?1",
                             [&](sqlite3_stmt* s) { BindText(s, 1, request_id); }));
  if (found.empty()) {
    return absl::NotFoundError(absl::StrCat("no job with client_request_id ", request_id));
  }
  return std::move(found.front());
}

absl::StatusOr<std::vector<JobRecord>> SqliteJobStore::ListEndedJobs(
    int64_t before_queue_seq, const std::set<ftune::v1::JobState>& states, int limit) {
  std::string in = EndedStatesSql();
  if (!states.empty()) {
    std::vector<std::string> wanted;
    for (ftune::v1::JobState state : states) {
      if (IsEndedState(state)) wanted.push_back(absl::StrCat(static_cast<int>(state)));
    }
    if (wanted.empty()) return std::vector<JobRecord>();
    in = absl::StrCat("(", absl::StrJoin(wanted, ", "), ")");
  }
  std::lock_guard<std::mutex> lock(mu_);
  return QueryJobs(absl::StrCat("WHERE state IN ", in,
                                " AND queue_seq < ?1 ORDER BY queue_seq DESC LIMIT ?2"),
                   [&](sqlite3_stmt* s) {
                     sqlite3_bind_int64(s, 1, before_queue_seq);
                     sqlite3_bind_int(s, 2, limit);
                   });
}

absl::StatusOr<int64_t> SqliteJobStore::CompactEvents(absl::Time ended_before, int max_jobs) {
  std::lock_guard<std::mutex> lock(mu_);
  // Which jobs, then which of their events: read first, then delete in one transaction.
  std::vector<std::string> jobs;
  {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_,
                           "SELECT id FROM jobs WHERE end_time IS NOT NULL AND end_time < ?1 "
                           "AND events_compacted = 0 ORDER BY end_time LIMIT ?2",
                           -1, &stmt, nullptr) != SQLITE_OK) {
      return Error("find jobs to compact");
    }
    sqlite3_bind_int64(stmt, 1, absl::ToUnixSeconds(ended_before));
    sqlite3_bind_int(stmt, 2, max_jobs);
    while (sqlite3_step(stmt) == SQLITE_ROW) jobs.push_back(ColumnBytes(stmt, 0));
    sqlite3_finalize(stmt);
  }
  if (jobs.empty()) return 0;
  std::vector<std::pair<std::string, int64_t>> drop;  // (job, seq)
  for (const std::string& id : jobs) {
    StatementReset reset(read_events_);
    BindText(read_events_, 1, id);
    sqlite3_bind_int64(read_events_, 2, 0);
    sqlite3_bind_int(read_events_, 3, -1);  // no limit
    int rc;
    while ((rc = sqlite3_step(read_events_)) == SQLITE_ROW) {
      ftune::v1::JobEvent event;
      // A corrupt event is kept: retention must not hide it from whoever investigates.
      if (event.ParseFromString(ColumnBytes(read_events_, 0)) &&
          (event.has_train_progress() || event.has_log())) {
        drop.emplace_back(id, event.seq());
      }
    }
    if (rc != SQLITE_DONE) return Error("read events to compact");
  }
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [this](absl::Status status) {
    Exec("ROLLBACK").IgnoreError();
    return status;
  };
  sqlite3_stmt* del = nullptr;
  sqlite3_stmt* mark = nullptr;
  if (sqlite3_prepare_v2(db_, "DELETE FROM events WHERE job_id = ?1 AND seq = ?2", -1, &del,
                         nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(db_, "UPDATE jobs SET events_compacted = 1 WHERE id = ?1", -1, &mark,
                         nullptr) != SQLITE_OK) {
    sqlite3_finalize(del);
    return fail(Error("compact events"));
  }
  absl::Status status;
  for (const auto& [id, seq] : drop) {
    StatementReset reset(del);
    BindText(del, 1, id);
    sqlite3_bind_int64(del, 2, seq);
    if (sqlite3_step(del) != SQLITE_DONE) status = Error("compact events");
  }
  for (const std::string& id : jobs) {
    StatementReset reset(mark);
    BindText(mark, 1, id);
    if (sqlite3_step(mark) != SQLITE_DONE) status = Error("compact events");
  }
  sqlite3_finalize(del);
  sqlite3_finalize(mark);
  if (!status.ok()) return fail(status);
  absl::Status committed = Exec("COMMIT");
  if (!committed.ok()) return fail(committed);
  return static_cast<int64_t>(drop.size());
}

absl::StatusOr<std::vector<ftune::v1::JobEvent>> SqliteJobStore::ReadEvents(
    const std::string& job_id, int64_t after_seq, int limit) {
  std::lock_guard<std::mutex> lock(mu_);
  StatementReset reset(read_events_);
  BindText(read_events_, 1, job_id);
  sqlite3_bind_int64(read_events_, 2, after_seq);
  sqlite3_bind_int(read_events_, 3, limit);
  std::vector<ftune::v1::JobEvent> out;
  int rc;
  while ((rc = sqlite3_step(read_events_)) == SQLITE_ROW) {
    ftune::v1::JobEvent event;
    if (!event.ParseFromString(ColumnBytes(read_events_, 0))) {
      return absl::DataLossError(
          absl::StrCat("database ", path_, ": an event of job ", job_id, " is corrupt"));
    }
    out.push_back(std::move(event));
  }
  if (rc != SQLITE_DONE) return Error("read events");
  return out;
}

absl::StatusOr<std::vector<ftune::v1::Worker>> SqliteJobStore::LoadWorkers() {
  std::lock_guard<std::mutex> lock(mu_);
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT id, worker FROM workers ORDER BY id", -1, &stmt,
                         nullptr) != SQLITE_OK) {
    return Error("read workers");
  }
  std::vector<ftune::v1::Worker> out;
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    ftune::v1::Worker worker;
    if (!worker.ParseFromString(ColumnBytes(stmt, 1))) {
      const std::string id = ColumnBytes(stmt, 0);
      sqlite3_finalize(stmt);
      return absl::DataLossError(absl::StrCat("database ", path_, ": worker ", id, " is corrupt"));
    }
    out.push_back(std::move(worker));
  }
  sqlite3_finalize(stmt);
  if (rc != SQLITE_DONE) return Error("read workers");
  return out;
}

}  // namespace ftune::server
