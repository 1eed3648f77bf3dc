// Test audio written with libsndfile: tones in any format, rate and channel count, and broken
// files of the kinds found in real datasets.
#pragma once

#include <string>
#include <vector>

namespace ftune::data::testing {

struct ToneSpec {
  int rate = 16000;
  int channels = 1;
  double seconds = 0.25;
  double frequency = 1000;
  // Amplitude per channel (the last one repeats for further channels).
  std::vector<double> amplitudes = {0.5};
  // libsndfile major|subtype, e.g. SF_FORMAT_WAV | SF_FORMAT_PCM_16.
  int format = 0;  // 0 = WAV PCM_16
};

// Writes a sine tone; aborts the test (ADD_FAILURE + empty return) when libsndfile fails.
void WriteTone(const std::string& path, const ToneSpec& spec);
// Writes the given mono float samples as a WAV float file at `rate`.
void WriteSamples(const std::string& path, const std::vector<float>& samples, int rate);
void WriteText(const std::string& path, const std::string& content);
std::string ReadBytes(const std::string& path);

}  // namespace ftune::data::testing
