#include "worker/model/hubert.h"

#include <cmath>
#include <limits>

#include "worker/model/device.h"
#include "worker/model/dropout.h"
#include "worker/model/generator.h"
#include "worker/model/time_major_conv.h"

namespace ftune::model {
namespace {

namespace F = torch::nn::functional;

bool IsReduced(const torch::Tensor& x) {
  return x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kFloat16;
}

// Autocast leaves reduced-precision activations; sums and pooling run in float32.
torch::Tensor Upcast(const torch::Tensor& x) { return IsReduced(x) ? x.to(torch::kFloat) : x; }

// Norms compute in the dtype of their weights: under autocast a bf16/fp16 activation meets
// fp32 affine parameters, which group_norm / layer_norm on CPU do not accept.
torch::Tensor Norm(torch::nn::LayerNorm norm, const torch::Tensor& x) {
  return norm->forward(x.to(norm->weight.scalar_type()));
}
torch::Tensor Norm(torch::nn::GroupNorm norm, const torch::Tensor& x) {
  return norm->forward(x.to(norm->weight.scalar_type()));
}

torch::nn::LayerNorm MakeLayerNorm(int64_t dim, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps).elementwise_affine(true));
}

}  // namespace

namespace {

// GELU (erf form) whose backward hands gelu_backward a gradient laid out like the input.
// libtorch 1.13's CPU gelu_backward returns garbage (NaN, 1e30) when the two layouts differ,
// as they do wherever a GELU output is transposed before use: the positional convolution and
// the group-norm feature encoder's last layer. tests/model/parity_test.cc compares every
// gradient with torchaudio's.
class GeluFunction : public torch::autograd::Function<GeluFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x) {
    ctx->save_for_backward({x});
    return torch::gelu(x);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const torch::Tensor x = ctx->get_saved_variables()[0];
    torch::Tensor grad = grads[0];
    if (grad.strides() != x.strides()) grad = torch::empty_like(x).copy_(grad);
    return {torch::gelu_backward(grad, x)};
  }
};

}  // namespace

torch::Tensor Activate(const std::string& name, const torch::Tensor& x) {
  if (name == "gelu") return GeluFunction::apply(x);
  if (name == "gelu_new") return torch::gelu(x, "tanh");
  if (name == "relu") return torch::relu(x);
  if (name == "silu" || name == "swish") return torch::silu(x);
  TORCH_CHECK(false, "unsupported activation '", name, "'");
}

// ---- Feature encoder -----------------------------------------------------------------------

HubertConvLayerImpl::HubertConvLayerImpl(const HubertConfig& c, int layer_id)
    : activation(c.feat_extract_activation) {
  const int in = layer_id == 0 ? 1 : c.conv_dim[layer_id - 1];
  const int out = c.conv_dim[layer_id];
  conv = register_module(
      "conv", torch::nn::Conv1d(torch::nn::Conv1dOptions(in, out, c.conv_kernel[layer_id])
                                    .stride(c.conv_stride[layer_id])
                                    .bias(c.conv_bias)));
  if (c.feat_extract_norm == "layer") {
    layer_norm = register_module("layer_norm", MakeLayerNorm(out, 1e-5));
  } else if (layer_id == 0) {
    // HF: GroupNorm(num_groups=out, num_channels=out), eps default 1e-5.
    group_norm = register_module(
        "layer_norm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(out, out).affine(true)));
  }
}

torch::Tensor HubertConvLayerImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = conv->forward(x);
  if (layer_norm) {
    // Back to a contiguous [B, C, T] before the activation (the next conv needs that copy
    // anyway): elementwise kernels run several times slower on a transposed view.
    h = Norm(layer_norm, h.transpose(-2, -1)).transpose(-2, -1).contiguous();
  } else if (group_norm) {
    h = Norm(group_norm, h);
  }
  return Activate(activation, h);
}

