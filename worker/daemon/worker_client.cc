#include "worker/daemon/worker_client.h"

#include <chrono>

#include "common/grpc_status.h"

namespace ftune::daemon {

namespace v1 = ::ftune::v1;

GrpcWorkerClient::GrpcWorkerClient(std::shared_ptr<grpc::Channel> channel,
                                   GrpcWorkerClientOptions options)
    : stub_(v1::WorkerService::NewStub(std::move(channel))), options_(std::move(options)) {}

void GrpcWorkerClient::Prepare(grpc::ClientContext* context, absl::Duration timeout) const {
  context->set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
}

absl::StatusOr<v1::RegisterWorkerResponse> GrpcWorkerClient::RegisterWorker(
    const v1::RegisterWorkerRequest& request) {
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  v1::RegisterWorkerResponse response;
  grpc::Status status = stub_->RegisterWorker(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::AcquireJobResponse> GrpcWorkerClient::AcquireJob(
    const v1::AcquireJobRequest& request) {
  grpc::ClientContext context;
  Prepare(&context, absl::Seconds(request.wait_seconds()) + options_.call_timeout);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (acquire_cancelled_) return absl::CancelledError("worker is shutting down");
    acquiring_.insert(&context);
  }
  v1::AcquireJobResponse response;
  grpc::Status status = stub_->AcquireJob(&context, request, &response);
  {
    std::lock_guard<std::mutex> lock(mu_);
    acquiring_.erase(&context);
  }
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::HeartbeatResponse> GrpcWorkerClient::Heartbeat(
    const v1::HeartbeatRequest& request) {
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  v1::HeartbeatResponse response;
  grpc::Status status = stub_->Heartbeat(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::ReportEventsResponse> GrpcWorkerClient::ReportEvents(
    const v1::ReportEventsRequest& request) {
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  v1::ReportEventsResponse response;
  grpc::Status status = stub_->ReportEvents(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::CompleteJobResponse> GrpcWorkerClient::CompleteJob(
    const v1::CompleteJobRequest& request) {
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  v1::CompleteJobResponse response;
  grpc::Status status = stub_->CompleteJob(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

void GrpcWorkerClient::CancelAcquire() {
  std::lock_guard<std::mutex> lock(mu_);
  acquire_cancelled_ = true;
  for (grpc::ClientContext* context : acquiring_) context->TryCancel();
}

}  // namespace ftune::daemon
