// A worker played by the test over the real WorkerService gRPC API: register, lease a job,
// report exactly the events the test wants, complete. The test decides when anything
// happens, so what a watcher or a page sees is known without sleeping.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/grpc_status.h"
#include "ftune/v1/worker.grpc.pb.h"
#include "tests/server/grpc_client.h"

namespace ftune::server::testing {

class FakeWorker {
 public:
  FakeWorker(std::shared_ptr<grpc::Channel> channel, std::string id)
      : stub_(ftune::v1::WorkerService::NewStub(std::move(channel))), id_(std::move(id)) {}

  absl::Status Register(const std::string& device = "cpu") {
    ftune::v1::RegisterWorkerRequest request;
    request.set_worker_id(id_);
    request.set_host("test-host");
    request.add_devices()->set_name(device);
    ftune::v1::RegisterWorkerResponse response;
    return FromGrpcStatus(stub_->RegisterWorker(Context().get(), request, &response));
  }

  // Leases the next queued job (it must be queued already); its id.
  absl::StatusOr<std::string> Acquire(const std::string& device = "cpu") {
    ftune::v1::AcquireJobRequest request;
    request.set_worker_id(id_);
    request.add_free_devices(device);
    request.set_wait_seconds(10);
    ftune::v1::AcquireJobResponse response;
    absl::Status status = FromGrpcStatus(stub_->AcquireJob(Context().get(), request, &response));
    if (!status.ok()) return status;
    if (response.lease_id().empty()) return absl::DeadlineExceededError("no job was leased");
    job_id_ = response.job().id();
    lease_id_ = response.lease_id();
    return job_id_;
  }

  // Stores `events` as one batch; the seq of the last one.
  absl::StatusOr<int64_t> Report(const std::vector<ftune::v1::JobEvent>& events) {
    ftune::v1::ReportEventsRequest request;
    request.set_job_id(job_id_);
    request.set_lease_id(lease_id_);
    request.set_worker_id(id_);
    request.set_batch_id(++batch_id_);
    for (const ftune::v1::JobEvent& event : events) *request.add_events() = event;
    ftune::v1::ReportEventsResponse response;
    absl::Status status = FromGrpcStatus(stub_->ReportEvents(Context().get(), request, &response));
    if (!status.ok()) return status;
    return response.last_seq();
  }

  // Progress events for steps first..last of `total`, loss falling and the rate decaying.
  static std::vector<ftune::v1::JobEvent> Progress(int64_t first, int64_t last, int64_t total) {
    std::vector<ftune::v1::JobEvent> events;
    for (int64_t step = first; step <= last; ++step) {
      auto* p = events.emplace_back().mutable_train_progress();
      p->set_step(step);
      p->set_total_steps(total);
      p->set_epoch(1);
      p->set_epoch_progress(static_cast<double>(step) / total);
      p->set_loss(2.0 / (1.0 + 0.1 * step));
      p->set_learning_rate(5e-5 * (1.0 - static_cast<double>(step) / total));
      p->set_samples_per_sec(16);
      p->set_elapsed_seconds(step * 0.5);
      p->set_eta_seconds((total - step) * 0.5);
    }
    return events;
  }

  // Heartbeat; the verdict for the leased job (CANCEL once a user cancelled it).
  absl::StatusOr<ftune::v1::LeaseVerdict> Heartbeat() {
    ftune::v1::HeartbeatRequest request;
    request.set_worker_id(id_);
    auto* lease = request.add_leases();
    lease->set_job_id(job_id_);
    lease->set_lease_id(lease_id_);
    ftune::v1::HeartbeatResponse response;
    absl::Status status = FromGrpcStatus(stub_->Heartbeat(Context().get(), request, &response));
    if (!status.ok()) return status;
    if (response.leases_size() != 1) return absl::InternalError("no verdict for the lease");
    return response.leases(0).verdict();
  }

  absl::StatusOr<ftune::v1::Job> Complete(ftune::v1::JobOutcome outcome) {
    ftune::v1::CompleteJobRequest request;
    request.set_job_id(job_id_);
    request.set_lease_id(lease_id_);
    request.set_worker_id(id_);
    request.set_outcome(outcome);
    ftune::v1::CompleteJobResponse response;
    absl::Status status = FromGrpcStatus(stub_->CompleteJob(Context().get(), request, &response));
    if (!status.ok()) return status;
    return response.job();
  }

  const std::string& job_id() const { return job_id_; }

 private:
  std::unique_ptr<ftune::v1::WorkerService::Stub> stub_;
  const std::string id_;
  std::string job_id_;
  std::string lease_id_;
  uint64_t batch_id_ = 0;
};

}  // namespace ftune::server::testing