torch::Tensor HubertConvLayerImpl::gemm_weight(at::ScalarType dtype) {
  const torch::Tensor& weight = conv->weight;
  // A trainable weight changes every step: build it afresh (a few ms) rather than trust a key.
  if (weight.requires_grad()) return ConvGemmWeight(weight.detach().to(dtype));
  // The source is held, so its address cannot be reused by another tensor while cached.
  if (!gemm_weight_.defined() || gemm_weight_.scalar_type() != dtype || !gemm_source_.defined() ||
      gemm_source_.data_ptr() != weight.data_ptr() || gemm_source_version_ != weight._version()) {
    gemm_weight_ = ConvGemmWeight(weight.detach().to(dtype));
    gemm_source_ = weight.detach();
    gemm_source_version_ = weight._version();
  }
  return gemm_weight_;
}

torch::Tensor HubertConvLayerImpl::forward_time_major(const torch::Tensor& x, at::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  const torch::Tensor bias = conv->options.bias() ? conv->bias.to(dtype) : torch::Tensor();
  torch::Tensor h = StridedConvTimeMajor(x.to(dtype), gemm_weight(dtype), bias,
                                         conv->options.kernel_size()->at(0), conv->options.stride()->at(0));
  if (group_norm) {
    ChannelNormTimeMajor_(h, group_norm->weight, group_norm->bias, group_norm->options.eps());
  } else if (layer_norm) {
    h = Norm(layer_norm, h).to(dtype);
  }
  return Activate(activation, h);
}

HubertFeatureEncoderImpl::HubertFeatureEncoderImpl(const HubertConfig& c) {
  conv_layers = register_module("conv_layers", torch::nn::ModuleList());
  for (size_t i = 0; i < c.conv_dim.size(); ++i) {
    layers.emplace_back(c, static_cast<int>(i));
    conv_layers->push_back(layers.back());
  }
}

torch::Tensor HubertFeatureEncoderImpl::forward(const torch::Tensor& input_values) {
  bool needs_graph = torch::GradMode::is_enabled() && input_values.requires_grad();
  if (torch::GradMode::is_enabled()) {
    for (const torch::Tensor& p : parameters()) needs_graph = needs_graph || p.requires_grad();
  }
  const at::ScalarType dtype =
      ActiveAutocastDtype(input_values.device()).value_or(layers.front()->conv->weight.scalar_type());
  if (!needs_graph && GemmConvolutionsPay(input_values.device(), dtype)) {
    return forward_time_major(input_values, dtype);
  }
  torch::Tensor h = input_values.unsqueeze(1);
  for (auto& layer : layers) h = layer->forward(h);
  return h.transpose(1, 2);
}

torch::Tensor HubertFeatureEncoderImpl::forward_time_major(const torch::Tensor& input_values,
                                                           at::ScalarType dtype) {
  torch::Tensor h = input_values.unsqueeze(2);  // one input channel
  for (auto& layer : layers) h = layer->forward_time_major(h, dtype);
  return h;
}

HubertFeatureProjectionImpl::HubertFeatureProjectionImpl(const HubertConfig& c)
    : dropout(c.feat_proj_dropout) {
  if (c.feat_proj_layer_norm) {
    layer_norm = register_module("layer_norm", MakeLayerNorm(c.conv_dim.back(), c.layer_norm_eps));
  }
  projection = register_module("projection", torch::nn::Linear(c.conv_dim.back(), c.hidden_size));
}

torch::Tensor HubertFeatureProjectionImpl::forward(const torch::Tensor& features) {
  torch::Tensor h = layer_norm ? Norm(layer_norm, features) : features;
  h = projection->forward(h);
  return Dropout(h, dropout, is_training());
}

// ---- Positional convolution ----------------------------------------------------------------

WeightNormConv1dImpl::WeightNormConv1dImpl(int channels, int kernel_in, int groups_in)
    : kernel(kernel_in), padding(kernel_in / 2), groups(groups_in) {
  weight_g = register_parameter("weight_g", torch::ones({1, 1, kernel}));
  weight_v = register_parameter("weight_v", torch::empty({channels, channels / groups, kernel}));
  bias = register_parameter("bias", torch::zeros({channels}));
}

