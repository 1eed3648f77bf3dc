// Decode + resample throughput on a dataset folder (e.g. the demo corpus):
//   data_decode_bench DIR [DIR...] [--threads N]
// For each folder: one-thread DecodeFile over every file, then LoadDataset with N decoding
// threads (scan, decode, split) on a cold cache, then a BatchLoader epoch from the warm cache.
// Also resampling alone on 10 s of noise from common rates. Prints figures; asserts nothing.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "worker/data/audio.h"
#include "worker/data/batch_loader.h"
#include "worker/data/dataset.h"

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::vector<std::string> AudioFiles(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    const std::string ext = e.path().extension().string();
    if (e.is_regular_file() && (ext == ".wav" || ext == ".flac" || ext == ".ogg")) {
      files.push_back(e.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

void BenchFolder(const std::string& dir, int threads) {
  using namespace ftune::data;
  const std::vector<std::string> files = AudioFiles(dir);
  if (files.empty()) {
    std::printf("%s: no audio files\n", dir.c_str());
    return;
  }
  // 1. One thread, DecodeFile (libsndfile + mono + soxr to 16 kHz).
  double source_seconds = 0;
  int failed = 0;
  std::map<int, int> rates;
  auto t = Clock::now();
  for (const auto& f : files) {
    AudioInfo info;
    auto audio = DecodeFile(f, &info);
    if (!audio.ok()) {
      ++failed;
      continue;
    }
    source_seconds += info.seconds;
    ++rates[info.source_rate];
  }
  double s = Since(t);
  std::string rate_list;
  for (auto [r, n] : rates) rate_list += " " + std::to_string(r) + "Hz x" + std::to_string(n);
  std::printf("%s: %zu files (%d failed), %.1f s of audio, rates:%s\n", dir.c_str(), files.size(),
              failed, source_seconds, rate_list.c_str());
  std::printf("  decode+resample, 1 thread:    %8.1f files/s  %8.1f audio-s/s  (%.2f s)\n",
              files.size() / s, source_seconds / s, s);

  // 2. LoadDataset with N threads on a cold cache.
  ftune::v1::DatasetSpec spec;
  spec.set_path(dir);
  AudioCache cache;
  t = Clock::now();
  auto ds = LoadDataset(spec, {}, 42, &cache, threads);
  s = Since(t);
  if (!ds.ok()) {
    std::printf("  LoadDataset failed: %s\n", std::string(ds.status().message()).c_str());
    return;
  }
  std::printf("  LoadDataset, %d threads:       %8.1f files/s  %8.1f audio-s/s  (%.2f s)\n",
              threads, files.size() / s, source_seconds / s, s);

  // 3. A training epoch of batches from the warm cache (crop 3 s, normalise, pad, collate).
  LoaderOptions options;
  options.batch_size = 8;
  options.shuffle = true;
  options.max_seconds = 3;
  options.random_crop = true;
  options.threads = threads;
  double batch_seconds = 0;
  t = Clock::now();
  BatchLoader loader(ds->train, &cache, options);
  int64_t batches = 0;
  while (true) {
    auto next = loader.Next();
    if (!next.ok() || !next->has_value()) break;
    batch_seconds += (*next)->lengths.sum().item<int64_t>() / double(kSampleRate);
    ++batches;
  }
  s = Since(t);
  std::printf("  BatchLoader epoch, %d threads: %8.1f batches/s %7.1f audio-s/s  (%ld batches)\n",
              threads, batches / s, batch_seconds / s, long(batches));
}

void BenchResample() {
  std::mt19937 rng(1);
  std::normal_distribution<float> noise(0, 0.1f);
  for (int rate : {8000, 22050, 44100, 48000}) {
    std::vector<float> in(size_t(rate) * 10);
    for (float& x : in) x = noise(rng);
    const int reps = 5;
    auto t = Clock::now();
    for (int i = 0; i < reps; ++i) {
      auto out = ftune::data::Resample(in, rate, ftune::data::kSampleRate);
      if (!out.ok()) return;
    }
    const double s = Since(t);
    std::printf("resample %5d -> 16000 Hz (soxr HQ): %8.1f audio-s/s\n", rate, reps * 10 / s);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> dirs;
  int threads = 2;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else {
      dirs.push_back(argv[i]);
    }
  }
  if (dirs.empty()) {
    std::fprintf(stderr,
                 "usage: data_decode_bench DIR [DIR...] [--threads N]\n"
                 "  e.g. scripts/make-demo-dataset /tmp/demo && data_decode_bench /tmp/demo\n");
    return 2;
  }
  BenchResample();
  for (const auto& dir : dirs) BenchFolder(dir, threads);
  return 0;
}
