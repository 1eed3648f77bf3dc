#include "server/job_api.h"

#include <algorithm>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/job_format.h"
#include "common/job_spec_flags.h"
#include "common/status_macros.h"
#include "google/protobuf/util/json_util.h"

namespace ftune::server {
namespace {

namespace v1 = ::ftune::v1;

// A stream frame is sent once this much is ready, so a long replay goes out in pieces.
constexpr size_t kStreamPieceBytes = 64 << 10;
constexpr int kMaxPage = 1000;

// The integer query parameter `name`, `fallback` when absent; InvalidArgument when it is not
// an integer within [lo, hi].
absl::StatusOr<int64_t> IntParam(const HttpRequest& request, const std::string& name,
                                 int64_t fallback, int64_t lo, int64_t hi) {
  auto it = request.query.find(name);
  if (it == request.query.end()) return fallback;
  int64_t value = 0;
  if (!absl::SimpleAtoi(it->second, &value) || value < lo || value > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": '", it->second, "' is not an integer in [", lo, ", ", hi, "]"));
  }
  return value;
}

template <typename Message>
HttpResponse JsonOrError(const absl::StatusOr<Message>& result, int http_status = 200) {
  if (!result.ok()) return ErrorResponse(result.status());
  return JsonResponse(ToJson(*result), http_status);
}

// A JSON body, or none; InvalidArgument for another media type (415 is answered for that).
absl::Status RequireJsonBody(const HttpRequest& request) {
  const std::string type = request.MediaType();
  if (!type.empty() && type != "application/json") {
    return absl::InvalidArgumentError(
        absl::StrCat("Content-Type must be application/json, not ", type));
  }
  return absl::OkStatus();
}

HttpResponse ListJobs(JobManager* manager, const HttpRequest& request) {
  absl::StatusOr<v1::ListJobsRequest> list = ListJobsQuery(request);
  if (!list.ok()) return ErrorResponse(list.status());
  return JsonOrError(manager->ListJobs(*list));
}

HttpResponse SubmitJob(JobManager* manager, const HttpRequest& request) {
  if (absl::Status type = RequireJsonBody(request); !type.ok()) {
    return ErrorResponse(415, type.message());
  }
  if (request.body.empty()) return ErrorResponse(400, "the body must be a JobSpec in JSON");
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpecJson(request.body);
  if (!spec.ok()) {
    return ErrorResponse(400, absl::StrCat("the body is not a JobSpec: ", spec.status().message()));
  }
  absl::StatusOr<SubmitResult> result = manager->SubmitJob(*spec);
  if (!result.ok()) return ErrorResponse(result.status());
  v1::SubmitJobResponse response;
  *response.mutable_job() = std::move(result->job);
  response.set_created(result->created);
  return JsonResponse(ToJson(response), result->created ? 201 : 200);
}

HttpResponse CancelJob(JobManager* manager, const HttpRequest& request) {
  if (absl::Status type = RequireJsonBody(request); !type.ok()) {
    return ErrorResponse(415, type.message());
  }
  v1::CancelJobRequest cancel;
  if (!request.body.empty()) {
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    auto parsed = google::protobuf::util::JsonStringToMessage(request.body, &cancel, options);
    if (!parsed.ok()) {
      return ErrorResponse(400, absl::StrCat("the body is not {\"reason\": \"...\"}: ",
                                             std::string(parsed.message())));
    }
  }
  absl::StatusOr<v1::Job> job = manager->CancelJob(request.path_params[0], cancel.reason());
  // An ended job cannot be cancelled: a conflict with its state, not a malformed request.
  if (absl::IsFailedPrecondition(job.status())) return ErrorResponse(409, job.status().message());
  return JsonOrError(job);
}

HttpResponse ListWorkers(JobManager* manager) {
  v1::ListWorkersResponse response;
  for (v1::Worker& worker : manager->ListWorkers()) *response.add_workers() = std::move(worker);
  return JsonResponse(ToJson(response));
}

