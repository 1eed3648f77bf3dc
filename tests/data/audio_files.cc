#include "tests/data/audio_files.h"

#include <sndfile.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"

namespace ftune::data::testing {
namespace {

void Write(const std::string& path, const std::vector<float>& interleaved, int rate, int channels,
           int format) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  info.samplerate = rate;
  info.channels = channels;
  info.format = format == 0 ? (SF_FORMAT_WAV | SF_FORMAT_PCM_16) : format;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  if (f == nullptr) {
    ADD_FAILURE() << "cannot write " << path << ": " << sf_strerror(nullptr);
    return;
  }
  sf_writef_float(f, interleaved.data(), sf_count_t(interleaved.size() / channels));
  sf_close(f);
}

}  // namespace

void WriteTone(const std::string& path, const ToneSpec& spec) {
  const int64_t frames = int64_t(std::llround(spec.seconds * spec.rate));
  std::vector<float> data(frames * spec.channels);
  for (int64_t i = 0; i < frames; ++i) {
    const double s = std::sin(2 * M_PI * spec.frequency * double(i) / spec.rate);
    for (int c = 0; c < spec.channels; ++c) {
      const double amp = spec.amplitudes[std::min<size_t>(c, spec.amplitudes.size() - 1)];
      data[i * spec.channels + c] = float(amp * s);
    }
  }
  Write(path, data, spec.rate, spec.channels, spec.format);
}

void WriteSamples(const std::string& path, const std::vector<float>& samples, int rate) {
  Write(path, samples, rate, 1, SF_FORMAT_WAV | SF_FORMAT_FLOAT);
}

void WriteText(const std::string& path, const std::string& content) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << content;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace ftune::data::testing
