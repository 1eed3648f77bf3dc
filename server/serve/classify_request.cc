#include "server/serve/classify_request.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "worker/data/audio.h"

namespace ftune::serve {
namespace {

absl::StatusOr<std::vector<float>> CheckDuration(std::vector<float> samples,
                                                 const ServiceLimits& limits) {
  const double seconds = static_cast<double>(samples.size()) / data::kSampleRate;
  if (seconds > limits.max_audio_seconds) {
    return absl::InvalidArgumentError(absl::StrCat("the clip lasts ", seconds, " s; the limit is ",
                                                   limits.max_audio_seconds, " s"));
  }
  if (samples.empty()) return absl::InvalidArgumentError("the audio holds no samples");
  return samples;
}

}  // namespace

absl::StatusOr<std::vector<float>> PreparePcm(const float* samples, size_t count,
                                              double sample_rate, const ServiceLimits& limits,
                                              absl::string_view samples_field,
                                              absl::string_view rate_field) {
  if (!(sample_rate >= 1000 && sample_rate <= 384000) || sample_rate != std::floor(sample_rate)) {
    return absl::InvalidArgumentError(
        absl::StrCat(rate_field, " ", sample_rate, " is not a whole number of Hz in 1000..384000"));
  }
  if (count == 0) return absl::InvalidArgumentError(absl::StrCat(samples_field, " is empty"));
  if (static_cast<int64_t>(count) * 4 > limits.max_request_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        samples_field, " has ", count, " samples; the limit is ", limits.max_request_bytes / 4));
  }
  if (!std::all_of(samples, samples + count, [](float x) { return std::isfinite(x); })) {
    return absl::InvalidArgumentError(absl::StrCat(samples_field, " holds NaN or infinity"));
  }
  std::vector<float> raw(samples, samples + count);
  const int rate = static_cast<int>(sample_rate);
  if (rate == data::kSampleRate) return CheckDuration(std::move(raw), limits);
  absl::StatusOr<std::vector<float>> resampled = data::Resample(raw, rate, data::kSampleRate);
  if (!resampled.ok()) return resampled.status();
  return CheckDuration(*std::move(resampled), limits);
}

absl::StatusOr<std::vector<float>> PrepareAudioFile(absl::string_view bytes,
                                                    const ServiceLimits& limits,
                                                    absl::string_view field) {
  if (bytes.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
  if (static_cast<int64_t>(bytes.size()) > limits.max_request_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " has ", bytes.size(), " bytes; the limit is ", limits.max_request_bytes));
  }
  absl::StatusOr<std::vector<float>> decoded = data::DecodeBytes(std::string(bytes));
  if (!decoded.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " cannot be decoded: ", decoded.status().message()));
  }
  return CheckDuration(*std::move(decoded), limits);
}

void ClassifyAllAsync(InferenceEngine& engine, const std::string& model_id,
                      std::vector<std::vector<float>> clips, absl::Time deadline,
                      ClassifyAllCallback done) {
  if (clips.empty()) {
    done(absl::InvalidArgumentError("no clip to classify"));
    return;
  }
  // Shared by the clips' callbacks, which run on the batch thread; the last one answers.
  struct Pending {
    std::mutex mu;
    size_t left = 0;
    std::vector<absl::StatusOr<Classification>> results;
    ClassifyAllCallback done;
  };
  auto pending = std::make_shared<Pending>();
  pending->left = clips.size();
  pending->results.assign(clips.size(), absl::UnknownError("not answered"));
  pending->done = std::move(done);
  for (size_t i = 0; i < clips.size(); ++i) {
    engine.Classify(model_id, std::move(clips[i]), deadline,
                    [pending, i](absl::StatusOr<Classification> result) {
                      {
                        std::lock_guard<std::mutex> lock(pending->mu);
                        pending->results[i] = std::move(result);
                        if (--pending->left > 0) return;
                      }
                      std::vector<Classification> answers;
                      for (absl::StatusOr<Classification>& r : pending->results) {
                        if (!r.ok()) {
                          pending->done(r.status());
                          return;
                        }
                        answers.push_back(*std::move(r));
                      }
                      pending->done(std::move(answers));
                    });
  }
}

absl::StatusOr<std::vector<Classification>> ClassifyAll(InferenceEngine& engine,
                                                        const std::string& model_id,
                                                        std::vector<std::vector<float>> clips,
                                                        absl::Time deadline) {
  // The engine answers every clip exactly once (at the latest when it shuts down).
  return AwaitCallback<absl::StatusOr<std::vector<Classification>>>([&](auto done) {
    ClassifyAllAsync(engine, model_id, std::move(clips), deadline, std::move(done));
  });
}

std::vector<int> RankLabels(const std::vector<float>& probabilities) {
  std::vector<int> order(probabilities.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&probabilities](int a, int b) { return probabilities[a] > probabilities[b]; });
  return order;
}

}  // namespace ftune::serve
