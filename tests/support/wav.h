// 16-bit PCM WAV bytes from float samples, for tests and benchmarks that send audio files.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace ftune::testing {

// The bytes of a 16-bit PCM WAV file; every channel carries the same samples.
inline std::string EncodeWav(const std::vector<float>& samples, int rate, int channels = 1) {
  auto put32 = [](std::string& s, uint32_t v) {
    for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  auto put16 = [](std::string& s, uint16_t v) {
    s.push_back(static_cast<char>(v & 0xff));
    s.push_back(static_cast<char>(v >> 8));
  };
  const uint32_t data_bytes = static_cast<uint32_t>(samples.size() * channels * 2);
  std::string wav = "RIFF";
  put32(wav, 36 + data_bytes);
  wav += "WAVEfmt ";
  put32(wav, 16);
  put16(wav, 1);
  put16(wav, static_cast<uint16_t>(channels));
  put32(wav, static_cast<uint32_t>(rate));
  put32(wav, static_cast<uint32_t>(rate * channels * 2));
  put16(wav, static_cast<uint16_t>(channels * 2));
  put16(wav, 16);
  wav += "data";
  put32(wav, data_bytes);
  for (float x : samples) {
    const auto v = static_cast<int16_t>(std::lround(std::clamp(x, -1.0f, 1.0f) * 32767));
    for (int c = 0; c < channels; ++c) put16(wav, static_cast<uint16_t>(v));
  }
  return wav;
}

}  // namespace ftune::testing
