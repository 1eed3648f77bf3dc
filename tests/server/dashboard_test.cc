// The controller's pages. Over HTTP: tokens and the login cookie, the jobs, job and workers
// pages, the event log's pages and the live sections, and a job with 100k events. In headless
// Chromium against a live controller whose job is driven by a worker played over gRPC: the
// sign-in form refuses the page without a token, the curves and the confusion matrix follow
// the events as they are reported, a broken stream resumes exactly after its last event,
// reload continues, and the cancel button cancels.
#include <gtest/gtest.h>

#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "tests/server/http_fixture.h"
#include "tests/support/chromium.h"

namespace ftune::server {
namespace {

using ftune::testing::Chromium;
using ftune::testing::HttpReply;
using nlohmann::json;
using testing::FakeWorker;
using testing::kClientToken;
using testing::kWorkerToken;
using DashboardTest = testing::ControllerHttpTest;

int Count(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

std::map<std::string, std::string> Cookie(const std::string& token) {
  return {{"Cookie", absl::StrCat("ftune_token=", token)}};
}

ftune::v1::JobEvent EvalEvent(int64_t step) {
  ftune::v1::JobEvent e;
  auto* r = e.mutable_eval_result();
  r->set_step(step);
  r->set_accuracy(0.6);
  r->set_macro_f1(0.55);
  r->set_loss(0.9);
  r->set_is_best(true);
  for (const char* label : {"angry", "calm", "sad"}) r->add_labels(label);
  for (uint32_t c : {5, 1, 0, 2, 4, 1, 0, 1, 6}) r->add_confusion(c);
  for (int i = 0; i < 3; ++i) r->add_per_class_recall(0.6);
  return e;
}

ftune::v1::JobEvent CheckpointEvent(const std::string& path, int64_t step) {
  ftune::v1::JobEvent e;
  e.mutable_checkpoint_saved()->set_path(path);
  e.mutable_checkpoint_saved()->set_step(step);
  e.mutable_checkpoint_saved()->set_is_best(true);
  return e;
}

TEST_F(DashboardTest, PagesWithoutATokenAreRefusedAndLoginSetsASessionCookie) {
  StartController();
  const std::string id = Submit("queued-one");
  for (const std::string& path : std::vector<std::string>{"/", "/jobs/" + id, "/workers"}) {
    HttpReply refused = Call("GET", path, "", {{"Accept", "text/html"}});
    EXPECT_EQ(refused.status, 401) << path;
    EXPECT_EQ(refused.content_type, "text/html; charset=utf-8") << path;
    EXPECT_TRUE(absl::StrContains(refused.body, "<form method=post action=\"/login\">")) << path;
    EXPECT_FALSE(absl::StrContains(refused.body, "queued-one")) << path;
  }
  // A worker token may not see the pages (client scope, as JobService).
  EXPECT_EQ(Call("GET", "/", "", Cookie(kWorkerToken)).status, 403);
  EXPECT_EQ(Call("GET", "/", "", Cookie("not-a-token")).status, 401);
  // The scripts' JSON endpoints answer JSON errors.
  HttpReply sections = Call("GET", "/jobs/" + id + "/sections", "", {{"Accept", "*/*"}});
  EXPECT_EQ(sections.status, 401);
  EXPECT_EQ(sections.content_type, "application/json");

  const std::string form = "application/x-www-form-urlencoded";
  HttpReply wrong = Call("POST", "/login", "token=nope&next=%2F", {{"Accept", "*/*"}}, form);
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(wrong.Header("Set-Cookie"), "");
  HttpReply worker =
      Call("POST", "/login", absl::StrCat("token=", kWorkerToken), {{"Accept", "*/*"}}, form);
  EXPECT_EQ(worker.status, 403);
  HttpReply ok =
      Call("POST", "/login", absl::StrCat("token=", kClientToken, "&next=%2Fjobs%2F", id),
           {{"Accept", "*/*"}}, form);
  EXPECT_EQ(ok.status, 303);
  EXPECT_EQ(ok.Header("Location"), "/jobs/" + id);
  EXPECT_EQ(ok.Header("Set-Cookie"),
            absl::StrCat("ftune_token=", kClientToken, "; Path=/; HttpOnly; SameSite=Strict"));
  // Only paths of this server are followed after login.
  for (const char* next : {"%2F%2Fevil.example%2F", "https%3A%2F%2Fevil.example", "jobs"}) {
    HttpReply away = Call("POST", "/login", absl::StrCat("token=", kClientToken, "&next=", next),
                          {{"Accept", "*/*"}}, form);
    EXPECT_EQ(away.Header("Location"), "/") << next;
  }
  HttpReply page = Call("GET", "/jobs/" + id, "", Cookie(kClientToken));
  EXPECT_EQ(page.status, 200);
  EXPECT_TRUE(absl::StrContains(page.body, "queued-one"));
  EXPECT_EQ(page.Header("Cache-Control"), "no-store");
  HttpReply out = Call("POST", "/logout", "", {{"Accept", "*/*"}}, form);
  EXPECT_EQ(out.status, 303);
  EXPECT_TRUE(absl::StrContains(out.Header("Set-Cookie"), "ftune_token=; Path=/; Max-Age=0"));
}

TEST_F(DashboardTest, JobsWorkersAndJobPagesWithTheEventLogInPages) {
  StartController();
  const std::string id = RunningJob(250, 1000);  // seqs 1..253
  const std::string queued = Submit("waiting");
  // Jobs, filtered by state, newest first, with progress and worker.
  HttpReply all = Call("GET", "/");
  ASSERT_EQ(all.status, 200) << all.body;
  EXPECT_LT(all.body.find(queued), all.body.find(id));
  EXPECT_TRUE(absl::StrContains(all.body, "250/1000"));
  EXPECT_TRUE(absl::StrContains(all.body, "<td>w1</td>"));
  HttpReply running = Call("GET", "/?state=running");
  EXPECT_TRUE(absl::StrContains(running.body, id));
  EXPECT_FALSE(absl::StrContains(running.body, queued));
  EXPECT_TRUE(absl::StrContains(Call("GET", "/?state=failed").body, "no jobs"));
  EXPECT_EQ(Call("GET", "/?state=sleepy").status, 400);

  HttpReply workers = Call("GET", "/workers");
  ASSERT_EQ(workers.status, 200);
  EXPECT_TRUE(absl::StrContains(workers.body, "<td>w1</td><td>test-host</td><td>ONLINE</td>"))
      << workers.body;
  EXPECT_TRUE(absl::StrContains(workers.body, "href=\"/jobs/" + id + "\""));

  // The job page: the newest 100 events in the log, newest first, and a way back.
  HttpReply page = Call("GET", "/jobs/" + id);
  ASSERT_EQ(page.status, 200);
  EXPECT_TRUE(absl::StrContains(page.body, "data-seq=\"253\""));
  EXPECT_TRUE(absl::StrContains(page.body, "data-oldest=\"154\""));
  EXPECT_TRUE(absl::StrContains(page.body, "<tbody id=log-rows>\n<tr><td>253</td>"));
  EXPECT_EQ(Count(page.body, "<td>progress</td>"), 100);
  EXPECT_TRUE(absl::StrContains(page.body, "id=earlier"));
  EXPECT_TRUE(absl::StrContains(page.body, "id=cancel"));
  EXPECT_EQ(Count(page.body, "<svg"), 3);  // no evaluation yet: no confusion matrix

  json earlier = json::parse(Call("GET", "/jobs/" + id + "/log?before_seq=154").body);
  EXPECT_EQ(earlier["oldest"], 54);
  EXPECT_EQ(Count(earlier["log_rows"], "<tr>"), 100);
  EXPECT_TRUE(absl::StartsWith(earlier["log_rows"].get<std::string>(), "<tr><td>153</td>"));
  json first = json::parse(Call("GET", "/jobs/" + id + "/log?before_seq=54").body);
  EXPECT_EQ(first["oldest"], 1);
  EXPECT_EQ(Count(first["log_rows"], "<tr>"), 53);
  EXPECT_EQ(Call("GET", "/jobs/" + id + "/log").status, 400);

  // What the live page swaps in after seq 250: the sections and the three newer rows.
  ASSERT_TRUE(worker_->Report({EvalEvent(250), CheckpointEvent("/out/run/step-250", 250)}).ok());
  json sections = json::parse(Call("GET", "/jobs/" + id + "/sections?after_seq=250").body);
  EXPECT_EQ(sections["seq"], 255);
  EXPECT_EQ(sections["state"], "RUNNING");
  EXPECT_EQ(sections["terminal"], false);
  EXPECT_EQ(Count(sections["log_rows"], "<tr>"), 5);
  EXPECT_TRUE(absl::StrContains(sections["sections"]["sec-evaluation"].get<std::string>(),
                                "true angry, predicted calm: 1"));
  EXPECT_TRUE(absl::StrContains(sections["sections"]["sec-checkpoints"].get<std::string>(),
                                "/out/run/step-250"));
  EXPECT_EQ(Call("GET", "/jobs/no-such-job").status, 404);
}

// 100k events: the page is still small (curves downsampled, the log paged) and quick.
TEST_F(DashboardTest, AJobWith100kEventsGivesASmallPage) {
  StartController();
  const std::string id = RunningJob(1, 100000);
  for (int64_t first = 2; first <= 100000; first += 5000) {
    ASSERT_TRUE(worker_->Report(FakeWorker::Progress(first, first + 4999, 100000)).ok());
  }
  const absl::Time start = absl::Now();
  HttpReply page = Call("GET", "/jobs/" + id);
  const absl::Duration first_load = absl::Now() - start;
  ASSERT_EQ(page.status, 200);
  const absl::Time again = absl::Now();
  HttpReply cached = Call("GET", "/jobs/" + id);
  const absl::Duration second_load = absl::Now() - again;
  std::cout << "100k events: page " << page.body.size() << " bytes, first load " << first_load
            << ", from the cache " << second_load << "\n";
  EXPECT_LT(page.body.size(), 300u << 10);
  std::smatch points;
  const std::string body = page.body;
  ASSERT_TRUE(std::regex_search(
      body, points, std::regex("stroke=\"#0969da\" stroke-width=\"2\" points=\"([^\"]*)")));
  EXPECT_LE(Count(points[1].str(), ","), 1000);
  EXPECT_GE(Count(points[1].str(), ","), 990);
  EXPECT_EQ(Count(page.body, "<td>progress</td>"), 100);
  EXPECT_EQ(cached.body, page.body);
}

// The live page in a real browser, signed in through the form.
TEST_F(DashboardTest, ChromiumFollowsTheRunningJobResumesAndCancels) {
  // A small watcher queue, so a burst of events breaks the page's stream on purpose.
  StartController(true, [](ControllerConfig* c) { c->manager.watcher_queue_limit = 8; });
  const std::string id = RunningJob(5);  // seqs 1..8
  auto browser = Chromium::Start(dir_);
  ASSERT_TRUE(browser.ok()) << browser.status();
  Chromium& page = **browser;
  const std::string url = absl::StrCat("http://", http_, "/jobs/", id);
  const std::string loss_points =
      "document.querySelector('#sec-charts polyline[stroke=\"#0969da\"]')"
      ".getAttribute('points').trim().split(/\\s+/).length";

  // No token: the sign-in form, not the job. (Deadlines, not sleeps: generous, as Chromium
  // starts slowly while the suite runs two tests at once.)
  ASSERT_TRUE(page.Navigate(url).ok());
  ASSERT_TRUE(
      page.WaitFor("document.querySelector('form input[name=token]') !== null", absl::Seconds(60))
          .ok());
  EXPECT_EQ(page.Evaluate("document.querySelectorAll('svg').length").value_or(-1), 0);
  ASSERT_TRUE(
      page.Evaluate(absl::StrCat("document.querySelector('input[name=token]').value = '",
                                 kClientToken, "'; document.querySelector('form').submit(); true"))
          .ok());
  absl::Status signed_in =
      page.WaitFor(absl::StrCat("location.href === '", url,
                                "' && document.getElementById('sec-charts') !== null && "
                                "document.getElementById('live').textContent === 'live'"),
                   absl::Seconds(60));
  ASSERT_TRUE(signed_in.ok()) << signed_in;
  EXPECT_EQ(page.Evaluate(loss_points).value_or(-1), 5);

  // Training goes on: the curves, progress, evaluation and checkpoints follow.
  ASSERT_TRUE(worker_->Report(FakeWorker::Progress(6, 20, 100)).ok());
  absl::Status followed = page.WaitFor(absl::StrCat(loss_points, " === 20"), absl::Seconds(60));
  ASSERT_TRUE(followed.ok()) << followed;
  EXPECT_TRUE(absl::StrContains(
      page.Evaluate("document.getElementById('sec-progress').innerText").value_or(""),
      "step 20 / 100"));
  ASSERT_TRUE(worker_->Report({EvalEvent(20), CheckpointEvent("/out/run/step-20", 20)}).ok());
  ASSERT_TRUE(page.WaitFor("document.querySelectorAll('#sec-evaluation svg rect').length === 9 "
                           "&& document.getElementById('sec-checkpoints').innerText"
                           ".includes('/out/run/step-20')",
                           absl::Seconds(60))
                  .ok());
  EXPECT_EQ(page.Evaluate("document.querySelector('#log-rows td').textContent").value_or(""), "25");

  // A burst overflows the stream's queue: the server ends it, the browser reconnects with
  // Last-Event-ID, and the stream goes on exactly after the last event it had.
  ASSERT_TRUE(worker_->Report(FakeWorker::Progress(21, 50, 100)).ok());  // seqs 26..55
  absl::Status resumed = page.WaitFor(
      absl::StrCat("window.ftuneStreamSeqs[window.ftuneStreamSeqs.length - 1] === 55 && ",
                   loss_points, " === 50"),
      absl::Seconds(60), "JSON.stringify(window.ftuneStreamSeqs)");
  ASSERT_TRUE(resumed.ok()) << resumed;
  json every = json::array();
  for (int seq = 9; seq <= 55; ++seq) every.push_back(seq);
  // Each event once, in order: no gap, no repeat across the reconnect.
  EXPECT_EQ(page.Evaluate("window.ftuneStreamSeqs").value_or(json()), every);

  // Reload: the page comes back with everything and follows from where it stands.
  ASSERT_TRUE(page.Reload().ok());
  ASSERT_TRUE(
      page.WaitFor("document.getElementById('live').textContent === 'live'", absl::Seconds(60))
          .ok());
  EXPECT_EQ(page.Evaluate(loss_points).value_or(-1), 50);
  ASSERT_TRUE(worker_->Report(FakeWorker::Progress(51, 51, 100)).ok());
  ASSERT_TRUE(page.WaitFor(absl::StrCat(loss_points, " === 51"), absl::Seconds(60)).ok());
  EXPECT_EQ(page.Evaluate("JSON.stringify(window.ftuneStreamSeqs)").value_or(""), "[56]");

  // The cancel button: CANCELLING at once, CANCELLED when the worker stops.
  ASSERT_TRUE(page.Evaluate("window.confirm = () => true; "
                            "document.getElementById('cancel').click(); true")
                  .ok());
  ASSERT_TRUE(page.WaitFor("document.getElementById('state').textContent === 'CANCELLING'",
                           absl::Seconds(60))
                  .ok());
  EXPECT_EQ(json::parse(Call("GET", "/api/v1/jobs/" + id).body)["state"], "JOB_STATE_CANCELLING");
  ASSERT_EQ(worker_->Heartbeat().value_or(ftune::v1::LEASE_VERDICT_OK),
            ftune::v1::LEASE_VERDICT_CANCEL);
  ASSERT_TRUE(worker_->Complete(ftune::v1::JOB_OUTCOME_CANCELLED).ok());
  absl::Status ended = page.WaitFor(
      "document.getElementById('state').textContent === 'CANCELLED' && "
      "document.getElementById('cancel') === null && "
      "document.getElementById('live').textContent === 'finished'",
      absl::Seconds(60));
  EXPECT_TRUE(ended.ok()) << ended;
}

}  // namespace
}  // namespace ftune::server
