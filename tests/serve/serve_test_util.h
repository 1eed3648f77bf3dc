// Helpers shared by the serving tests: a tiny classifier saved as a Hugging Face folder,
// synthetic clips, a 16-bit WAV encoder, and the in-process reference answer.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/support/wav.h"
#include "worker/data/audio.h"
#include "worker/model/checkpoint.h"

namespace ftune::serve {

inline const std::vector<std::string> kLabels = {"calm", "angry", "sad"};

// Saves a random `tiny` classifier (fixed by `seed`) into `dir`.
inline void SaveTinyModel(const std::string& dir, uint64_t seed) {
  auto loaded = model::LoadModel("tiny", kLabels, seed);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(model::SaveModelFolder(loaded->model, loaded->preprocessor, dir).ok());
}

// A tiny classifier with the base models' group-norm feature encoder and post-LN layers,
// whose preprocessor (like facebook/hubert-base-ls960's) asks for no attention mask.
inline void SaveTinyGroupNormModel(const std::string& dir, uint64_t seed) {
  auto config = model::PresetConfig("tiny");
  ASSERT_TRUE(config.ok()) << config.status();
  config->feat_extract_norm = "group";
  config->do_stable_layer_norm = false;
  config->id2label = kLabels;
  torch::manual_seed(seed);
  model::HubertForSequenceClassification net(*config);
  net->init_weights();
  const model::PreprocessorConfig preprocessor = model::DefaultPreprocessorFor(*config);
  ASSERT_FALSE(preprocessor.return_attention_mask);
  ASSERT_TRUE(model::SaveModelFolder(net, preprocessor, dir).ok());
}

// A chirp with some harmonics, `seconds` long at 16 kHz; `variant` shifts the pitch.
inline std::vector<float> MakeClip(double seconds, int variant) {
  const int64_t n = static_cast<int64_t>(seconds * data::kSampleRate);
  std::vector<float> out(n);
  const double f0 = 120.0 + 35.0 * variant;
  for (int64_t i = 0; i < n; ++i) {
    const double t = static_cast<double>(i) / data::kSampleRate;
    const double f = f0 * (1.0 + 0.3 * t);
    out[i] = static_cast<float>(0.4 * std::sin(2 * M_PI * f * t) +
                                0.15 * std::sin(2 * M_PI * 3 * f * t));
  }
  return out;
}

using testing::EncodeWav;

// The model's probabilities for one unpadded clip, computed directly (fp32).
inline std::vector<float> ReferenceProbabilities(const std::string& dir,
                                                 std::vector<float> samples) {
  auto loaded = model::LoadModel(dir, {}, 0);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  if (!loaded.ok()) return {};
  if (loaded->preprocessor.do_normalize) {
    data::Normalize(samples.data(), static_cast<int64_t>(samples.size()));
  }
  torch::NoGradGuard no_grad;
  loaded->model->eval();
  torch::Tensor audio = torch::from_blob(samples.data(), {1, static_cast<int64_t>(samples.size())},
                                         torch::kFloat32).clone();
  torch::Tensor lengths = torch::tensor({static_cast<int64_t>(samples.size())}, torch::kInt64);
  torch::Tensor p = torch::softmax(loaded->model->forward(audio, lengths), -1).contiguous();
  return std::vector<float>(p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
}

}  // namespace ftune::serve
