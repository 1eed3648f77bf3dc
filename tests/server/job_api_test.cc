// The REST job API on ftcontroller's HTTP server, in process over loopback: every endpoint
// with good and bad input, tokens and scopes (header and session cookie), and the event
// stream: replay then live, exact resume with Last-Event-ID, the end of the job, the end of
// the server, and the bound on open streams.
#include <gtest/gtest.h>

#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "nlohmann/json.hpp"
#include "tests/server/http_fixture.h"

namespace ftune::server {
namespace {

using ftune::testing::HttpCall;
using ftune::testing::HttpReply;
using ftune::testing::ReadEventStream;
using ftune::testing::SseEvent;
using nlohmann::json;
using testing::FakeWorker;
using testing::kClientToken;
using testing::kWorkerToken;
using JobApiTest = testing::ControllerHttpTest;

std::string EventsPath(const std::string& id, int64_t after_seq) {
  return absl::StrCat("/api/v1/jobs/", id, "/events?after_seq=", after_seq);
}

int64_t Seq(const SseEvent& event) {
  int64_t seq = -1;
  EXPECT_TRUE(absl::SimpleAtoi(event.id, &seq)) << event.id;
  return seq;
}

// Protobuf JSON writes int64 as a string.
int64_t Seq(const json& event) { return std::stoll(event.at("seq").get<std::string>()); }

TEST_F(JobApiTest, SubmitGetAndListWithFilters) {
  StartController();
  const std::string a = Submit("a");
  const std::string b = Submit("b");
  const std::string c = Submit("c");
  ASSERT_FALSE(a.empty());

  HttpReply got = Call("GET", "/api/v1/jobs/" + b);
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(got.content_type, "application/json");
  json job = json::parse(got.body);
  EXPECT_EQ(job["id"], b);
  EXPECT_EQ(job["state"], "JOB_STATE_QUEUED");
  EXPECT_EQ(job["spec"]["name"], "b");  // proto field names, as ftctl --json

  // Newest first, paged by limit.
  json page = json::parse(Call("GET", "/api/v1/jobs?limit=2").body);
  ASSERT_EQ(page["jobs"].size(), 2u);
  EXPECT_EQ(page["jobs"][0]["id"], c);
  EXPECT_EQ(page["jobs"][1]["id"], b);
  const std::string token = page["next_page_token"];
  json rest = json::parse(Call("GET", "/api/v1/jobs?limit=2&page_token=" + token).body);
  ASSERT_EQ(rest["jobs"].size(), 1u);
  EXPECT_EQ(rest["jobs"][0]["id"], a);

  // One running, two queued: the state filter takes names in either spelling, comma separated.
  ASSERT_EQ(worker_->Acquire().value_or(""), a);
  ASSERT_TRUE(worker_->Report(FakeWorker::Progress(1, 1, 10)).ok());
  EXPECT_EQ(json::parse(Call("GET", "/api/v1/jobs?state=running").body)["jobs"].size(), 1u);
  EXPECT_EQ(json::parse(Call("GET", "/api/v1/jobs?state=QUEUED").body)["jobs"].size(), 2u);
  HttpReply both = Call("GET", "/api/v1/jobs?state=queued,JOB_STATE_RUNNING");
  EXPECT_EQ(json::parse(both.body)["jobs"].size(), 3u) << both.body;
  EXPECT_EQ(json::parse(Call("GET", "/api/v1/jobs?state=succeeded").body)["jobs"].size(), 0u);
}

TEST_F(JobApiTest, BadInputsAreJsonErrorsWithTheRightCode) {
  StartController();
  const std::string id = Submit("x");
  struct Case {
    std::string method, path, body;
    int status;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"GET", "/api/v1/jobs?state=sleeping", "", 400, "sleeping"},
      {"GET", "/api/v1/jobs?limit=0", "", 400, "limit"},
      {"GET", "/api/v1/jobs?limit=ten", "", 400, "limit"},
      {"GET", "/api/v1/jobs?page_token=zzz", "", 400, "page_token"},
      {"GET", "/api/v1/jobs/no-such-job", "", 404, "not found"},
      {"POST", "/api/v1/jobs", "", 400, "JobSpec"},
      {"POST", "/api/v1/jobs", "{not json", 400, "JobSpec"},
      {"POST", "/api/v1/jobs", R"({"model": "tiny", "colour": "blue"})", 400, "colour"},
      // Validated like gRPC SubmitJob: the field is named.
      {"POST", "/api/v1/jobs",
       R"({"model": "tiny", "output_dir": "/o", "dataset": {"path": "/d"},
           "training": {"batch_size": 100000}})",
       400, "training.batch_size"},
      {"POST", "/api/v1/jobs/no-such-job:cancel", "", 404, "not found"},
      {"POST", "/api/v1/jobs/" + id + ":cancel", "[1, 2]", 400, "reason"},
      {"GET", "/api/v1/jobs/" + id + ":cancel", "", 405, "POST"},
      {"DELETE", "/api/v1/jobs/" + id, "", 405, "GET"},
      {"GET", "/api/v1/jobs/no-such-job/events", "", 404, "not found"},
      {"GET", "/api/v1/jobs/" + id + "/events?after_seq=-1", "", 400, "after_seq"},
      {"GET", "/api/v1/jobs/" + id + "/events?limit=5000", "", 400, "limit"},
  };
  for (const Case& c : cases) {
    HttpReply reply = Call(c.method, c.path, c.body);
    EXPECT_EQ(reply.status, c.status) << c.method << " " << c.path << ": " << reply.body;
    json error = json::parse(reply.body, nullptr, false);
    ASSERT_TRUE(error.is_object()) << c.path << ": " << reply.body;
    EXPECT_TRUE(absl::StrContains(error.value("error", ""), c.says))
        << c.method << " " << c.path << ": " << reply.body;
  }
  auto wrong_type = HttpCall(http_, "POST", "/api/v1/jobs", Auth(), "model: tiny", "text/yaml");
  ASSERT_TRUE(wrong_type.ok());
  EXPECT_EQ(wrong_type->status, 415) << wrong_type->body;
  auto bad_resume = HttpCall(http_, "GET", EventsPath(id, 0),
                             {{"Authorization", Auth()["Authorization"]}, {"Last-Event-ID", "x"}});
  ASSERT_TRUE(bad_resume.ok());
  EXPECT_EQ(bad_resume->status, 400) << bad_resume->body;
}