torch::Tensor WeightNormConv1dImpl::weight() const { return torch::_weight_norm(weight_v, weight_g, 2); }

void WeightNormConv1dImpl::Fold(torch::Dtype dtype) {
  torch::NoGradGuard no_grad;
  folded_weight = weight().to(dtype);
  folded_bias = bias.to(dtype);
}

torch::Tensor WeightNormConv1dImpl::forward(const torch::Tensor& x, int64_t rows) {
  const bool folded = folded_weight.defined();
  const torch::Tensor in = folded ? x.to(folded_weight.scalar_type()) : x;
  const torch::Tensor w = folded ? folded_weight : weight();
  const torch::Tensor b = folded ? folded_bias : bias;
  const at::ScalarType dtype = ActiveAutocastDtype(in.device()).value_or(w.scalar_type());
  if (GemmConvolutionsPay(in.device(), dtype)) return GroupedConvTimeMajor(in, w, b, groups, padding, rows);
  torch::Tensor y = torch::conv1d(in.transpose(1, 2), w, b, /*stride=*/1, padding, /*dilation=*/1, groups);
  return y.slice(2, 0, rows).transpose(1, 2);
}

HubertPositionalConvEmbeddingImpl::HubertPositionalConvEmbeddingImpl(const HubertConfig& c)
    : num_pad_remove(c.num_conv_pos_embeddings % 2 == 0 ? 1 : 0), activation(c.feat_extract_activation) {
  conv = register_module("conv", WeightNormConv1d(c.hidden_size, c.num_conv_pos_embeddings,
                                                  c.num_conv_pos_embedding_groups));
}

torch::Tensor HubertPositionalConvEmbeddingImpl::forward(const torch::Tensor& hidden) {
  // The frame HubertSamePadLayer drops (even kernels) is never computed.
  const int64_t rows = hidden.size(1) + 2 * conv->padding - conv->kernel + 1 - num_pad_remove;
  return Activate(activation, conv->forward(hidden, rows));
}

// ---- Transformer ---------------------------------------------------------------------------

