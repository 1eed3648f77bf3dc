// What ftserve's front ends (ftune's gRPC InferenceService, the Open Inference Protocol and
// the curl-friendly REST endpoint) share between the wire and the engine: checking and
// resampling audio, classifying clips through the batcher and waiting for them, ranking
// labels. Errors are INVALID_ARGUMENT naming the field the caller names.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/serve/inference_engine.h"

namespace ftune::serve {

struct ServiceLimits {
  // Longest clip accepted, after decoding.
  double max_audio_seconds = 60;
  // Largest encoded file or PCM payload accepted.
  int64_t max_request_bytes = 32 << 20;
};

// Raw mono samples at `sample_rate` (any of 1000..384000 Hz) resampled to 16 kHz. Refuses
// an empty or non-finite clip, a payload over the limit and a clip longer than the limit.
// `samples_field` and `rate_field` name the fields in errors ("pcm.samples", ...).
absl::StatusOr<std::vector<float>> PreparePcm(const float* samples, size_t count,
                                              double sample_rate, const ServiceLimits& limits,
                                              absl::string_view samples_field,
                                              absl::string_view rate_field);

// An audio file in any format libsndfile reads, decoded to 16 kHz mono, with the same
// limits; `field` names it in errors.
absl::StatusOr<std::vector<float>> PrepareAudioFile(absl::string_view bytes,
                                                    const ServiceLimits& limits,
                                                    absl::string_view field);

using ClassifyAllCallback = std::function<void(absl::StatusOr<std::vector<Classification>>)>;

// Queues every clip on `model_id`'s batcher; `done` runs once, when all are answered (on a
// batch thread, or inline for an immediate error), with the answers in clip order or the
// first error of any clip (in clip order).
void ClassifyAllAsync(InferenceEngine& engine, const std::string& model_id,
                      std::vector<std::vector<float>> clips, absl::Time deadline,
                      ClassifyAllCallback done);

// The same, waiting for the answers on the calling thread.
absl::StatusOr<std::vector<Classification>> ClassifyAll(InferenceEngine& engine,
                                                        const std::string& model_id,
                                                        std::vector<std::vector<float>> clips,
                                                        absl::Time deadline);

// Calls `start` with a callback and waits for the value it is called with (once).
template <typename T, typename Start>
T AwaitCallback(Start start) {
  std::promise<T> answered;
  std::future<T> result = answered.get_future();
  start([&answered](T value) { answered.set_value(std::move(value)); });
  return result.get();
}

// Label indices, most probable first (ties keep the model's order).
std::vector<int> RankLabels(const std::vector<float>& probabilities);

}  // namespace ftune::serve
