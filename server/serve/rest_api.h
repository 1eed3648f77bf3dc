// ftserve's REST API over the same engine (and so the same dynamic batcher) as gRPC:
//
//   GET  /v2/health/live, /v2/health/ready, /v2            Open Inference Protocol v2
//   GET  /v2/models/{id}[/versions/{v}][/ready]            metadata (labels in parameters)
//   POST /v2/models/{id}[/versions/{v}]/infer              JSON, or the binary tensor extension
//   POST /v1/models/{id}:classify                          the body is an audio file
//
// It translates HTTP to and from OipInferRequest / the engine; the logic lives in oip.h and
// classify_request.h. Errors are `{"error": "..."}` with the status of their code (400, 404,
// 415 for a body of the wrong type, 429 when the queue is full, 503 when not ready).
#pragma once

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/http_server.h"
#include "server/serve/classify_request.h"
#include "server/serve/inference_engine.h"
#include "server/serve/serve_metrics.h"

namespace ftune::serve {

struct RestOptions {
  ServiceLimits limits;
  // How long a request may wait for the batcher before it is answered 504.
  absl::Duration request_timeout = absl::Seconds(60);
};

class RestApi {
 public:
  // `engine` must outlive the routes; `metrics` may be null.
  RestApi(InferenceEngine* engine, RestOptions options, ServeMetrics* metrics = nullptr);

  // The routes above, for HttpServer::Start.
  std::vector<HttpRoute> Routes();

 private:
  HttpResponse Live(const HttpRequest& request) const;
  HttpResponse Ready(const HttpRequest& request) const;
  HttpResponse ServerMetadata(const HttpRequest& request) const;
  HttpResponse ModelMetadata(const HttpRequest& request) const;
  HttpResponse ModelReady(const HttpRequest& request) const;
  HttpResponse Infer(const HttpRequest& request);
  HttpResponse Classify(const HttpRequest& request);
  // Counts the request in the metrics and turns an error into its JSON answer.
  HttpResponse Answer(const std::string& model, absl::Time received,
                      absl::StatusOr<HttpResponse> response, int http_status_for_error = 0);

  InferenceEngine* const engine_;
  const RestOptions options_;
  ServeMetrics* const metrics_;
};

}  // namespace ftune::serve