HubertAttentionImpl::HubertAttentionImpl(const HubertConfig& c)
    : num_heads(c.num_attention_heads),
      head_dim(c.hidden_size / c.num_attention_heads),
      dropout(c.attention_dropout) {
  k_proj = register_module("k_proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
  v_proj = register_module("v_proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
  q_proj = register_module("q_proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
  out_proj = register_module("out_proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
}

torch::Tensor HubertAttentionImpl::forward(const torch::Tensor& hidden, const torch::Tensor& bias) {
  const int64_t b = hidden.size(0), t = hidden.size(1);
  auto heads = [&](const torch::Tensor& x) { return x.view({b, t, num_heads, head_dim}).transpose(1, 2); };
  torch::Tensor q = heads(q_proj->forward(hidden) * std::pow(head_dim, -0.5));
  torch::Tensor k = heads(k_proj->forward(hidden));
  torch::Tensor v = heads(v_proj->forward(hidden));
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1));  // [B, heads, T, T]
  if (bias.defined()) scores = scores + bias;                    // out of place: may promote
  torch::Tensor probs = torch::softmax(Upcast(scores), -1);
  probs = Dropout(probs, dropout, is_training());
  torch::Tensor out = torch::matmul(probs.to(v.scalar_type()), v);
  out = out.transpose(1, 2).reshape({b, t, num_heads * head_dim});
  return out_proj->forward(out);
}

HubertFeedForwardImpl::HubertFeedForwardImpl(const HubertConfig& c)
    : activation(c.hidden_act),
      activation_dropout(c.activation_dropout),
      hidden_dropout(c.hidden_dropout) {
  intermediate_dense =
      register_module("intermediate_dense", torch::nn::Linear(c.hidden_size, c.intermediate_size));
  output_dense = register_module("output_dense", torch::nn::Linear(c.intermediate_size, c.hidden_size));
}

torch::Tensor HubertFeedForwardImpl::forward(const torch::Tensor& hidden) {
  torch::Tensor h = Activate(activation, intermediate_dense->forward(hidden));
  h = Dropout(h, activation_dropout, is_training());
  h = output_dense->forward(h);
  return Dropout(h, hidden_dropout, is_training());
}

HubertEncoderLayerImpl::HubertEncoderLayerImpl(const HubertConfig& c)
    : stable(c.do_stable_layer_norm), hidden_dropout(c.hidden_dropout) {
  attention = register_module("attention", HubertAttention(c));
  layer_norm = register_module("layer_norm", MakeLayerNorm(c.hidden_size, c.layer_norm_eps));
  feed_forward = register_module("feed_forward", HubertFeedForward(c));
  final_layer_norm = register_module("final_layer_norm", MakeLayerNorm(c.hidden_size, c.layer_norm_eps));
}

torch::Tensor HubertEncoderLayerImpl::forward(const torch::Tensor& hidden, const torch::Tensor& bias) {
  if (stable) {
    // Pre-LN: x + attn(LN(x)), then x + ff(LN(x)).
    torch::Tensor h = attention->forward(Norm(layer_norm, hidden), bias);
    h = hidden + Dropout(h, hidden_dropout, is_training());
    return h + feed_forward->forward(Norm(final_layer_norm, h));
  }
  // Post-LN: LN(x + attn(x)), then LN(x + ff(x)).
  torch::Tensor h = attention->forward(hidden, bias);
  h = Norm(layer_norm, hidden + Dropout(h, hidden_dropout, is_training()));
  return Norm(final_layer_norm, h + feed_forward->forward(h));
}

HubertEncoderImpl::HubertEncoderImpl(const HubertConfig& c)
    : stable(c.do_stable_layer_norm), hidden_dropout(c.hidden_dropout), layerdrop(c.layerdrop) {
  pos_conv_embed = register_module("pos_conv_embed", HubertPositionalConvEmbedding(c));
  layer_norm = register_module("layer_norm", MakeLayerNorm(c.hidden_size, c.layer_norm_eps));
  layers_list = register_module("layers", torch::nn::ModuleList());
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    layers.emplace_back(c);
    layers_list->push_back(layers.back());
  }
}

torch::Tensor HubertEncoderImpl::forward(const torch::Tensor& hidden, const torch::Tensor& valid,
                                         std::vector<torch::Tensor>* hidden_states) {
  torch::Tensor h = hidden;
  torch::Tensor bias;
  if (valid.defined()) {
    // HF: padded frames are zeroed (so the positional conv sees zeros, as an unpadded clip's
    // edge would) and padded keys get the most negative float as attention bias.
    h = h.masked_fill(valid.logical_not().unsqueeze(-1), 0);
    bias = valid.logical_not().to(torch::kFloat).mul(std::numeric_limits<float>::lowest());
    bias = bias.view({valid.size(0), 1, 1, valid.size(1)});
  }
  h = h + pos_conv_embed->forward(h);
  if (!stable) h = Norm(layer_norm, h);
  h = Dropout(h, hidden_dropout, is_training());
  for (auto& layer : layers) {
    if (hidden_states) hidden_states->push_back(h);
    // LayerDrop (training only): skip the whole layer with probability layerdrop.
    if (is_training() && layerdrop > 0 &&
        torch::rand({}, CurrentGenerator()).item<double>() < layerdrop) {
      continue;
    }
    h = layer->forward(h, bias);
  }
  if (stable) h = Norm(layer_norm, h);
  if (hidden_states) hidden_states->push_back(h);
  return h;
}

HubertModelImpl::HubertModelImpl(const HubertConfig& c) {
  feature_extractor = register_module("feature_extractor", HubertFeatureEncoder(c));
  feature_projection = register_module("feature_projection", HubertFeatureProjection(c));
  if (c.has_masked_spec_embed()) {
    masked_spec_embed =
        register_parameter("masked_spec_embed", torch::rand({c.hidden_size}, CurrentGenerator()));
  }
  encoder = register_module("encoder", HubertEncoder(c));
}

// ---- Classification model ------------------------------------------------------------------

HubertForSequenceClassificationImpl::HubertForSequenceClassificationImpl(const HubertConfig& config)
    : config_(config) {
  TORCH_CHECK(config_.Validate().ok(), "invalid HubertConfig: ", config_.Validate().ToString());
  TORCH_CHECK(config_.num_labels() > 0, "HubertConfig has no labels (id2label is empty)");
  hubert = register_module("hubert", HubertModel(config_));
  projector = register_module("projector", torch::nn::Linear(config_.hidden_size, config_.classifier_proj_size));
  classifier = register_module("classifier",
                               torch::nn::Linear(config_.classifier_proj_size, config_.num_labels()));
  if (config_.use_weighted_layer_sum) {
    const int n = config_.num_hidden_layers + 1;
    layer_weights = register_parameter("layer_weights", torch::ones({n}) / n);
  }
  init_weights();
}

void HubertForSequenceClassificationImpl::set_labels(const std::vector<std::string>& labels) {
  TORCH_CHECK(!labels.empty(), "empty label set");
  const bool resize = static_cast<int>(labels.size()) != config_.num_labels();
  config_.id2label = labels;
  if (resize) {
    auto options = classifier->weight.options();
    classifier = replace_module("classifier",
                                torch::nn::Linear(config_.classifier_proj_size, config_.num_labels()));
    classifier->to(options.device(), options.dtype().toScalarType());
  }
}

int64_t HubertForSequenceClassificationImpl::num_frames(int64_t num_samples) const {
  int64_t n = num_samples;
  for (size_t i = 0; i < config_.conv_kernel.size(); ++i) {
    if (n < config_.conv_kernel[i]) return 0;
    n = (n - config_.conv_kernel[i]) / config_.conv_stride[i] + 1;
  }
  return n;
}

torch::Tensor HubertForSequenceClassificationImpl::num_frames(const torch::Tensor& num_samples) const {
  torch::Tensor n = num_samples.to(torch::kLong);
  for (size_t i = 0; i < config_.conv_kernel.size(); ++i) {
    n = torch::div(n - config_.conv_kernel[i], config_.conv_stride[i], "floor") + 1;
    n = n.clamp_min(0);
  }
  return n;
}

torch::Tensor HubertForSequenceClassificationImpl::extract_features(const torch::Tensor& input_values) {
  TORCH_CHECK(input_values.dim() == 2, "input_values must be [batch, samples], got ", input_values.sizes());
  TORCH_CHECK(input_values.size(1) >= config_.conv_kernel[0] && num_frames(input_values.size(1)) > 0,
              "input of ", input_values.size(1), " samples is too short for one frame");
  return hubert->feature_extractor->forward(input_values);
}

torch::Tensor HubertForSequenceClassificationImpl::ComputeMask(int64_t batch, int64_t length,
                                                               const torch::Tensor& valid_lengths,
                                                               double prob, int mask_length,
                                                               int min_masks) const {
  torch::Tensor mask = torch::zeros({batch, length}, torch::kBool);
  if (mask_length > length) return mask;
  // One random epsilon per batch so the expected span count is prob * length / mask_length.
  at::Generator gen = CurrentGenerator();
  const double epsilon = torch::rand({}, gen).item<double>();
  auto lengths = valid_lengths.defined() ? valid_lengths.to(torch::kCPU) : torch::Tensor();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t input_length = lengths.defined() ? std::min<int64_t>(lengths[b].item<int64_t>(), length) : length;
    int64_t spans = static_cast<int64_t>(prob * input_length / mask_length + epsilon);
    spans = std::max<int64_t>(spans, min_masks);
    if (spans * mask_length > length) spans = length / mask_length;
    const int64_t starts_available = input_length - (mask_length - 1);
    if (starts_available < spans) spans = std::max<int64_t>(starts_available, 0);
    if (spans == 0) continue;
    torch::Tensor starts = torch::randperm(starts_available, gen, torch::kLong).slice(0, 0, spans);
    auto row = mask[b];
    for (int64_t i = 0; i < spans; ++i) {
      const int64_t s = starts[i].item<int64_t>();
      row.slice(0, s, s + mask_length).fill_(true);
    }
  }
  return mask;
}

