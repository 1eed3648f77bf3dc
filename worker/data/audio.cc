#include "worker/data/audio.h"

#include <sndfile.h>
#include <soxr.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"

namespace ftune::data {
namespace {

// Frames read per sf_readf_float call.
constexpr sf_count_t kReadFrames = 8192;
// Longest source accepted: a day of audio is certainly a mistake (and would exhaust memory).
constexpr double kMaxSeconds = 6 * 3600;

struct SndfileCloser {
  void operator()(SNDFILE* f) const { sf_close(f); }
};
using SndfilePtr = std::unique_ptr<SNDFILE, SndfileCloser>;

// libsndfile's virtual I/O over a byte buffer.
struct MemoryFile {
  std::string_view bytes;
  sf_count_t pos = 0;
};

sf_count_t MemLength(void* user) { return static_cast<MemoryFile*>(user)->bytes.size(); }

sf_count_t MemSeek(sf_count_t offset, int whence, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? f->pos
                                                                : sf_count_t(f->bytes.size());
  sf_count_t pos = base + offset;
  if (pos < 0 || pos > sf_count_t(f->bytes.size())) return -1;
  f->pos = pos;
  return pos;
}

sf_count_t MemRead(void* ptr, sf_count_t count, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  sf_count_t n = std::min<sf_count_t>(count, sf_count_t(f->bytes.size()) - f->pos);
  if (n <= 0) return 0;
  std::memcpy(ptr, f->bytes.data() + f->pos, n);
  f->pos += n;
  return n;
}

sf_count_t MemWrite(const void*, sf_count_t, void*) { return 0; }
sf_count_t MemTell(void* user) { return static_cast<MemoryFile*>(user)->pos; }

// Reads every frame of an open file, mixes to mono, checks it and converts it to 16 kHz.
absl::StatusOr<std::vector<float>> DecodeOpen(SNDFILE* file, const SF_INFO& sf_info,
                                              const std::string& name, AudioInfo* info) {
  if (sf_info.channels <= 0 || sf_info.samplerate <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": invalid header (", sf_info.channels, " channels, ",
                     sf_info.samplerate, " Hz)"));
  }
  if (sf_info.frames <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": no audio frames"));
  }
  if (double(sf_info.frames) / sf_info.samplerate > kMaxSeconds) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": ", sf_info.frames, " frames is longer than ", kMaxSeconds, " s"));
  }
  const int channels = sf_info.channels;
  std::vector<float> mono;
  // The header's frame count is only a claim: reserve at most 64 MB up front and grow as the
  // frames really arrive (a forged header asked for gigabytes; found by fuzzing).
  mono.reserve(static_cast<size_t>(std::min<sf_count_t>(sf_info.frames, sf_count_t{1} << 24)));
  std::vector<float> chunk(kReadFrames * channels);
  while (true) {
    sf_count_t got = sf_readf_float(file, chunk.data(), kReadFrames);
    if (got <= 0) break;
    for (sf_count_t i = 0; i < got; ++i) {
      const float* frame = &chunk[i * channels];
      float sum = 0;
      for (int c = 0; c < channels; ++c) sum += frame[c];
      mono.push_back(sum / channels);
    }
  }
  if (sf_error(file) != SF_ERR_NO_ERROR) {
    return absl::DataLossError(absl::StrCat(name, ": read error: ", sf_strerror(file)));
  }
  // A file cut short: the header promises more frames than the data holds.
  if (sf_count_t(mono.size()) < sf_info.frames) {
    return absl::DataLossError(absl::StrCat(name, ": truncated: header says ", sf_info.frames,
                                            " frames, only ", mono.size(), " could be read"));
  }
  if (mono.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": no audio frames"));
  for (float x : mono) {
    if (!std::isfinite(x)) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": contains NaN or infinite samples"));
    }
  }
  if (info != nullptr) {
    info->source_rate = sf_info.samplerate;
    info->channels = channels;
    info->seconds = double(mono.size()) / sf_info.samplerate;
  }
  if (sf_info.samplerate == kSampleRate) return mono;
  auto resampled = Resample(mono, sf_info.samplerate, kSampleRate);
  if (!resampled.ok()) {
    return absl::Status(resampled.status().code(),
                        absl::StrCat(name, ": ", resampled.status().message()));
  }
  return resampled;
}

