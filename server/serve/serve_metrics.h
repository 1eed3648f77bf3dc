// ftserve's Prometheus metrics: requests by model, protocol and code, their latency, the
// batcher's queue depth and batch sizes, and each model's load time and version.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "server/serve/inference_engine.h"

namespace ftune::serve {

inline constexpr char kProtocolGrpc[] = "grpc";
inline constexpr char kProtocolRest[] = "rest";

class ServeMetrics {
 public:
  // Registers the families in `registry`, which must outlive this.
  explicit ServeMetrics(MetricsRegistry* registry);

  // Reads queue depth and model load time and version from `engine` on every scrape, and
  // names requests by the engine's model ids. Call once, before serving.
  void WatchEngine(const InferenceEngine* engine);

  // One answered request. `requested_model` is what the client asked for; requests for a
  // model that is not served count under model="unknown" (clients cannot add series). The
  // code label is the canonical status name (OK, RESOURCE_EXHAUSTED, ...) in both protocols.
  void RecordRequest(absl::string_view protocol, const std::string& requested_model,
                     const absl::Status& status, absl::Duration latency);
  // One forward pass (EngineOptions::on_batch).
  void RecordBatch(const BatchReport& batch);

 private:
  MetricsRegistry* const registry_;
  const InferenceEngine* engine_ = nullptr;
  Counter& requests_;
  Histogram& latency_;
  Histogram& batch_size_;
  Histogram& batch_seconds_;
};

}  // namespace ftune::serve