torch::Tensor HubertForSequenceClassificationImpl::forward_features(const torch::Tensor& features,
                                                                    const torch::Tensor& lengths) {
  TORCH_CHECK(features.dim() == 3, "features must be [batch, frames, channels], got ", features.sizes());
  const int64_t batch = features.size(0), frames = features.size(1);

  // Valid-frame mask from the sample lengths with HF's conv length formula.
  torch::Tensor valid, frame_lengths;
  if (lengths.defined()) {
    TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == batch, "lengths must be [", batch, "]");
    frame_lengths = num_frames(lengths.to(features.device())).clamp_max(frames);
    TORCH_CHECK(frame_lengths.min().item<int64_t>() > 0, "a row is too short for one frame");
    valid = torch::arange(frames, torch::TensorOptions().dtype(torch::kLong).device(features.device()))
                .unsqueeze(0)
                .lt(frame_lengths.unsqueeze(1));
  }

  // Feature projection.
  torch::Tensor h = hubert->feature_projection->forward(features);

  // SpecAugment (training only): masked time steps take masked_spec_embed, masked channels 0.
  if (is_training() && config_.apply_spec_augment) {
    if (config_.mask_time_prob > 0) {
      torch::Tensor m = ComputeMask(batch, frames, frame_lengths, config_.mask_time_prob,
                                    config_.mask_time_length, config_.mask_time_min_masks)
                            .to(h.device());
      h = torch::where(m.unsqueeze(-1), hubert->masked_spec_embed.to(h.scalar_type()), h);
    }
    if (config_.mask_feature_prob > 0) {
      torch::Tensor m = ComputeMask(batch, h.size(2), torch::Tensor(), config_.mask_feature_prob,
                                    config_.mask_feature_length, config_.mask_feature_min_masks)
                            .to(h.device());
      h = h.masked_fill(m.unsqueeze(1), 0);
    }
  }

  // Encoder (+ weighted layer sum over HF's hidden_states).
  std::vector<torch::Tensor> states;
  h = hubert->encoder->forward(h, valid, config_.use_weighted_layer_sum ? &states : nullptr);
  if (config_.use_weighted_layer_sum) {
    for (auto& s : states) s = s.to(layer_weights.scalar_type());
    torch::Tensor stacked = torch::stack(states, 1);  // [B, L+1, T, H]
    torch::Tensor w = torch::softmax(layer_weights, -1).view({-1, 1, 1});
    h = (stacked * w).sum(1);
  }

  // Head: projector -> mean over valid frames -> classifier.
  torch::Tensor p = Upcast(projector->forward(h));
  torch::Tensor pooled;
  if (valid.defined()) {
    p = p.masked_fill(valid.logical_not().unsqueeze(-1), 0);
    pooled = p.sum(1) / valid.sum(1).to(p.scalar_type()).unsqueeze(1);
  } else {
    pooled = p.mean(1);
  }
  return Upcast(classifier->forward(pooled));
}