// libsndfile notes "data : <header size> (should be <size left in the file>)" when the data
// chunk runs past the end of the file, and then quietly reads less: a truncated file.
bool LogSaysTruncated(SNDFILE* file) {
  char log[8192] = {};
  sf_command(file, SFC_GET_LOG_INFO, log, sizeof(log) - 1);
  const char* line = std::strstr(log, "\ndata : ");
  if (line == nullptr) return false;
  long long declared = 0, actual = 0;
  return std::sscanf(line, "\ndata : %lld (should be %lld)", &declared, &actual) == 2 &&
         actual < declared;
}

}  // namespace

absl::StatusOr<std::vector<float>> DecodeFile(const std::string& path, AudioInfo* info) {
  SF_INFO sf_info;
  std::memset(&sf_info, 0, sizeof(sf_info));
  SndfilePtr file(sf_open(path.c_str(), SFM_READ, &sf_info));
  if (!file) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot decode: ", sf_strerror(nullptr)));
  }
  if (LogSaysTruncated(file.get())) {
    return absl::DataLossError(absl::StrCat(path, ": truncated: data chunk extends past the "
                                            "end of the file"));
  }
  return DecodeOpen(file.get(), sf_info, path, info);
}

absl::StatusOr<std::vector<float>> DecodeBytes(std::string_view bytes, AudioInfo* info) {
  const std::string name = "audio bytes";
  if (bytes.empty()) return absl::InvalidArgumentError(name + ": empty");
  SF_VIRTUAL_IO io{MemLength, MemSeek, MemRead, MemWrite, MemTell};
  MemoryFile mem{bytes, 0};
  SF_INFO sf_info;
  std::memset(&sf_info, 0, sizeof(sf_info));
  SndfilePtr file(sf_open_virtual(&io, SFM_READ, &sf_info, &mem));
  if (!file) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": cannot decode: ", sf_strerror(nullptr)));
  }
  if (LogSaysTruncated(file.get())) {
    return absl::DataLossError(name + ": truncated: data chunk extends past the end");
  }
  return DecodeOpen(file.get(), sf_info, name, info);
}

absl::StatusOr<std::vector<float>> Resample(const std::vector<float>& in, int from_rate,
                                            int to_rate) {
  if (from_rate <= 0 || to_rate <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resample from ", from_rate, " Hz to ", to_rate, " Hz"));
  }
  if (from_rate == to_rate || in.empty()) return in;
  const double ratio = double(to_rate) / from_rate;
  const size_t out_len = size_t(std::llround(in.size() * ratio));
  std::vector<float> out(out_len);
  if (out_len == 0) return out;
  soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);
  size_t done_in = 0, done_out = 0;
  soxr_error_t error = soxr_oneshot(from_rate, to_rate, 1, in.data(), in.size(), &done_in,
                                    out.data(), out_len, &done_out, &io, &quality, nullptr);
  if (error) {
    return absl::InternalError(absl::StrCat("soxr resampling ", from_rate, " -> ", to_rate,
                                            " Hz failed: ", error));
  }
  out.resize(done_out);
  // soxr may return one sample short of the rounded length; pad with the last value so the
  // length is a pure function of the input length.
  if (done_out > 0) out.resize(out_len, out[done_out - 1]);
  return out;
}

void Normalize(float* samples, int64_t n) {
  if (n <= 0) return;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += samples[i];
  const double mean = sum / n;
  double sq = 0;
  for (int64_t i = 0; i < n; ++i) {
    double d = samples[i] - mean;
    sq += d * d;
  }
  const double scale = 1.0 / std::sqrt(sq / n + 1e-7);
  for (int64_t i = 0; i < n; ++i) samples[i] = float((samples[i] - mean) * scale);
}

}  // namespace ftune::data
