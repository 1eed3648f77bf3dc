// Wav2Vec2FeatureExtractor semantics: per-clip normalisation, right padding, and whether the
// model sees an attention mask (lengths) at all.
#pragma once

#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "worker/model/config.h"
#include "worker/model/hubert.h"

namespace ftune::model {

// Zero mean, unit variance (population variance, eps 1e-7) of a 1-D waveform.
torch::Tensor NormalizeWaveform(const torch::Tensor& samples);

struct ModelInput {
  torch::Tensor input_values;  // [B, T] float32
  torch::Tensor lengths;       // [B] int64, undefined when the model takes no mask
};

// Pads 1-D float waveforms on the right with padding_value, normalising each over its own
// samples when do_normalize. Lengths are set only when return_attention_mask: HF's group-norm
// models are meant to see zero padding and no mask.
ModelInput MakeModelInput(const std::vector<torch::Tensor>& waveforms, const PreprocessorConfig& config);

// forward() under NoGradGuard with libtorch errors turned into a Status.
absl::StatusOr<torch::Tensor> ForwardLogits(HubertForSequenceClassification& model, const ModelInput& input);

}  // namespace ftune::model
