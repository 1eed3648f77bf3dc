// Hugging Face folder I/O for HubertForSequenceClassification: strict loading from
// model.safetensors or pytorch_model.bin, saving as config.json + model.safetensors +
// preprocessor_config.json, and presets for random-init architectures.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/config.h"
#include "worker/model/hubert.h"

namespace ftune::model {

struct LoadedModel {
  HubertForSequenceClassification model{nullptr};
  HubertConfig config;
  PreprocessorConfig preprocessor;
  std::vector<std::string> notes;  // e.g. "fresh classification head: folder holds a bare HubertModel"
};

// Preset name (tiny | hubert-base | hubert-large) or HF folder (model.safetensors or
// pytorch_model.bin). `labels` non-empty sets the label set (a differing head is
// re-initialised, reported in notes); empty keeps the folder's id2label (a preset with empty
// labels is an error). `seed` seeds every fresh weight (a generator of its own: torch's
// global one is untouched). The model is on CPU in eval mode.
absl::StatusOr<LoadedModel> LoadModel(const std::string& preset_or_dir,
                                      const std::vector<std::string>& labels, uint64_t seed);

// Writes config.json, model.safetensors, preprocessor_config.json into `dir` (exists).
absl::Status SaveModelFolder(const HubertForSequenceClassification& model,
                             const PreprocessorConfig& preprocessor, const std::string& dir);

// The checkpoint's view of the model: HF key -> tensor (weight-norm conv as weight_g/weight_v).
std::map<std::string, torch::Tensor> StateDict(const HubertForSequenceClassification& model);

// Copies `tensors` into the model. Strict: an unknown, missing or mis-shaped tensor is an
// error naming it. Accepted spellings: the positional conv as weight_g/weight_v,
// parametrizations.weight.original0/1 or a plain weight. Keys in `fresh_ok` (exact names or
// prefixes ending in '.') may be missing; they keep their current values and are listed in
// *missing_fresh. Tensors of another float dtype are converted.
absl::Status LoadStateDict(HubertForSequenceClassification& model,
                           std::map<std::string, torch::Tensor> tensors,
                           const std::vector<std::string>& fresh_ok,
                           std::vector<std::string>* missing_fresh);

// Reads a transformers pytorch_model.bin (torch.save zip of a state dict) via libtorch's
// unpickler.
absl::StatusOr<std::map<std::string, torch::Tensor>> ReadPytorchBin(const std::string& path);

}  // namespace ftune::model
