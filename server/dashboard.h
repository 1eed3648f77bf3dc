// ftcontroller's web pages on --http-listen, beside the REST job API (server/job_api.h) whose
// event stream they follow. Server-rendered HTML and a little plain script; nothing is
// fetched from anywhere else.
//
//   /                 jobs: state, progress, best metric, worker; ?state=running filters;
//                     the table refreshes itself every few seconds
//   /jobs/{id}        the job page of common/report.h (the same renderer as `ftctl report`),
//                     live: sections re-rendered here as the job's events arrive, the event
//                     log's newest page with "load earlier", a cancel button
//   /workers          devices, leased jobs, last heartbeat
//   /login, /logout   the session cookie (below)
//
// Tokens. A browser cannot put `Authorization: Bearer` on a page load, so with --tokens the
// pages take the token from the HttpOnly, SameSite=Strict session cookie `ftune_token`
// (Secure over TLS), set by POSTing the token once to /login. Scripts never see the token;
// their fetches and the EventSource send the cookie, and their writes (cancel) add the
// X-Requested-With header that HttpServer requires of cookie-authorized writes, which a page
// of another site cannot send. A page without a valid token is refused with 401 (403 for a
// token without the client scope) and the login form. The token is never put in a URL, so it
// does not end up in histories or access logs. A token that may see the pages may cancel
// (JobService's CancelJob needs the same client scope), so the job page shows the button
// until the job ends.
//
// Long histories. The job page folds events into a JobReport once and keeps it (for the
// dashboard_cached_reports most recently viewed jobs), so a refresh reads only new events;
// curves are drawn from at most 1000 points per series and the event log is paged
// (kEventLogPage rows at a time), so a job with 100k events gives a page of ~100 kB.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/auth.h"
#include "common/http_server.h"
#include "common/report.h"
#include "server/job_manager.h"

namespace ftune::server {

inline constexpr char kSessionCookie[] = "ftune_token";

struct DashboardOptions {
  // The controller's tokens; null = none needed (no login).
  std::shared_ptr<const TokenStore> tokens;
  // The session cookie gets Secure (the server speaks TLS).
  bool secure_cookie = false;
  // Jobs whose folded events are kept between page loads.
  size_t cached_reports = 64;
};

class Dashboard {
 public:
  // `manager` must outlive the dashboard, and the dashboard the server its routes are in.
  Dashboard(JobManager* manager, DashboardOptions options);

  std::vector<HttpRoute> Routes();
  // HttpServerOptions::page_error: the login form, with the status' code.
  HttpResponse PageError(const HttpRequest& request, const absl::Status& status) const;

 private:
  struct Cached {
    std::mutex mu;
    JobReport report;
    uint64_t used = 0;
  };

  absl::StatusOr<HttpResponse> JobsPage(const HttpRequest& request) const;
  absl::StatusOr<HttpResponse> JobPage(const HttpRequest& request);
  absl::StatusOr<HttpResponse> JobSections(const HttpRequest& request);
  absl::StatusOr<HttpResponse> JobLog(const HttpRequest& request) const;
  absl::StatusOr<HttpResponse> WorkersPage(const HttpRequest& request) const;
  HttpResponse LoginPage(const HttpRequest& request) const;
  HttpResponse Login(const HttpRequest& request) const;
  HttpResponse Logout(const HttpRequest& request) const;

  // The cached report of `job_id` with every event up to job.last_event_seq() folded in; runs
  // `render` with the job and the report while no other request changes that report.
  absl::StatusOr<std::string> WithReport(
      const std::string& job_id,
      const std::function<std::string(const ftune::v1::Job&, const JobReport&)>& render);
  // The newest kEventLogPage events before `before_seq`, newest first.
  absl::StatusOr<std::vector<ftune::v1::JobEvent>> EventPage(const std::string& job_id,
                                                             int64_t before_seq) const;

  JobManager* const manager_;
  const DashboardOptions options_;
  const Authorizer authorizer_;

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Cached>> reports_;
  uint64_t clock_ = 0;
};

}  // namespace ftune::server
