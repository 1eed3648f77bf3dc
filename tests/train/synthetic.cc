#include "tests/train/synthetic.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <algorithm>

namespace ftune::train::testing {

namespace {

void Put16(std::ofstream& out, uint16_t v) { out.put(char(v & 0xff)).put(char(v >> 8)); }
void Put32(std::ofstream& out, uint32_t v) {
  Put16(out, uint16_t(v & 0xffff));
  Put16(out, uint16_t(v >> 16));
}

}  // namespace

void WriteToneWav(const std::string& path, double hz, double seconds, unsigned seed,
                  double glide) {
  const int rate = 16000;
  const uint32_t n = static_cast<uint32_t>(seconds * rate);
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0.0, 0.02);
  std::uniform_real_distribution<double> phase(0.0, 2 * M_PI);
  const double p0 = phase(rng);
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write("RIFF", 4);
  Put32(out, 36 + n * 2);
  out.write("WAVEfmt ", 8);
  Put32(out, 16);
  Put16(out, 1);  // PCM
  Put16(out, 1);  // mono
  Put32(out, rate);
  Put32(out, rate * 2);
  Put16(out, 2);
  Put16(out, 16);
  out.write("data", 4);
  Put32(out, n * 2);
  // Exponential glide: f(t) = f0 * glide^(t / seconds); the phase is its integral.
  const double f0 = hz / std::sqrt(glide);
  const double k = std::log(glide) / seconds;
  for (uint32_t i = 0; i < n; ++i) {
    const double t = static_cast<double>(i) / rate;
    double v;
    if (glide == 1.0) {
      v = 0.5 * std::sin(p0 + 2 * M_PI * hz * t);
    } else {
      const double phase = p0 + 2 * M_PI * f0 * (std::exp(k * t) - 1) / k;
      v = 0.3 * std::sin(phase) + 0.15 * std::sin(2 * phase) + 0.08 * std::sin(3 * phase);
    }
    v += noise(rng);
    v = std::max(-1.0, std::min(1.0, v));
    Put16(out, static_cast<uint16_t>(static_cast<int16_t>(std::lround(v * 32767))));
  }
}

data::Dataset MakeToneDataset(const std::string& dir, const ToneSetOptions& options) {
  data::Dataset dataset;
  std::mt19937 rng(1234);
  std::uniform_real_distribution<double> jitter(-options.jitter, options.jitter);
  unsigned seed = 1;
  for (size_t c = 0; c < options.class_hz.size(); ++c) {
    const std::string label = "c" + std::to_string(c);
    dataset.labels.push_back(label);
    for (int i = 0; i < options.train_per_class + options.eval_per_class; ++i) {
      const std::string path = dir + "/" + label + "/" + std::to_string(i) + ".wav";
      const double glide = c < options.class_glide.size() ? options.class_glide[c] : 1.0;
      WriteToneWav(path, options.class_hz[c] * (1 + jitter(rng)), options.seconds, seed++, glide);
      data::Clip clip{path, static_cast<int>(c), "", options.seconds};
      (i < options.train_per_class ? dataset.train : dataset.eval).push_back(clip);
    }
  }
  auto by_path = [](const data::Clip& a, const data::Clip& b) { return a.path < b.path; };
  std::sort(dataset.train.begin(), dataset.train.end(), by_path);
  std::sort(dataset.eval.begin(), dataset.eval.end(), by_path);
  for (const auto& l : dataset.labels) dataset.summary.add_labels(l);
  dataset.summary.set_train_files(dataset.train.size());
  dataset.summary.set_eval_files(dataset.eval.size());
  return dataset;
}

}  // namespace ftune::train::testing
