// HuBERT for sequence classification as torch::nn::Module structs whose registered names are
// the Hugging Face checkpoint keys: named_parameters() of HubertForSequenceClassification is
// exactly the key set of transformers' HubertForSequenceClassification state dict
// (e.g. hubert.encoder.layers.3.attention.q_proj.weight).
//
// Mixed precision: the model is kept in float32 and run under autocast (CPU bf16, CUDA fp16).
// Norms compute in their weight's dtype and every mixed-dtype step is out of place, so autocast
// never meets an op that cannot take both dtypes.
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "worker/model/config.h"

namespace ftune::model {

// conv -> [norm] -> activation. Layer 0 of a group-norm encoder has a GroupNorm, the others
// none; every layer of a layer-norm encoder has a LayerNorm over channels. Either is
// registered as "layer_norm", as in the checkpoint.
struct HubertConvLayerImpl : torch::nn::Module {
  HubertConvLayerImpl(const HubertConfig& config, int layer_id);
  torch::Tensor forward(const torch::Tensor& x);  // [B, C_in, T] -> [B, C_out, T']
  // Without autograd, time-major and in `dtype`: [B, T, C_in] -> [B, T', C_out]
  // (worker/model/time_major_conv.h).
  torch::Tensor forward_time_major(const torch::Tensor& x, at::ScalarType dtype);

  // The conv weight in GEMM layout at `dtype`; for a frozen weight cached, and rebuilt when
  // the weight changes (its storage or version counter).
  torch::Tensor gemm_weight(at::ScalarType dtype);

  torch::nn::Conv1d conv{nullptr};
  torch::nn::GroupNorm group_norm{nullptr};
  torch::nn::LayerNorm layer_norm{nullptr};
  std::string activation;

 private:
  torch::Tensor gemm_weight_, gemm_source_;
  uint32_t gemm_source_version_ = 0;
};
TORCH_MODULE(HubertConvLayer);

// When autograd needs nothing from it (a frozen encoder, or serving) and GEMMs pay
// (GemmConvolutionsPay: bf16 on CPU), the encoder runs time-major as GEMMs; otherwise as
// torch::conv1d layers.
struct HubertFeatureEncoderImpl : torch::nn::Module {
  explicit HubertFeatureEncoderImpl(const HubertConfig& config);
  torch::Tensor forward(const torch::Tensor& input_values);  // [B, T] -> [B, frames, C]
  // The GEMM form, without autograd, computing in `dtype`.
  torch::Tensor forward_time_major(const torch::Tensor& input_values, at::ScalarType dtype);

  torch::nn::ModuleList conv_layers;
  std::vector<HubertConvLayer> layers;  // the same modules, typed
};
TORCH_MODULE(HubertFeatureEncoder);

struct HubertFeatureProjectionImpl : torch::nn::Module {
  explicit HubertFeatureProjectionImpl(const HubertConfig& config);
  torch::Tensor forward(const torch::Tensor& features);  // [B, frames, C] -> [B, frames, H]

  torch::nn::LayerNorm layer_norm{nullptr};  // only when feat_proj_layer_norm
  torch::nn::Linear projection{nullptr};
  double dropout;
};
TORCH_MODULE(HubertFeatureProjection);

// Grouped conv1d with weight normalisation over dim 2 (weight = g * v / ||v||, the norm taken
// over dims 0 and 1), stored as weight_g [1, 1, K] and weight_v [H, H/groups, K]. Runs on
// time-major activations as batched GEMMs where they pay (worker/model/time_major_conv.h),
// otherwise as torch::conv1d.
struct WeightNormConv1dImpl : torch::nn::Module {
  WeightNormConv1dImpl(int channels, int kernel, int groups);
  // x [B, T, H] padded by K/2 frames at the start -> [B, rows, H].
  torch::Tensor forward(const torch::Tensor& x, int64_t rows);
  torch::Tensor weight() const;
  // Inference: computes the weight once, at `dtype`, and uses it from then on.
  void Fold(torch::Dtype dtype);

  torch::Tensor weight_g, weight_v, bias;
  int kernel, padding, groups;
  torch::Tensor folded_weight, folded_bias;  // set by Fold
};
TORCH_MODULE(WeightNormConv1d);

struct HubertPositionalConvEmbeddingImpl : torch::nn::Module {
  explicit HubertPositionalConvEmbeddingImpl(const HubertConfig& config);
  torch::Tensor forward(const torch::Tensor& hidden);  // [B, T, H] -> [B, T, H]

  WeightNormConv1d conv{nullptr};
  int num_pad_remove;  // HubertSamePadLayer: even kernels produce one frame too many
  std::string activation;
};
TORCH_MODULE(HubertPositionalConvEmbedding);

struct HubertAttentionImpl : torch::nn::Module {
  explicit HubertAttentionImpl(const HubertConfig& config);
  // bias: [B, 1, 1, T] additive (large negative on padded keys) or undefined.
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& bias);

