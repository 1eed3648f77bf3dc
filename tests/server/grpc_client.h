// Small synchronous helpers over the controller's stubs for the loopback suites.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/time/time.h"
#include "ftune/v1/job_service.grpc.pb.h"
#include "ftune/v1/worker.grpc.pb.h"

namespace ftune::server::testing {

inline std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout = absl::Seconds(20)) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
  return context;
}

struct WatchResult {
  std::vector<ftune::v1::JobEvent> events;
  grpc::Status status;
};

// Reads a WatchJob stream to its end.
inline WatchResult WatchAll(ftune::v1::JobService::Stub* stub, const std::string& job_id,
                            int64_t after_seq, absl::Duration timeout = absl::Seconds(30)) {
  auto context = Context(timeout);
  ftune::v1::WatchJobRequest request;
  request.set_job_id(job_id);
  request.set_after_seq(after_seq);
  auto reader = stub->WatchJob(context.get(), request);
  WatchResult result;
  ftune::v1::JobEvent event;
  while (reader->Read(&event)) result.events.push_back(event);
  result.status = reader->Finish();
  return result;
}

// Reads the first `n` events of a stream that is still live, then hangs up.
inline std::vector<ftune::v1::JobEvent> WatchFirst(ftune::v1::JobService::Stub* stub,
                                                   const std::string& job_id, int64_t after_seq,
                                                   size_t n) {
  auto context = Context();
  ftune::v1::WatchJobRequest request;
  request.set_job_id(job_id);
  request.set_after_seq(after_seq);
  auto reader = stub->WatchJob(context.get(), request);
  std::vector<ftune::v1::JobEvent> events;
  ftune::v1::JobEvent event;
  while (events.size() < n && reader->Read(&event)) events.push_back(event);
  context->TryCancel();
  reader->Finish().ok();
  return events;
}

}  // namespace ftune::server::testing
