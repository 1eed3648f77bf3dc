// Audio decoding and resampling: any file libsndfile reads becomes 16 kHz mono float32.
// Free of libtorch so that anything needing only audio can link it cheaply.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace ftune::data {

// HuBERT's input rate.
constexpr int kSampleRate = 16000;

// What the source held before conversion.
struct AudioInfo {
  int source_rate = 0;
  int channels = 0;
  double seconds = 0;  // duration of the source
};

// Decodes a file (or in-memory bytes) to 16 kHz mono float32: channels are averaged and the
// rate is converted with libsoxr's high-quality filter. Errors name the file and the reason
// (unreadable, not audio, empty, truncated, non-finite samples).
absl::StatusOr<std::vector<float>> DecodeFile(const std::string& path, AudioInfo* info = nullptr);
absl::StatusOr<std::vector<float>> DecodeBytes(std::string_view bytes, AudioInfo* info = nullptr);

// Resamples mono float audio with libsoxr (SOXR_HQ). The output has
// round(in.size() * to_rate / from_rate) samples. Equal rates return a copy.
absl::StatusOr<std::vector<float>> Resample(const std::vector<float>& in, int from_rate,
                                            int to_rate);

// In place: zero mean, unit variance over the n samples, x' = (x - mean) / sqrt(var + 1e-7),
// as Hugging Face's Wav2Vec2FeatureExtractor (population variance).
void Normalize(float* samples, int64_t n);

}  // namespace ftune::data
