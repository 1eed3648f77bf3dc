#include "server/serve/serve_metrics.h"

namespace ftune::serve {

ServeMetrics::ServeMetrics(MetricsRegistry* registry)
    : registry_(registry),
      requests_(registry->AddCounter("ftune_serve_requests_total",
                                     "Classification requests answered, by model, protocol "
                                     "(grpc, rest) and canonical status code.",
                                     {"model", "protocol", "code"})),
      latency_(registry->AddHistogram(
          "ftune_serve_request_duration_seconds",
          "Time from receipt to answer of classification requests, queueing included.",
          {"model", "protocol"}, LatencyBuckets())),
      batch_size_(registry->AddHistogram("ftune_serve_batch_size",
                                         "Clips per forward pass of the dynamic batcher.",
                                         {"model"}, ExponentialBuckets(1, 2, 11))),
      batch_seconds_(registry->AddHistogram("ftune_serve_batch_duration_seconds",
                                            "Time of one batched forward pass.", {"model"},
                                            LatencyBuckets())) {}

void ServeMetrics::WatchEngine(const InferenceEngine* engine) {
  engine_ = engine;
  auto per_model = [engine](auto value) {
    return [engine, value] {
      std::vector<MetricSample> samples;
      for (const ModelStatus& status : engine->ListModels()) {
        samples.push_back({{status.current->id}, value(status)});
      }
      return samples;
    };
  };
  registry_->AddGaugeCallback(
      "ftune_serve_queue_depth", "Clips waiting for a forward pass.", {"model"},
      per_model([](const ModelStatus& s) { return static_cast<double>(s.queued); }));
  registry_->AddGaugeCallback("ftune_serve_model_load_seconds",
                              "How long loading the serving version took.", {"model"},
                              per_model([](const ModelStatus& s) {
                                return absl::ToDoubleSeconds(s.current->load_duration);
                              }));
  registry_->AddGaugeCallback(
      "ftune_serve_model_version", "Version serving now; each reload adds one.", {"model"},
      per_model([](const ModelStatus& s) { return static_cast<double>(s.current->version); }));
  registry_->AddGaugeCallback("ftune_serve_ready", "1 while the models serve, 0 once draining.", {},
                              [engine] {
                                return std::vector<MetricSample>{{{}, engine->ready() ? 1.0 : 0.0}};
                              });
}

void ServeMetrics::RecordRequest(absl::string_view protocol, const std::string& requested_model,
                                 const absl::Status& status, absl::Duration latency) {
  std::string model = "unknown";
  if (engine_ != nullptr) {
    if (absl::StatusOr<std::string> id = engine_->ResolveModel(requested_model); id.ok()) {
      model = *std::move(id);
    }
  }
  requests_.Increment({model, std::string(protocol), absl::StatusCodeToString(status.code())});
  latency_.Observe({model, std::string(protocol)}, absl::ToDoubleSeconds(latency));
}

void ServeMetrics::RecordBatch(const BatchReport& batch) {
  batch_size_.Observe({batch.model_id}, batch.size);
  batch_seconds_.Observe({batch.model_id}, absl::ToDoubleSeconds(batch.forward));
}

}  // namespace ftune::serve