// WatchJob as Server-Sent Events. The watch's notify wakes Next; Cancel (server stopping)
// and the manager's EndLongCalls (which ends the watch) both end the body.
class EventStream final : public HttpBodyStream {
 public:
  static absl::StatusOr<std::shared_ptr<EventStream>> Open(JobManager* manager,
                                                           const std::string& job_id,
                                                           int64_t after_seq,
                                                           absl::Duration keep_alive) {
    auto wake = std::make_shared<Wake>();
    ASSIGN_OR_RETURN(std::shared_ptr<Watch> watch,
                     manager->WatchJob(job_id, after_seq, [wake] { wake->Signal(false); }));
    return std::shared_ptr<EventStream>(new EventStream(std::move(watch), wake, keep_alive));
  }

  ~EventStream() override { watch_->Close(); }

  bool Next(std::string* out) override {
    if (first_) {
      // A browser reconnects this soon after the stream breaks (its default is 3 s).
      absl::StrAppend(out, "retry: 1000\n\n");
      first_ = false;
    }
    for (;;) {
      if (wake_->Reset()) {
        absl::StrAppend(out, ErrorFrame(absl::UnavailableError(absl::StrCat(
                                 "ftcontroller is shutting down; resume with after_seq=",
                                 watch_->delivered_seq()))));
        return false;
      }
      Watch::Next next = watch_->Poll();
      switch (next.kind) {
        case Watch::Kind::kEvent:
          absl::StrAppend(out, "id: ", next.event.seq(), "\ndata: ", ToJson(next.event), "\n\n");
          if (out->size() >= kStreamPieceBytes) return true;
          continue;
        case Watch::Kind::kDone:
          absl::StrAppend(out,
                          next.status.ok() ? "event: end\ndata: {}\n\n" : ErrorFrame(next.status));
          return false;
        case Watch::Kind::kWait:
          break;
      }
      if (!out->empty()) return true;
      if (!wake_->Wait(keep_alive_)) {
        // A write to a client that left fails and ends the stream.
        absl::StrAppend(out, ": keep-alive\n\n");
        return true;
      }
    }
  }

  void Cancel() override { wake_->Signal(true); }

 private:
  // The hand-off between the watch's notify (any thread) and Next: a flag, so a notify
  // between Poll and Wait is not lost.
  struct Wake {
    void Signal(bool cancel) {
      {
        std::lock_guard<std::mutex> lock(mu);
        woken = true;
        cancelled = cancelled || cancel;
      }
      cv.notify_all();
    }
    // Clears the flag before a Poll; true once cancelled.
    bool Reset() {
      std::lock_guard<std::mutex> lock(mu);
      woken = false;
      return cancelled;
    }
    // False when `timeout` passed without a signal.
    bool Wait(absl::Duration timeout) {
      std::unique_lock<std::mutex> lock(mu);
      return cv.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this] { return woken; });
    }
    std::mutex mu;
    std::condition_variable cv;
    bool woken = false;
    bool cancelled = false;
  };

  static std::string ErrorFrame(const absl::Status& status) {
    return absl::StrCat("event: error\ndata: ", ErrorResponse(status).body, "\n\n");
  }

  EventStream(std::shared_ptr<Watch> watch, std::shared_ptr<Wake> wake, absl::Duration keep_alive)
      : watch_(std::move(watch)), wake_(std::move(wake)), keep_alive_(keep_alive) {}

  const std::shared_ptr<Watch> watch_;
  const std::shared_ptr<Wake> wake_;
  const absl::Duration keep_alive_;
  bool first_ = true;
};

