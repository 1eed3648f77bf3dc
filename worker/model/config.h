// Hugging Face HubertConfig (config.json) and Wav2Vec2FeatureExtractor settings
// (preprocessor_config.json). Every field that changes the math is parsed; a value we do not
// implement is an error naming the field, never silently ignored.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace ftune::model {

struct HubertConfig {
  // Transformer encoder.
  int hidden_size = 768;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int intermediate_size = 3072;
  std::string hidden_act = "gelu";  // gelu | gelu_new | relu | silu | swish
  double layer_norm_eps = 1e-5;
  bool do_stable_layer_norm = false;  // true: pre-LN layers, final LayerNorm after the stack

  // Convolutional feature encoder.
  std::string feat_extract_norm = "group";  // group (GroupNorm on layer 0) | layer (LayerNorm on all)
  std::string feat_extract_activation = "gelu";
  std::vector<int> conv_dim = {512, 512, 512, 512, 512, 512, 512};
  std::vector<int> conv_kernel = {10, 3, 3, 3, 3, 2, 2};
  std::vector<int> conv_stride = {5, 2, 2, 2, 2, 2, 2};
  bool conv_bias = false;

  // Feature projection and convolutional positional embedding.
  bool feat_proj_layer_norm = true;
  int num_conv_pos_embeddings = 128;
  int num_conv_pos_embedding_groups = 16;

  // Regularisation (training only).
  double hidden_dropout = 0.1;
  double activation_dropout = 0.1;
  double attention_dropout = 0.1;
  double feat_proj_dropout = 0.0;
  double final_dropout = 0.1;  // CTC head only; kept for config.json round trips
  double layerdrop = 0.1;
  bool apply_spec_augment = true;
  double mask_time_prob = 0.05;
  int mask_time_length = 10;
  int mask_time_min_masks = 2;
  double mask_feature_prob = 0.0;
  int mask_feature_length = 10;
  int mask_feature_min_masks = 0;

  // Sequence-classification head.
  int classifier_proj_size = 256;
  bool use_weighted_layer_sum = false;
  double initializer_range = 0.02;

  std::vector<std::string> id2label;  // label order; num_labels() = id2label.size()

  // Fields we do not interpret (vocab_size, token ids, _name_or_path, ...), echoed by ToJson.
  nlohmann::json extra = nlohmann::json::object();

  int num_labels() const { return static_cast<int>(id2label.size()); }
  // Whether the model owns hubert.masked_spec_embed (HF creates it for any masking).
  bool has_masked_spec_embed() const { return mask_time_prob > 0 || mask_feature_prob > 0; }

  // Checks internal consistency (lengths of conv lists, head divisibility, ranges).
  absl::Status Validate() const;
  static absl::StatusOr<HubertConfig> FromJson(const nlohmann::json& j);
  nlohmann::json ToJson() const;  // HF-compatible config.json content
};

// The architecture of a preset (common/job_spec.h ModelPresetNames): tiny, hubert-base or
// hubert-large (facebook/hubert-base-ls960, facebook/hubert-large-ll60k). The preset's
// id2label is empty; callers set the labels.
absl::StatusOr<HubertConfig> PresetConfig(const std::string& name);

struct PreprocessorConfig {
  bool do_normalize = true;
  bool return_attention_mask = false;
  int sampling_rate = 16000;
  float padding_value = 0;

  static absl::StatusOr<PreprocessorConfig> FromJson(const nlohmann::json& j);
  nlohmann::json ToJson() const;
};

// What HF publishes with a model of this architecture: layer-norm models take an attention
// mask, group-norm models get zero padding and no mask.
PreprocessorConfig DefaultPreprocessorFor(const HubertConfig& config);

}  // namespace ftune::model
