// gRPC faces of the JobManager (callback API). They only check the caller's token, translate
// and hand over; the logic is in JobManager.
#pragma once

#include "common/auth.h"
#include "ftune/v1/job_service.grpc.pb.h"
#include "ftune/v1/worker.grpc.pb.h"
#include "server/job_manager.h"

namespace ftune::server {

class JobServiceImpl final : public ftune::v1::JobService::CallbackService {
 public:
  // `manager` and `authorizer` must outlive the service.
  JobServiceImpl(JobManager* manager, const Authorizer* authorizer)
      : manager_(manager), authorizer_(authorizer) {}

  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* context,
                                      const ftune::v1::SubmitJobRequest* request,
                                      ftune::v1::SubmitJobResponse* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const ftune::v1::GetJobRequest* request,
                                   ftune::v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                     const ftune::v1::ListJobsRequest* request,
                                     ftune::v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                      const ftune::v1::CancelJobRequest* request,
                                      ftune::v1::Job* response) override;
  grpc::ServerWriteReactor<ftune::v1::JobEvent>* WatchJob(
      grpc::CallbackServerContext* context, const ftune::v1::WatchJobRequest* request) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* context,
                                        const ftune::v1::ListWorkersRequest* request,
                                        ftune::v1::ListWorkersResponse* response) override;

 private:
  JobManager* const manager_;
  const Authorizer* const authorizer_;
};

class WorkerServiceImpl final : public ftune::v1::WorkerService::CallbackService {
 public:
  WorkerServiceImpl(JobManager* manager, const Authorizer* authorizer)
      : manager_(manager), authorizer_(authorizer) {}

  grpc::ServerUnaryReactor* RegisterWorker(grpc::CallbackServerContext* context,
                                           const ftune::v1::RegisterWorkerRequest* request,
                                           ftune::v1::RegisterWorkerResponse* response) override;
  // Long poll without a thread per poller: the reactor parks in the manager until a job
  // fits, the wait runs out (the sweeper answers it) or the caller goes away.
  grpc::ServerUnaryReactor* AcquireJob(grpc::CallbackServerContext* context,
                                       const ftune::v1::AcquireJobRequest* request,
                                       ftune::v1::AcquireJobResponse* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const ftune::v1::HeartbeatRequest* request,
                                      ftune::v1::HeartbeatResponse* response) override;
  grpc::ServerUnaryReactor* ReportEvents(grpc::CallbackServerContext* context,
                                         const ftune::v1::ReportEventsRequest* request,
                                         ftune::v1::ReportEventsResponse* response) override;
  grpc::ServerUnaryReactor* CompleteJob(grpc::CallbackServerContext* context,
                                        const ftune::v1::CompleteJobRequest* request,
                                        ftune::v1::CompleteJobResponse* response) override;

 private:
  JobManager* const manager_;
  const Authorizer* const authorizer_;
};

}  // namespace ftune::server