absl::StatusOr<HttpResponse> Events(JobManager* manager, const JobApiOptions& options,
                                    const HttpRequest& request) {
  const std::string& job_id = request.path_params[0];
  ASSIGN_OR_RETURN(int64_t after_seq, IntParam(request, "after_seq", 0, 0, INT64_MAX));
  if (request.query.count("limit") > 0) {
    // A page of events as JSON: after after_seq, or the `limit` just before before_seq.
    ASSIGN_OR_RETURN(const int64_t limit, IntParam(request, "limit", 0, 1, kMaxPage));
    ASSIGN_OR_RETURN(const int64_t before_seq, IntParam(request, "before_seq", 0, 1, INT64_MAX));
    int64_t count = limit;
    if (before_seq > 0) {
      after_seq = std::max<int64_t>(0, before_seq - 1 - limit);
      count = before_seq - 1 - after_seq;  // seqs are gapless
    }
    ASSIGN_OR_RETURN(std::vector<v1::JobEvent> events,
                     ReadJobEvents(manager, job_id, after_seq, static_cast<int>(count)));
    std::string body = "{\"events\":[";
    for (size_t i = 0; i < events.size(); ++i) {
      absl::StrAppend(&body, i ? "," : "", ToJson(events[i]));
    }
    return JsonResponse(body + "]}");
  }
  // A reconnecting EventSource repeats the URL: its Last-Event-ID says where it really is.
  if (const std::string* last = request.Header("last-event-id"); last != nullptr) {
    if (!absl::SimpleAtoi(*last, &after_seq) || after_seq < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("Last-Event-ID: '", *last, "' is not an event seq"));
    }
  }
  HttpResponse response;
  response.content_type = "text/event-stream";
  response.headers = {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}};
  ASSIGN_OR_RETURN(response.stream,
                   EventStream::Open(manager, job_id, after_seq, options.keep_alive));
  return response;
}

// A handler from one that returns a status: errors become the JSON error answer.
HttpHandler Handler(std::function<absl::StatusOr<HttpResponse>(const HttpRequest&)> body) {
  return [body = std::move(body)](const HttpRequest& request) {
    absl::StatusOr<HttpResponse> response = body(request);
    return response.ok() ? std::move(*response) : ErrorResponse(response.status());
  };
}

}  // namespace

absl::StatusOr<v1::ListJobsRequest> ListJobsQuery(const HttpRequest& request) {
  v1::ListJobsRequest list;
  if (auto it = request.query.find("state"); it != request.query.end()) {
    for (absl::string_view name : absl::StrSplit(it->second, ',', absl::SkipWhitespace())) {
      if (absl::StartsWithIgnoreCase(name, "JOB_STATE_")) name.remove_prefix(10);
      ASSIGN_OR_RETURN(const v1::JobState state, ParseJobState(std::string(name)));
      list.add_states(state);
    }
  }
  ASSIGN_OR_RETURN(const int64_t limit, IntParam(request, "limit", 50, 1, kMaxPage));
  list.set_page_size(static_cast<uint32_t>(limit));
  if (auto it = request.query.find("page_token"); it != request.query.end()) {
    list.set_page_token(it->second);
  }
  return list;
}

absl::StatusOr<std::vector<v1::JobEvent>> ReadJobEvents(JobManager* manager,
                                                        const std::string& job_id,
                                                        int64_t after_seq, int limit) {
  ASSIGN_OR_RETURN(std::shared_ptr<Watch> watch, manager->WatchJob(job_id, after_seq, [] {}));
  std::vector<v1::JobEvent> events;
  absl::Status status;
  while (static_cast<int>(events.size()) < limit) {
    Watch::Next next = watch->Poll();
    if (next.kind != Watch::Kind::kEvent) {
      // kWait: nothing newer yet; kDone after the last event is OK.
      status = next.status;
      break;
    }
    events.push_back(std::move(next.event));
  }
  watch->Close();
  RETURN_IF_ERROR(status);
  return events;
}

std::vector<HttpRoute> JobApiRoutes(JobManager* manager, JobApiOptions options) {
  const std::string job = "/api/v1/jobs/([^/:]+)";
  return {
      {"GET", "/api/v1/jobs", Scope::kClient,
       [manager](const HttpRequest& request) { return ListJobs(manager, request); }},
      {"POST", "/api/v1/jobs", Scope::kClient,
       [manager](const HttpRequest& request) { return SubmitJob(manager, request); }},
      {"GET", job, Scope::kClient,
       [manager](const HttpRequest& request) {
         return JsonOrError(manager->GetJob(request.path_params[0]));
       }},
      {"POST", job + ":cancel", Scope::kClient,
       [manager](const HttpRequest& request) { return CancelJob(manager, request); }},
      {"GET", job + "/events", Scope::kClient,
       Handler([manager, options](const HttpRequest& request) {
         return Events(manager, options, request);
       })},
      {"GET", "/api/v1/workers", Scope::kClient,
       [manager](const HttpRequest&) { return ListWorkers(manager); }},
  };
}

}  // namespace ftune::server