torch::Tensor HubertForSequenceClassificationImpl::forward(const torch::Tensor& input_values,
                                                           const torch::Tensor& lengths) {
  return forward_features(extract_features(input_values), lengths);
}

// ---- Freezing and initialisation -----------------------------------------------------------

namespace {
void Freeze(torch::nn::Module& m) {
  for (auto& p : m.parameters()) p.set_requires_grad(false);
}
}  // namespace

void HubertForSequenceClassificationImpl::prepare_for_inference(torch::Dtype dtype) {
  torch::NoGradGuard no_grad;
  for (const std::shared_ptr<torch::nn::Module>& module : modules()) {
    if (auto* linear = module->as<torch::nn::Linear>()) {
      linear->to(dtype);
    } else if (auto* conv = module->as<torch::nn::Conv1d>()) {
      conv->to(dtype);
    } else if (auto* positional = module->as<WeightNormConv1d>()) {
      positional->Fold(dtype);
    }
  }
  for (auto& layer : hubert->feature_extractor->layers) {
    if (GemmConvolutionsPay(layer->conv->weight.device(), dtype)) layer->gemm_weight(dtype);
  }
}

void HubertForSequenceClassificationImpl::freeze_feature_encoder() { Freeze(*hubert->feature_extractor); }

void HubertForSequenceClassificationImpl::freeze_backbone_layers(int k) {
  freeze_feature_encoder();
  Freeze(*hubert->feature_projection);
  if (hubert->masked_spec_embed.defined()) hubert->masked_spec_embed.set_requires_grad(false);
  Freeze(*hubert->encoder->pos_conv_embed);
  auto& layers = hubert->encoder->layers;
  const int n = std::min<int>(std::max(k, 0), static_cast<int>(layers.size()));
  for (int i = 0; i < n; ++i) Freeze(*layers[i]);
  // The encoder LayerNorm sits before the layers in post-LN models, after them in stable ones.
  if (!config_.do_stable_layer_norm || n == static_cast<int>(layers.size())) {
    Freeze(*hubert->encoder->layer_norm);
  }
}

