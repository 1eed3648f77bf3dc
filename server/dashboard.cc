#include "server/dashboard.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/job_format.h"
#include "common/job_spec_flags.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/job_api.h"

namespace ftune::server {
namespace {

namespace v1 = ::ftune::v1;

HttpResponse Html(std::string body, int status = 200) {
  HttpResponse response;
  response.status = status;
  response.content_type = "text/html; charset=utf-8";
  response.body = std::move(body);
  // Pages show live state: never from a cache, and never inside another site's frame.
  response.headers = {{"Cache-Control", "no-store"},
                      {"X-Frame-Options", "DENY"},
                      {"Content-Security-Policy",
                       "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                       "style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"}};
  return response;
}

// A dashboard page around `content`; `script` runs at the end.
std::string Page(const std::string& title, const std::string& content,
                 const std::string& script = "") {
  return absl::StrCat(
      "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>\n<title>ftune: ",
      HtmlEscape(title), "</title>\n<style>", PageStyle(), "</style></head><body>\n",
      "<nav><a href=\"/\">jobs</a><a href=\"/workers\">workers</a><span id=live></span></nav>\n",
      content, script.empty() ? "" : absl::StrCat("<script>", script, "</script>\n"),
      "</body></html>\n");
}

// Replaces the element `id` with the same element of a fresh copy of the page every
// `seconds`, so the table stays live without a second renderer in script.
std::string RefreshScript(const std::string& id, int seconds) {
  return absl::StrCat(R"js(
setInterval(async () => {
  try {
    const reply = await fetch(location.href, {credentials: 'same-origin'});
    if (!reply.ok) throw new Error('HTTP ' + reply.status);
    const fresh = new DOMParser().parseFromString(await reply.text(), 'text/html');
    document.getElementById(')js",
                      id, R"js(').replaceWith(fresh.getElementById(')js", id, R"js('));
    document.getElementById('live').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById('live').textContent = 'update failed: ' + e.message;
  }
}, )js",
                      seconds * 1000, ");\n");
}

std::string JobLink(const std::string& id) {
  return absl::StrCat("<a href=\"/jobs/", HtmlEscape(id), "\">", HtmlEscape(id), "</a>");
}

std::string BestMetric(const v1::Job& job) {
  if (!job.best_metric_name().empty()) {
    return absl::StrFormat("%s %.4f", job.best_metric_name(), job.best_metric());
  }
  if (job.last_accuracy() > 0) return absl::StrFormat("accuracy %.1f%%", 100 * job.last_accuracy());
  return "-";
}

std::string ProgressCell(const v1::Job& job) {
  if (job.total_steps() <= 0) return "-";
  const double share = std::clamp(static_cast<double>(job.step()) / job.total_steps(), 0.0, 1.0);
  return absl::StrFormat(
      "<div class=bar style=\"width:120px\"><div style=\"width:%.1f%%\"></div></div>%d/%d",
      100 * share, job.step(), job.total_steps());
}

// Only paths of this server: "/jobs/x", never "//evil.example" or "https://...".
std::string SafeNext(const std::string& next) {
  if (!absl::StartsWith(next, "/") || absl::StartsWith(next, "//") ||
      absl::StrContains(next, "\\")) {
    return "/";
  }
  return next;
}

// Cookie values cannot hold spaces, quotes, commas, semicolons or backslashes.
bool CookieSafe(const std::string& token) {
  return !token.empty() && std::all_of(token.begin(), token.end(), [](char c) {
    return absl::ascii_isgraph(static_cast<unsigned char>(c)) && c != '"' && c != ',' && c != ';' &&
           c != '\\';
  });
}

// The newest events first.
std::vector<v1::JobEvent> Reversed(std::vector<v1::JobEvent> events) {
  std::reverse(events.begin(), events.end());
  return events;
}

}  // namespace

Dashboard::Dashboard(JobManager* manager, DashboardOptions options)
    : manager_(manager), options_(std::move(options)), authorizer_(options_.tokens) {}

std::vector<HttpRoute> Dashboard::Routes() {
  // Pages answer errors as pages, their scripts' fetches as JSON.
  auto page = [this](auto method) {
    return [this, method](const HttpRequest& request) {
      absl::StatusOr<HttpResponse> response = (this->*method)(request);
      if (response.ok()) return std::move(*response);
      const absl::Status& status = response.status();
      return Html(Page("error", absl::StrCat("<h1>", HttpStatusFor(status.code()), "</h1><p>",
                                             HtmlEscape(std::string(status.message())), "</p>")),
                  HttpStatusFor(status.code()));
    };
  };
  auto json = [this](auto method) {
    return [this, method](const HttpRequest& request) {
      absl::StatusOr<HttpResponse> response = (this->*method)(request);
      return response.ok() ? std::move(*response) : ErrorResponse(response.status());
    };
  };
  std::vector<HttpRoute> routes = {
      {"GET", "/", Scope::kClient, page(&Dashboard::JobsPage), true},
      {"GET", "/jobs/([^/]+)", Scope::kClient, page(&Dashboard::JobPage), true},
      {"GET", "/jobs/([^/]+)/sections", Scope::kClient, json(&Dashboard::JobSections)},
      {"GET", "/jobs/([^/]+)/log", Scope::kClient, json(&Dashboard::JobLog)},
      {"GET", "/workers", Scope::kClient, page(&Dashboard::WorkersPage), true},
      {"GET", "/login", Scope::kNone, [this](const HttpRequest& r) { return LoginPage(r); }},
      {"POST", "/login", Scope::kNone, [this](const HttpRequest& r) { return Login(r); }},
      {"POST", "/logout", Scope::kNone, [this](const HttpRequest& r) { return Logout(r); }},
  };
  return routes;
}

// --- pages ---

absl::StatusOr<HttpResponse> Dashboard::JobsPage(const HttpRequest& request) const {
  ASSIGN_OR_RETURN(v1::ListJobsRequest list, ListJobsQuery(request));
  if (request.query.count("limit") == 0) list.set_page_size(200);
  ASSIGN_OR_RETURN(const v1::ListJobsResponse jobs, manager_->ListJobs(list));
  const auto filter = request.query.find("state");
  const std::string current = filter == request.query.end() ? "" : filter->second;
  std::string html = "<h1>Jobs</h1>\n<p>";
  for (const char* state :
       {"", "queued", "running", "cancelling", "succeeded", "failed", "cancelled"}) {
    const std::string label = *state ? state : "all";
    if (current == state) {
      absl::StrAppend(&html, "<b>", label, "</b> ");
    } else {
      absl::StrAppend(&html, "<a href=\"/", *state ? absl::StrCat("?state=", state) : "", "\">",
                      label, "</a> ");
    }
  }
  absl::StrAppend(&html,
                  "</p>\n<table class=jobs id=jobs><tr><th>job</th><th>name</th><th>state</th>"
                  "<th>progress</th><th>best metric</th><th>worker</th><th>created</th></tr>\n");
  for (const v1::Job& job : jobs.jobs()) {
    const std::string state = StateLabel(job.state());
    absl::StrAppend(&html, "<tr><td>", JobLink(job.id()), "</td><td>",
                    HtmlEscape(job.spec().name()), "</td><td class=\"state-", state, "\">", state,
                    "</td><td>", ProgressCell(job), "</td><td>", HtmlEscape(BestMetric(job)),
                    "</td><td>", HtmlEscape(job.worker_id().empty() ? "-" : job.worker_id()),
                    "</td><td>", FormatTime(job.create_time()), "</td></tr>\n");
  }
  if (jobs.jobs_size() == 0) html += "<tr><td colspan=7 class=sub>no jobs</td></tr>\n";
  html += "</table>\n";
  if (!jobs.next_page_token().empty()) {
    html += "<p class=sub>older jobs: GET /api/v1/jobs?page_token=" +
            HtmlEscape(jobs.next_page_token()) + "</p>\n";
  }
  return Html(Page("jobs", html, RefreshScript("jobs", 2)));
}

absl::StatusOr<std::string> Dashboard::WithReport(
    const std::string& job_id,
    const std::function<std::string(const v1::Job&, const JobReport&)>& render) {
  ASSIGN_OR_RETURN(const v1::Job job, manager_->GetJob(job_id));
  std::shared_ptr<Cached> cached;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::shared_ptr<Cached>& slot = reports_[job_id];
    if (slot == nullptr) slot = std::make_shared<Cached>();
    slot->used = ++clock_;
    cached = slot;
    if (reports_.size() > options_.cached_reports) {
      auto oldest = std::min_element(
          reports_.begin(), reports_.end(),
          [](const auto& a, const auto& b) { return a.second->used < b.second->used; });
      reports_.erase(oldest);  // never the one just used
    }
  }
  std::lock_guard<std::mutex> lock(cached->mu);
  JobReport& report = cached->report;
  // Up to the job's seq as read above, so the page's state and its events agree.
  while (report.last_seq() < job.last_event_seq()) {
    const int64_t want = std::min<int64_t>(job.last_event_seq() - report.last_seq(), 4096);
    ASSIGN_OR_RETURN(const std::vector<v1::JobEvent> events,
                     ReadJobEvents(manager_, job_id, report.last_seq(), static_cast<int>(want)));
    if (events.empty()) break;
    for (const v1::JobEvent& event : events) report.Add(event);
  }
  return render(job, report);
}

absl::StatusOr<std::vector<v1::JobEvent>> Dashboard::EventPage(const std::string& job_id,
                                                               int64_t before_seq) const {
  const int64_t after = std::max<int64_t>(0, before_seq - 1 - kEventLogPage);
  ASSIGN_OR_RETURN(
      std::vector<v1::JobEvent> events,
      ReadJobEvents(manager_, job_id, after, static_cast<int>(before_seq - 1 - after)));
  return Reversed(std::move(events));
}

absl::StatusOr<HttpResponse> Dashboard::JobPage(const HttpRequest& request) {
  const std::string& id = request.path_params[0];
  absl::Status status;
  ASSIGN_OR_RETURN(std::string html,
                   WithReport(id, [&](const v1::Job& job, const JobReport& report) {
                     PageOptions options;
                     options.live = true;
                     options.can_cancel = true;
                     options.footer = "Served live by ftcontroller.";
                     auto rows = EventPage(id, report.last_seq() + 1);
                     if (!rows.ok()) {
                       status = rows.status();
                       return std::string();
                     }
                     options.event_rows = EventLogRows(*rows);
                     return RenderJobPage(job, report, options);
                   }));
  RETURN_IF_ERROR(status);
  return Html(std::move(html));
}

absl::StatusOr<HttpResponse> Dashboard::JobSections(const HttpRequest& request) {
  const std::string& id = request.path_params[0];
  int64_t after_seq = 0;
  if (auto it = request.query.find("after_seq");
      it != request.query.end() && (!absl::SimpleAtoi(it->second, &after_seq) || after_seq < 0)) {
    return absl::InvalidArgumentError("after_seq: not an event seq");
  }
  absl::Status status;
  ASSIGN_OR_RETURN(std::string json,
                   WithReport(id, [&](const v1::Job& job, const JobReport& report) {
                     // Only the newest page of what the page has not seen.
                     const int64_t last = report.last_seq();
                     std::vector<v1::JobEvent> fresh;
                     if (last > after_seq) {
                       auto rows = EventPage(id, last + 1);
                       if (!rows.ok()) {
                         status = rows.status();
                         return std::string();
                       }
                       for (v1::JobEvent& e : *rows) {
                         if (e.seq() > after_seq) fresh.push_back(std::move(e));
                       }
                     }
                     return RenderJobSections(job, report, EventLogRows(fresh));
                   }));
  RETURN_IF_ERROR(status);
  HttpResponse response = JsonResponse(std::move(json));
  response.headers.emplace_back("Cache-Control", "no-store");
  return response;
}

absl::StatusOr<HttpResponse> Dashboard::JobLog(const HttpRequest& request) const {
  int64_t before_seq = 0;
  auto it = request.query.find("before_seq");
  if (it == request.query.end() || !absl::SimpleAtoi(it->second, &before_seq) || before_seq < 1) {
    return absl::InvalidArgumentError("before_seq: an event seq >= 1 is required");
  }
  ASSIGN_OR_RETURN(const std::vector<v1::JobEvent> events,
                   EventPage(request.path_params[0], before_seq));
  nlohmann::json page = {{"log_rows", EventLogRows(events)},
                         {"oldest", events.empty() ? before_seq : events.back().seq()}};
  return JsonResponse(page.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

absl::StatusOr<HttpResponse> Dashboard::WorkersPage(const HttpRequest& request) const {
  const absl::Time now = absl::Now();
  std::string html =
      "<h1>Workers</h1>\n<table class=jobs id=workers><tr><th>worker</th><th>host</th>"
      "<th>state</th><th>devices</th><th>running jobs</th><th>last heartbeat</th></tr>\n";
  const std::vector<v1::Worker> workers = manager_->ListWorkers();
  for (const v1::Worker& worker : workers) {
    std::vector<std::string> devices, jobs;
    for (const v1::Device& device : worker.devices()) {
      std::string text = device.name();
      if (!device.description().empty()) absl::StrAppend(&text, " (", device.description(), ")");
      if (device.memory_bytes() > 0) {
        absl::StrAppend(&text, absl::StrFormat(" %.1f GiB", device.memory_bytes() / 1073741824.0));
      }
      devices.push_back(HtmlEscape(text));
    }
    for (const std::string& id : worker.job_ids()) jobs.push_back(JobLink(id));
    std::string state = v1::WorkerState_Name(worker.state());
    if (absl::StartsWith(state, "WORKER_STATE_")) state = state.substr(13);
    const absl::Time beat = absl::FromUnixSeconds(worker.last_heartbeat_time().seconds());
    absl::StrAppend(
        &html, "<tr><td>", HtmlEscape(worker.id()), "</td><td>", HtmlEscape(worker.host()),
        "</td><td>", state, "</td><td>", absl::StrJoin(devices, "<br>"), "</td><td>",
        jobs.empty() ? "-" : absl::StrJoin(jobs, "<br>"), "</td><td>",
        FormatTime(worker.last_heartbeat_time()),
        worker.last_heartbeat_time().seconds() > 0
            ? absl::StrCat(" (", FormatSeconds(absl::ToDoubleSeconds(now - beat)), " ago)")
            : "",
        "</td></tr>\n");
  }
  if (workers.empty()) html += "<tr><td colspan=6 class=sub>no workers</td></tr>\n";
  html += "</table>\n";
  return Html(Page("workers", html, RefreshScript("workers", 5)));
}

// --- login ---

HttpResponse Dashboard::LoginPage(const HttpRequest& request) const {
  if (!authorizer_.enabled()) {
    return Html(Page("login",
                     "<h1>No token needed</h1><p>This controller runs without "
                     "tokens. <a href=\"/\">Go to the jobs.</a></p>"));
  }
  return PageError(request, absl::UnauthenticatedError("enter a token to see the dashboard"));
}

HttpResponse Dashboard::PageError(const HttpRequest& request, const absl::Status& status) const {
  std::string next = request.path;
  if (request.path == "/login") {
    auto it = request.query.find("next");
    next = it == request.query.end() ? "/" : it->second;
  }
  const std::string form = absl::StrCat(
      "<h1>Sign in</h1>\n<p class=state-FAILED>", HtmlEscape(std::string(status.message())),
      "</p>\n<form method=post action=\"/login\"><input type=hidden name=next value=\"",
      HtmlEscape(SafeNext(next)),
      "\"><p>A token of the client (or admin) scope from the controller's tokens file:</p>"
      "<p><input type=password name=token size=48 autocomplete=off autofocus> "
      "<button>sign in</button></p></form>\n"
      "<p class=sub>Kept for this browser session in an HttpOnly cookie.</p>\n");
  const int code = request.path == "/login" ? 200 : HttpStatusFor(status.code());
  return Html(Page("sign in", form), code);
}

HttpResponse Dashboard::Login(const HttpRequest& request) const {
  const std::string token = request.FormValue("token");
  const std::string next = SafeNext(request.FormValue("next"));
  const std::string bearer = "Bearer " + token;
  absl::Status status = authorizer_.CheckHeader(&bearer, Scope::kClient);
  if (status.ok() && !CookieSafe(token)) {
    status = absl::InvalidArgumentError("this token cannot be kept in a cookie");
  }
  if (!authorizer_.enabled()) status = absl::OkStatus();
  if (!status.ok()) {
    HttpRequest again = request;
    again.path = next;
    return PageError(again, status);
  }
  HttpResponse response = Html("", 303);
  response.headers.emplace_back("Location", next);
  if (authorizer_.enabled()) {
    response.headers.emplace_back(
        "Set-Cookie",
        absl::StrCat(kSessionCookie, "=", token, "; Path=/; HttpOnly; SameSite=Strict",
                     options_.secure_cookie ? "; Secure" : ""));
  }
  return response;
}

HttpResponse Dashboard::Logout(const HttpRequest&) const {
  HttpResponse response = Html("", 303);
  response.headers.emplace_back("Location", "/login");
  response.headers.emplace_back(
      "Set-Cookie", absl::StrCat(kSessionCookie, "=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict",
                                 options_.secure_cookie ? "; Secure" : ""));
  return response;
}

}  // namespace ftune::server
