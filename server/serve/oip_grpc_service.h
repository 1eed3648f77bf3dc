// The Open Inference Protocol v2 over gRPC (inference.GRPCInferenceService) beside ftune's
// own InferenceService, on the same port and engine, so Triton's and KServe's gRPC clients
// work. It translates protobuf to and from OipInferRequest / OipInferResult (oip.h): the
// `waveform` input comes as raw_input_contents (little-endian FP32) or fp32_contents, with
// parameters sample_rate (int64 or double) and lengths (a string "n1,n2,..."; gRPC
// parameters hold no arrays). Answers are raw when the request was raw, typed otherwise.
#pragma once

#include <memory>

#include "common/auth.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "server/serve/classify_request.h"
#include "server/serve/inference_engine.h"
#include "server/serve/serve_metrics.h"

namespace ftune::serve {

class OipGrpcService final : public inference::GRPCInferenceService::CallbackService {
 public:
  // `metrics` may be null.
  OipGrpcService(InferenceEngine* engine, ServiceLimits limits,
                 std::shared_ptr<const Authorizer> authorizer, ServeMetrics* metrics = nullptr);

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;

 private:
  InferenceEngine* const engine_;
  const ServiceLimits limits_;
  const std::shared_ptr<const Authorizer> authorizer_;
  ServeMetrics* const metrics_;
};

}  // namespace ftune::serve