  torch::nn::Linear k_proj{nullptr}, v_proj{nullptr}, q_proj{nullptr}, out_proj{nullptr};
  int num_heads, head_dim;
  double dropout;
};
TORCH_MODULE(HubertAttention);

struct HubertFeedForwardImpl : torch::nn::Module {
  explicit HubertFeedForwardImpl(const HubertConfig& config);
  torch::Tensor forward(const torch::Tensor& hidden);

  torch::nn::Linear intermediate_dense{nullptr}, output_dense{nullptr};
  std::string activation;
  double activation_dropout, hidden_dropout;
};
TORCH_MODULE(HubertFeedForward);

// One transformer layer; post-LN (base) or pre-LN (do_stable_layer_norm, large).
struct HubertEncoderLayerImpl : torch::nn::Module {
  explicit HubertEncoderLayerImpl(const HubertConfig& config);
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& bias);

  HubertAttention attention{nullptr};
  torch::nn::LayerNorm layer_norm{nullptr};
  HubertFeedForward feed_forward{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};
  bool stable;
  double hidden_dropout;
};
TORCH_MODULE(HubertEncoderLayer);

struct HubertEncoderImpl : torch::nn::Module {
  explicit HubertEncoderImpl(const HubertConfig& config);
  // valid: [B, T] bool (true = real frame) or undefined (no mask). Returns the last hidden
  // state; when `hidden_states` is given, also HF's hidden_states tuple (num_layers + 1).
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& valid,
                        std::vector<torch::Tensor>* hidden_states = nullptr);

  HubertPositionalConvEmbedding pos_conv_embed{nullptr};
  torch::nn::LayerNorm layer_norm{nullptr};
  torch::nn::ModuleList layers_list;
  std::vector<HubertEncoderLayer> layers;
  bool stable;
  double hidden_dropout, layerdrop;
};
TORCH_MODULE(HubertEncoder);

struct HubertModelImpl : torch::nn::Module {
  explicit HubertModelImpl(const HubertConfig& config);

  HubertFeatureEncoder feature_extractor{nullptr};
  HubertFeatureProjection feature_projection{nullptr};
  HubertEncoder encoder{nullptr};
  torch::Tensor masked_spec_embed;  // [H], only when the config masks
};
TORCH_MODULE(HubertModel);

class HubertForSequenceClassificationImpl : public torch::nn::Module {
 public:
  explicit HubertForSequenceClassificationImpl(const HubertConfig& config);

  // input_values [B, T] float (already normalised); lengths [B] int64 = valid samples per row
  // (may be undefined = all rows full). Returns logits [B, num_labels] (float32).
  torch::Tensor forward(const torch::Tensor& input_values, const torch::Tensor& lengths);
  // Feature encoder only: [B, T] -> [B, frames, conv_dim.back()].
  torch::Tensor extract_features(const torch::Tensor& input_values);
  // Everything after the feature encoder (feature projection, SpecAugment in training,
  // encoder, head); `lengths` in samples as above.
  torch::Tensor forward_features(const torch::Tensor& features, const torch::Tensor& lengths);

  int64_t num_frames(int64_t num_samples) const;  // HF conv output length formula
  torch::Tensor num_frames(const torch::Tensor& num_samples) const;  // elementwise, int64

  void freeze_feature_encoder();          // requires_grad=false on the CNN
  // The CNN, feature projection, masked_spec_embed, positional conv (+ the pre-layer LayerNorm
  // of post-LN models) and the first k transformer layers.
  void freeze_backbone_layers(int k);
  // Everything except the head (projector, classifier, layer_weights).
  void freeze_backbone();

  // HF _init_weights for every parameter (fresh model); head_only re-initialises the head.
  void init_weights(bool head_only = false);

  // For serving at a reduced `dtype` (bf16 or fp16) under autocast: the weights and biases of
  // every linear layer and convolution are converted once (autocast would cast them on every
  // forward pass, to the same values), the positional convolution's weight norm is folded and
  // the feature encoder's GEMM weights are built (so concurrent forward passes only read
  // them). Norms keep fp32. The model is for inference only afterwards.
  void prepare_for_inference(torch::Dtype dtype);

  const HubertConfig& config() const { return config_; }
  // Replaces the label set; a different count rebuilds the classifier (caller re-initialises).
  void set_labels(const std::vector<std::string>& labels);

  HubertModel hubert{nullptr};
  torch::nn::Linear projector{nullptr};
  torch::nn::Linear classifier{nullptr};
  torch::Tensor layer_weights;  // [num_layers + 1], only with use_weighted_layer_sum

 private:
  // SpecAugment masks as in transformers' _compute_mask_indices: [B, length] bool.
  torch::Tensor ComputeMask(int64_t batch, int64_t length, const torch::Tensor& valid_lengths,
                            double prob, int mask_length, int min_masks) const;

  HubertConfig config_;
};
TORCH_MODULE(HubertForSequenceClassification);

// HF activation by name (config validation restricts the names).
torch::Tensor Activate(const std::string& name, const torch::Tensor& x);

}  // namespace ftune::model