void HubertForSequenceClassificationImpl::freeze_backbone() { Freeze(*hubert); }

void HubertForSequenceClassificationImpl::init_weights(bool head_only) {
  torch::NoGradGuard no_grad;
  at::Generator gen = CurrentGenerator();
  const double std = config_.initializer_range;
  auto init_linear = [&](torch::nn::Linear& l) {
    l->weight.normal_(0, std, gen);
    if (l->bias.defined()) l->bias.zero_();
  };
  init_linear(projector);
  init_linear(classifier);
  if (layer_weights.defined()) layer_weights.fill_(1.0 / layer_weights.size(0));
  if (head_only) return;

  for (auto& layer : hubert->feature_extractor->layers) {
    auto& conv = layer->conv;
    // Kaiming normal (fan in, ReLU gain), as torch::nn::init::kaiming_normal_ draws it, from
    // the model's generator.
    const double fan_in = conv->weight.size(1) * conv->weight.size(2);
    conv->weight.normal_(0, std::sqrt(2.0 / fan_in), gen);
    if (conv->options.bias()) {
      const double bound = std::sqrt(1.0 / fan_in);
      conv->bias.uniform_(-bound, bound, gen);
    }
    if (layer->layer_norm) {
      layer->layer_norm->weight.fill_(1);
      layer->layer_norm->bias.zero_();
    }
    if (layer->group_norm) {
      layer->group_norm->weight.fill_(1);
      layer->group_norm->bias.zero_();
    }
  }
  auto& fp = hubert->feature_projection;
  if (fp->layer_norm) {
    fp->layer_norm->weight.fill_(1);
    fp->layer_norm->bias.zero_();
  }
  init_linear(fp->projection);
  if (hubert->masked_spec_embed.defined()) hubert->masked_spec_embed.uniform_(0, 1, gen);

  // wav2vec2's positional conv init: N(0, 2 / sqrt(kernel * channels)), g = ||v||.
  auto& pos = hubert->encoder->pos_conv_embed->conv;
  const double fan = pos->weight_v.size(2) * pos->weight_v.size(0);
  pos->weight_v.normal_(0, 2 * std::sqrt(1.0 / fan), gen);
  pos->weight_g.copy_(torch::norm_except_dim(pos->weight_v, 2, 2));
  pos->bias.zero_();

  auto init_norm = [](torch::nn::LayerNorm& n) {
    n->weight.fill_(1);
    n->bias.zero_();
  };
  init_norm(hubert->encoder->layer_norm);
  for (auto& layer : hubert->encoder->layers) {
    init_linear(layer->attention->k_proj);
    init_linear(layer->attention->v_proj);
    init_linear(layer->attention->q_proj);
    init_linear(layer->attention->out_proj);
    init_linear(layer->feed_forward->intermediate_dense);
    init_linear(layer->feed_forward->output_dense);
    init_norm(layer->layer_norm);
    init_norm(layer->final_layer_norm);
  }
}

}  // namespace ftune::model