TEST_F(JobApiTest, SubmitIsIdempotentByClientRequestId) {
  StartController();
  const std::string spec =
      R"({"model": "tiny", "output_dir": "/o", "dataset": {"path": "/d"},
          "client_request_id": "req-1"})";
  HttpReply first = Call("POST", "/api/v1/jobs", spec);
  ASSERT_EQ(first.status, 201) << first.body;
  HttpReply again = Call("POST", "/api/v1/jobs", spec);
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(json::parse(again.body)["created"], false);
  EXPECT_EQ(json::parse(again.body)["job"]["id"], json::parse(first.body)["job"]["id"]);
}

TEST_F(JobApiTest, CancelQueuedThenRunningThenEnded) {
  StartController();
  const std::string queued = Submit("q");
  HttpReply cancelled = Call("POST", "/api/v1/jobs/" + queued + ":cancel", R"({"reason": "no"})");
  ASSERT_EQ(cancelled.status, 200) << cancelled.body;
  EXPECT_EQ(json::parse(cancelled.body)["state"], "JOB_STATE_CANCELLED");
  // An ended job cannot be cancelled again.
  EXPECT_EQ(Call("POST", "/api/v1/jobs/" + queued + ":cancel").status, 409);

  const std::string running = RunningJob(3);
  HttpReply cancelling = Call("POST", "/api/v1/jobs/" + running + ":cancel");
  ASSERT_EQ(cancelling.status, 200) << cancelling.body;
  EXPECT_EQ(json::parse(cancelling.body)["state"], "JOB_STATE_CANCELLING");
  // The worker hears it at its next heartbeat.
  EXPECT_EQ(worker_->Heartbeat().value_or(ftune::v1::LEASE_VERDICT_OK),
            ftune::v1::LEASE_VERDICT_CANCEL);
}

