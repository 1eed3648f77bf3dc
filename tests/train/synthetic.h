// Synthetic labelled audio for trainer tests: tones whose class is their pitch, and optionally
// the direction of a pitch glide.
#pragma once

#include <string>
#include <vector>

#include "worker/data/dataset.h"

namespace ftune::train::testing {

// Writes a mono 16 kHz 16-bit WAV of a tone centred on `hz` plus a little noise drawn from
// `seed`. `glide` 1 is a steady sine; otherwise a voiced tone (three harmonics) whose pitch
// moves by the factor `glide` over the clip, from hz / sqrt(glide) to hz * sqrt(glide), so a
// rising and a falling glide share their pitches and differ only in their order.
void WriteToneWav(const std::string& path, double hz, double seconds, unsigned seed,
                  double glide = 1.0);

struct ToneSetOptions {
  std::vector<double> class_hz = {220, 440, 880};
  // Per class, the glide factor (empty: all steady).
  std::vector<double> class_glide;
  int train_per_class = 4;
  int eval_per_class = 2;
  double seconds = 0.5;
  // Vary pitch by up to this fraction per clip, so the task is not a lookup.
  double jitter = 0.05;
};

// Writes DIR/<class>/<n>.wav files and returns them as a Dataset (labels c0, c1, ...).
data::Dataset MakeToneDataset(const std::string& dir, const ToneSetOptions& options);

}  // namespace ftune::train::testing
