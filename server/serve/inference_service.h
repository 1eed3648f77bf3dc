// ftune.v1.InferenceService over an InferenceEngine: decodes and checks the request,
// translates results and statuses. No model logic lives here.
#pragma once

#include <memory>

#include "common/auth.h"
#include "ftune/v1/inference.grpc.pb.h"
#include "server/serve/classify_request.h"
#include "server/serve/inference_engine.h"
#include "server/serve/serve_metrics.h"

namespace ftune::serve {

class InferenceServiceImpl final : public ftune::v1::InferenceService::CallbackService {
 public:
  // `metrics` may be null (no metrics kept).
  InferenceServiceImpl(InferenceEngine* engine, ServiceLimits limits,
                       std::shared_ptr<const Authorizer> authorizer,
                       ServeMetrics* metrics = nullptr);

  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* context,
                                     const ftune::v1::ClassifyRequest* request,
                                     ftune::v1::ClassifyResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const ftune::v1::ListModelsRequest* request,
                                       ftune::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* ReloadModel(grpc::CallbackServerContext* context,
                                        const ftune::v1::ReloadModelRequest* request,
                                        ftune::v1::ModelInfo* response) override;

 private:
  absl::StatusOr<std::vector<float>> DecodeAudio(const ftune::v1::ClassifyRequest& request) const;

  InferenceEngine* engine_;
  ServiceLimits limits_;
  std::shared_ptr<const Authorizer> authorizer_;
  ServeMetrics* metrics_;
};

// ModelInfo for a served version.
ftune::v1::ModelInfo ToModelInfo(const ServedModel& model, const std::string& last_reload_error);

}  // namespace ftune::serve
