// The daemon's view of ftcontroller's WorkerService: one call per RPC, absl::Status errors.
// GrpcWorkerClient talks to a real controller; tests use a hand-written fake.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ftune/v1/worker.grpc.pb.h"

namespace ftune::daemon {

class WorkerClient {
 public:
  virtual ~WorkerClient() = default;

  virtual absl::StatusOr<ftune::v1::RegisterWorkerResponse> RegisterWorker(
      const ftune::v1::RegisterWorkerRequest& request) = 0;
  // Long poll; returns early (CANCELLED) once CancelAcquire() is called.
  virtual absl::StatusOr<ftune::v1::AcquireJobResponse> AcquireJob(
      const ftune::v1::AcquireJobRequest& request) = 0;
  virtual absl::StatusOr<ftune::v1::HeartbeatResponse> Heartbeat(
      const ftune::v1::HeartbeatRequest& request) = 0;
  virtual absl::StatusOr<ftune::v1::ReportEventsResponse> ReportEvents(
      const ftune::v1::ReportEventsRequest& request) = 0;
  virtual absl::StatusOr<ftune::v1::CompleteJobResponse> CompleteJob(
      const ftune::v1::CompleteJobRequest& request) = 0;

  // Ends AcquireJob calls in flight (shutdown must not wait out a long poll).
  virtual void CancelAcquire() = 0;
};

struct GrpcWorkerClientOptions {
  // Deadline of every call but AcquireJob, whose deadline is its wait plus this.
  absl::Duration call_timeout = absl::Seconds(20);
};

// Over a channel from MakeChannel (common/credentials.h), which carries TLS and the token.
class GrpcWorkerClient final : public WorkerClient {
 public:
  GrpcWorkerClient(std::shared_ptr<grpc::Channel> channel, GrpcWorkerClientOptions options);

  absl::StatusOr<ftune::v1::RegisterWorkerResponse> RegisterWorker(
      const ftune::v1::RegisterWorkerRequest& request) override;
  absl::StatusOr<ftune::v1::AcquireJobResponse> AcquireJob(
      const ftune::v1::AcquireJobRequest& request) override;
  absl::StatusOr<ftune::v1::HeartbeatResponse> Heartbeat(
      const ftune::v1::HeartbeatRequest& request) override;
  absl::StatusOr<ftune::v1::ReportEventsResponse> ReportEvents(
      const ftune::v1::ReportEventsRequest& request) override;
  absl::StatusOr<ftune::v1::CompleteJobResponse> CompleteJob(
      const ftune::v1::CompleteJobRequest& request) override;
  void CancelAcquire() override;

 private:
  void Prepare(grpc::ClientContext* context, absl::Duration timeout) const;

  std::unique_ptr<ftune::v1::WorkerService::Stub> stub_;
  GrpcWorkerClientOptions options_;
  std::mutex mu_;
  std::set<grpc::ClientContext*> acquiring_;
  bool acquire_cancelled_ = false;
};

}  // namespace ftune::daemon