TEST_F(JobApiTest, WorkersListsDevicesAndLeasedJobs) {
  StartController();
  const std::string id = RunningJob(1);
  HttpReply reply = Call("GET", "/api/v1/workers");
  ASSERT_EQ(reply.status, 200) << reply.body;
  json workers = json::parse(reply.body)["workers"];
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0]["id"], "w1");
  EXPECT_EQ(workers[0]["devices"][0]["name"], "cpu");
  EXPECT_EQ(workers[0]["job_ids"], json::array({id}));
}

TEST_F(JobApiTest, TokensAndScopesAsOverGrpc) {
  StartController();
  const std::string path = "/api/v1/jobs";
  HttpReply none = Call("GET", path, "", {{"Accept", "*/*"}});
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.Header("WWW-Authenticate"), "Bearer");
  EXPECT_EQ(Call("GET", path, "", {{"Authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(
      Call("GET", path, "", {{"Authorization", absl::StrCat("Bearer ", kWorkerToken)}}).status,
      403);
  EXPECT_EQ(Call("GET", path).status, 200);
  EXPECT_EQ(Call("GET", "/api/v1/workers", "", {{"Accept", "*/*"}}).status, 401);
  EXPECT_EQ(Call("GET", "/api/v1/jobs/x/events", "", {{"Accept", "*/*"}}).status, 401);

  // The session cookie of the pages works for reads; a write also needs X-Requested-With, so
  // a cross-site form cannot cancel a job with the cookie its browser holds.
  const std::string cookie = absl::StrCat("ftune_token=", kClientToken);
  EXPECT_EQ(Call("GET", path, "", {{"Cookie", cookie}}).status, 200);
  const std::string id = Submit("c");
  HttpReply forged = Call("POST", path + "/" + id + ":cancel", "", {{"Cookie", cookie}});
  EXPECT_EQ(forged.status, 403) << forged.body;
  HttpReply from_page = Call("POST", path + "/" + id + ":cancel", "",
                             {{"Cookie", cookie}, {"X-Requested-With", "ftune"}});
  EXPECT_EQ(from_page.status, 200) << from_page.body;
  EXPECT_EQ(Call("GET", path, "", {{"Cookie", "ftune_token=wrong"}}).status, 401);
}

// Replay, then live events, then the end: exactly the seqs after after_seq, each once, with
// `id:` = seq and the data the JobEvent in JSON.
TEST_F(JobApiTest, EventStreamReplaysThenFollowsLiveToTheEnd) {
  StartController();
  const std::string id = RunningJob(5);  // seqs 1..3 state changes, 4..8 progress
  std::vector<int64_t> seqs;
  std::string ended;
  auto status = ReadEventStream(http_, EventsPath(id, 4), Auth(), [&](const SseEvent& e) {
    if (!e.event.empty()) {
      ended = e.event;
      return true;
    }
    json event = json::parse(e.data);
    EXPECT_EQ(Seq(event), Seq(e));
    EXPECT_EQ(event["job_id"], id);
    seqs.push_back(Seq(e));
    // At the end of the replay, the worker goes on: these arrive live.
    if (Seq(e) == 8) {
      EXPECT_TRUE(worker_->Report(FakeWorker::Progress(6, 8, 100)).ok());
    }
    if (Seq(e) == 11) {
      EXPECT_TRUE(worker_->Complete(ftune::v1::JOB_OUTCOME_SUCCEEDED).ok());
    }
    return true;
  });
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(*status, 200);
  EXPECT_EQ(seqs, (std::vector<int64_t>{5, 6, 7, 8, 9, 10, 11, 12}));  // 12: SUCCEEDED
  EXPECT_EQ(ended, "end");
}

// A browser that reconnects sends Last-Event-ID; the stream goes on exactly after it, whatever
// after_seq the URL still carries. The JSON page form looks back before a seq.
TEST_F(JobApiTest, LastEventIdResumesExactlyAndPagesLookBack) {
  StartController();
  const std::string id = RunningJob(10);  // seqs 1..13
  std::vector<int64_t> first;
  ASSERT_TRUE(ReadEventStream(http_, EventsPath(id, 0), Auth(), [&](const SseEvent& e) {
                first.push_back(Seq(e));
                return first.size() < 6;  // hang up after seq 6, as a closed tab would
              }).ok());
  ASSERT_EQ(first.back(), 6);

  auto headers = Auth();
  headers["Last-Event-ID"] = "6";
  std::vector<int64_t> resumed;
  ASSERT_TRUE(ReadEventStream(http_, EventsPath(id, 0), headers, [&](const SseEvent& e) {
                if (Seq(e) == 13) {
                  EXPECT_TRUE(worker_->Report(FakeWorker::Progress(11, 11, 100)).ok());
                }
                resumed.push_back(Seq(e));
                return Seq(e) < 14;
              }).ok());
  EXPECT_EQ(resumed, (std::vector<int64_t>{7, 8, 9, 10, 11, 12, 13, 14}));

  json page = json::parse(
      Call("GET", absl::StrCat("/api/v1/jobs/", id, "/events?before_seq=10&limit=4")).body);
  ASSERT_EQ(page["events"].size(), 4u);
  EXPECT_EQ(Seq(page["events"][0]), 6);
  EXPECT_EQ(Seq(page["events"][3]), 9);
  json head = json::parse(
      Call("GET", absl::StrCat("/api/v1/jobs/", id, "/events?before_seq=3&limit=100")).body);
  ASSERT_EQ(head["events"].size(), 2u);
  EXPECT_EQ(Seq(head["events"][0]), 1);
  json after = json::parse(
      Call("GET", absl::StrCat("/api/v1/jobs/", id, "/events?after_seq=12&limit=100")).body);
  ASSERT_EQ(after["events"].size(), 2u) << after.dump();
  EXPECT_EQ(Seq(after["events"][1]), 14);
}

// Shutdown ends an open stream with an error frame naming the resume point, instead of
// waiting for the client (Shutdown returning at all is the other half of the check).
TEST_F(JobApiTest, ShutdownEndsOpenStreams) {
  StartController();
  const std::string id = RunningJob(2);  // seqs 1..5
  std::string error;
  absl::Notification replayed;
  std::thread reader([&] {
    auto status = ReadEventStream(http_, EventsPath(id, 0), Auth(), [&](const SseEvent& e) {
      if (e.event == "error") error = e.data;
      if (e.id == "5") replayed.Notify();
      return true;
    });
    EXPECT_TRUE(status.ok()) << status.status();
  });
  ASSERT_TRUE(replayed.WaitForNotificationWithTimeout(absl::Seconds(30)));
  controller_->Shutdown(absl::Seconds(5));
  reader.join();
  EXPECT_TRUE(absl::StrContains(error, "shutting down")) << error;
  EXPECT_TRUE(absl::StrContains(error, "after_seq=5")) << error;
}

// Streams hold a thread each, so only http_max_streams are admitted; the rest of the API is
// still answered while they are open.
TEST_F(JobApiTest, OpenStreamsAreBoundedAndLeaveRequestThreads) {
  StartController(/*tokens=*/true, [](ControllerConfig* c) { c->http_max_streams = 1; });
  const std::string id = RunningJob(1);
  std::thread reader([&] {
    auto status = ReadEventStream(http_, EventsPath(id, 0), Auth(),
                                  [](const SseEvent& e) { return e.event.empty(); });
    EXPECT_TRUE(status.ok()) << status.status();
  });
  while (controller_->http_server()->streams() == 0) std::this_thread::yield();
  HttpReply busy = Call("GET", EventsPath(id, 0));
  EXPECT_EQ(busy.status, 503) << busy.body;
  EXPECT_EQ(busy.Header("Retry-After"), "5");
  for (int i = 0; i < 20; ++i) ASSERT_EQ(Call("GET", "/api/v1/jobs/" + id).status, 200);
  ASSERT_TRUE(worker_->Complete(ftune::v1::JOB_OUTCOME_SUCCEEDED).ok());
  reader.join();
}

}  // namespace
}  // namespace ftune::server
