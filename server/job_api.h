// The REST face of JobService on ftcontroller's HTTP server (the same tokens and scopes as
// gRPC; messages in protobuf JSON with the proto field names):
//
//   GET  /api/v1/jobs?state=running,queued&limit=N&page_token=T   ListJobsResponse
//   GET  /api/v1/jobs/{id}                                         Job
//   POST /api/v1/jobs            body: a JobSpec                   SubmitJobResponse (201 new)
//   POST /api/v1/jobs/{id}:cancel  body: {"reason": "..."} or none  Job (409 once ended)
//   GET  /api/v1/workers                                           ListWorkersResponse
//   GET  /api/v1/jobs/{id}/events?after_seq=N                      text/event-stream
//
// The event stream is WatchJob as Server-Sent Events: one `id: SEQ` + `data: JobEvent` frame
// per event, so a browser's EventSource resumes after a reconnect with Last-Event-ID (which
// wins over after_seq) exactly where it left off. It ends with `event: end` after the job's
// last event, or `event: error` (shutdown, a watcher that fell behind) whose data names the
// seq to resume after; `: keep-alive` comments flow while nothing happens so a client that
// left is noticed. GET /api/v1/jobs/{id}/events?before_seq=S&limit=N answers a page of
// events as JSON instead ({"events": [...]}), for pages that look back.
#pragma once

#include <vector>

#include "absl/time/time.h"
#include "common/http_server.h"
#include "server/job_manager.h"

namespace ftune::server {

struct JobApiOptions {
  // A comment is sent on a quiet event stream this often.
  absl::Duration keep_alive = absl::Seconds(15);
};

// `manager` must outlive the server the routes are installed in.
std::vector<HttpRoute> JobApiRoutes(JobManager* manager, JobApiOptions options = {});

// The ListJobs request a query asks for: state (names as ftctl takes them or as the JSON
// spells them, comma separated), limit (1..1000, default 50) and page_token.
absl::StatusOr<ftune::v1::ListJobsRequest> ListJobsQuery(const HttpRequest& request);

// The events of `job_id` with after_seq < seq <= after_seq + limit, from the replay of a
// watch (the store's order).
absl::StatusOr<std::vector<ftune::v1::JobEvent>> ReadJobEvents(JobManager* manager,
                                                               const std::string& job_id,
                                                               int64_t after_seq, int limit);

}  // namespace ftune::server
