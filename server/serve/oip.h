// The Open Inference Protocol v2 (KServe v2, Triton's HTTP/gRPC API) for ftserve's
// classifiers, free of any transport: the REST handlers turn JSON (or binary tensors) into an
// OipInferRequest and the result back. A model takes one input, `waveform` (FP32, [B, N]:
// B clips padded to N samples, each `lengths[i]` long, at `sample_rate`), and gives two
// outputs, `probabilities` (FP32, [B, labels]) and `label` (BYTES, [B]).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/serve/classify_request.h"
#include "server/serve/inference_engine.h"

namespace ftune::serve {

inline constexpr char kOipWaveform[] = "waveform";
inline constexpr char kOipProbabilities[] = "probabilities";
inline constexpr char kOipLabel[] = "label";
// Model metadata's `platform`.
inline constexpr char kOipPlatform[] = "ftune_hubert_classifier";

// A tensor of the model's signature (metadata); -1 is a dimension of any size.
struct OipTensorSpec {
  std::string name;
  std::string datatype;
  std::vector<int64_t> shape;
};

// The model's inputs (waveform) and outputs (probabilities, label).
std::vector<OipTensorSpec> OipInputs(const ServedModel& model);
std::vector<OipTensorSpec> OipOutputs(const ServedModel& model);

// Extensions the server supports (ServerMetadata).
inline const std::vector<std::string>& OipExtensions() {
  static const std::vector<std::string> kExtensions = {"binary_tensor_data"};
  return kExtensions;
}

// A BYTES tensor in raw form: each element as a 4-byte little-endian length, then its bytes.
std::string SerializeBytesTensor(const std::vector<std::string>& elements);

struct OipInferRequest {
  // Echoed in the response.
  std::string id;
  std::string model;
  // Empty: the version serving now; otherwise it must be that version.
  std::string version;
  // The one input.
  std::string input_name;
  std::string datatype;
  std::vector<int64_t> shape;  // [N] or [B, N]
  std::vector<float> data;     // row-major
  // Hz; absent = 16000.
  std::optional<double> sample_rate;
  // Samples of each row; empty = every row is N long.
  std::vector<int64_t> lengths;
  // Outputs asked for; empty = both.
  std::vector<std::string> outputs;
};

struct OipInferResult {
  std::shared_ptr<const ServedModel> model;
  int64_t rows = 0;
  // rows x labels, row-major.
  std::vector<float> probabilities;
  // The most probable label of each row.
  std::vector<std::string> labels;
  bool probabilities_requested = true;
  bool label_requested = true;
};

// The version serving `model` when `version` is empty or names it; NOT_FOUND otherwise.
absl::StatusOr<std::shared_ptr<const ServedModel>> FindOipModel(const InferenceEngine& engine,
                                                                const std::string& model,
                                                                const std::string& version);

// Checks the request against the model's signature, prepares every row (resampled to
// 16 kHz, within `limits`) and classifies the rows through the engine's batcher; `done` runs
// once (on a batch thread, or inline for an error found before queueing).
void RunOipInferAsync(InferenceEngine& engine, const OipInferRequest& request,
                      const ServiceLimits& limits, absl::Time deadline,
                      std::function<void(absl::StatusOr<OipInferResult>)> done);

// The same, waiting on the calling thread.
absl::StatusOr<OipInferResult> RunOipInfer(InferenceEngine& engine, const OipInferRequest& request,
                                           const ServiceLimits& limits, absl::Time deadline);

}  // namespace ftune::serve
