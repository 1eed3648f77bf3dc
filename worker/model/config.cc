#include "worker/model/config.h"

#include <cmath>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/job_spec.h"
#include "common/status_macros.h"

namespace ftune::model {
namespace {

using nlohmann::json;

absl::Status FieldError(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("config field '", field, "': ", what));
}

// Readers: absent keeps the default; present with the wrong type is an error naming the field.
absl::Status Read(const json& j, const std::string& key, int* out) {
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  const json& v = j[key];
  // Range first: converting an out-of-range number to int is undefined (found by fuzzing).
  const double d = v.is_number() ? v.get<double>() : std::nan("");
  const bool whole = v.is_number_integer() || (v.is_number_float() && std::floor(d) == d);
  if (whole && d >= std::numeric_limits<int>::min() && d <= std::numeric_limits<int>::max()) {
    *out = static_cast<int>(d);
  } else {
    return FieldError(key, absl::StrCat("expected an integer, got ", v.dump()));
  }
  return absl::OkStatus();
}

absl::Status Read(const json& j, const std::string& key, double* out) {
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  if (!j[key].is_number()) return FieldError(key, "expected a number, got " + j[key].dump());
  *out = j[key].get<double>();
  return absl::OkStatus();
}

absl::Status Read(const json& j, const std::string& key, float* out) {
  double d = *out;
  RETURN_IF_ERROR(Read(j, key, &d));
  *out = static_cast<float>(d);
  return absl::OkStatus();
}

absl::Status Read(const json& j, const std::string& key, bool* out) {
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  if (!j[key].is_boolean()) return FieldError(key, "expected true/false, got " + j[key].dump());
  *out = j[key].get<bool>();
  return absl::OkStatus();
}

absl::Status Read(const json& j, const std::string& key, std::string* out) {
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  if (!j[key].is_string()) return FieldError(key, "expected a string, got " + j[key].dump());
  *out = j[key].get<std::string>();
  return absl::OkStatus();
}

absl::Status Read(const json& j, const std::string& key, std::vector<int>* out) {
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  if (!j[key].is_array()) return FieldError(key, "expected a list of integers");
  std::vector<int> values;
  for (const json& v : j[key]) {
    if (!v.is_number_integer()) return FieldError(key, "expected integers, got " + v.dump());
    values.push_back(v.get<int>());
  }
  *out = std::move(values);
  return absl::OkStatus();
}

bool IsSupportedActivation(const std::string& act) {
  return act == "gelu" || act == "gelu_new" || act == "relu" || act == "silu" || act == "swish";
}

absl::Status ReadLabels(const json& j, std::vector<std::string>* out) {
  if (j.contains("id2label") && !j["id2label"].is_null()) {
    const json& m = j["id2label"];
    if (!m.is_object()) return FieldError("id2label", "expected an object {\"0\": label}");
    std::vector<std::string> labels(m.size());
    std::vector<bool> seen(m.size(), false);
    for (const auto& [key, value] : m.items()) {
      size_t pos = 0;
      int id = -1;
      try {
        id = std::stoi(key, &pos);
      } catch (const std::exception&) {
        pos = 0;
      }
      if (pos != key.size() || id < 0 || id >= static_cast<int>(m.size()) || seen[id]) {
        return FieldError("id2label", "keys must be the ids 0.." +
                                          std::to_string(m.size() - 1) + ", got '" + key + "'");
      }
      if (!value.is_string()) return FieldError("id2label", "label for id " + key + " is not a string");
      labels[id] = value.get<std::string>();
      seen[id] = true;
    }
    *out = std::move(labels);
    return absl::OkStatus();
  }
  if (j.contains("label2id") && !j["label2id"].is_null()) {
    const json& m = j["label2id"];
    if (!m.is_object()) return FieldError("label2id", "expected an object {label: id}");
    std::vector<std::string> labels(m.size());
    std::vector<bool> seen(m.size(), false);
    for (const auto& [label, value] : m.items()) {
      if (!value.is_number_integer()) return FieldError("label2id", "id of '" + label + "' is not an integer");
      int id = value.get<int>();
      if (id < 0 || id >= static_cast<int>(m.size()) || seen[id]) {
        return FieldError("label2id", "ids must be 0.." + std::to_string(m.size() - 1));
      }
      labels[id] = label;
      seen[id] = true;
    }
    *out = std::move(labels);
    return absl::OkStatus();
  }
  // Only a count: transformers names the labels LABEL_0..LABEL_{n-1}.
  int num_labels = 0;
  RETURN_IF_ERROR(Read(j, "num_labels", &num_labels));
  if (num_labels < 0) return FieldError("num_labels", "must not be negative");
  out->clear();
  for (int i = 0; i < num_labels; ++i) out->push_back("LABEL_" + std::to_string(i));
  return absl::OkStatus();
}

}  // namespace

absl::Status HubertConfig::Validate() const {
  if (hidden_size <= 0) return FieldError("hidden_size", "must be positive");
  if (num_hidden_layers <= 0) return FieldError("num_hidden_layers", "must be positive");
  if (num_attention_heads <= 0 || hidden_size % num_attention_heads != 0) {
    return FieldError("num_attention_heads", absl::StrCat("must divide hidden_size ", hidden_size));
  }
  if (intermediate_size <= 0) return FieldError("intermediate_size", "must be positive");
  if (!IsSupportedActivation(hidden_act)) {
    return FieldError("hidden_act", "unsupported activation '" + hidden_act +
                                        "' (supported: gelu, gelu_new, relu, silu, swish)");
  }
  if (!IsSupportedActivation(feat_extract_activation)) {
    return FieldError("feat_extract_activation",
                      "unsupported activation '" + feat_extract_activation +
                          "' (supported: gelu, gelu_new, relu, silu, swish)");
  }
  if (!(layer_norm_eps > 0)) return FieldError("layer_norm_eps", "must be positive");
  if (feat_extract_norm != "group" && feat_extract_norm != "layer") {
    return FieldError("feat_extract_norm", "must be 'group' or 'layer', got '" + feat_extract_norm + "'");
  }
  if (conv_dim.empty()) return FieldError("conv_dim", "must not be empty");
  if (conv_kernel.size() != conv_dim.size()) {
    return FieldError("conv_kernel", absl::StrCat("has ", conv_kernel.size(), " entries, conv_dim has ",
                                                  conv_dim.size()));
  }
  if (conv_stride.size() != conv_dim.size()) {
    return FieldError("conv_stride", absl::StrCat("has ", conv_stride.size(), " entries, conv_dim has ",
                                                  conv_dim.size()));
  }
  for (size_t i = 0; i < conv_dim.size(); ++i) {
    if (conv_dim[i] <= 0) return FieldError("conv_dim", "entries must be positive");
    if (conv_kernel[i] <= 0) return FieldError("conv_kernel", "entries must be positive");
    if (conv_stride[i] <= 0) return FieldError("conv_stride", "entries must be positive");
  }
  if (num_conv_pos_embeddings <= 0) return FieldError("num_conv_pos_embeddings", "must be positive");
  if (num_conv_pos_embedding_groups <= 0 || hidden_size % num_conv_pos_embedding_groups != 0) {
    return FieldError("num_conv_pos_embedding_groups",
                      absl::StrCat("must divide hidden_size ", hidden_size));
  }
  for (auto [name, p] : {std::pair<const char*, double>{"hidden_dropout", hidden_dropout},
                         {"activation_dropout", activation_dropout},
                         {"attention_dropout", attention_dropout},
                         {"feat_proj_dropout", feat_proj_dropout},
                         {"final_dropout", final_dropout},
                         {"layerdrop", layerdrop},
                         {"mask_time_prob", mask_time_prob},
                         {"mask_feature_prob", mask_feature_prob}}) {
    if (!(p >= 0 && p <= 1)) return FieldError(name, absl::StrCat("must be in [0, 1], got ", p));
  }
  if (mask_time_length <= 0) return FieldError("mask_time_length", "must be positive");
  if (mask_feature_length <= 0) return FieldError("mask_feature_length", "must be positive");
  if (mask_time_min_masks < 0) return FieldError("mask_time_min_masks", "must not be negative");
  if (mask_feature_min_masks < 0) return FieldError("mask_feature_min_masks", "must not be negative");
  if (classifier_proj_size <= 0) return FieldError("classifier_proj_size", "must be positive");
  std::set<std::string> unique(id2label.begin(), id2label.end());
  if (unique.size() != id2label.size()) return FieldError("id2label", "labels must be distinct");
  return absl::OkStatus();
}

absl::StatusOr<HubertConfig> HubertConfig::FromJson(const json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("config.json: expected a JSON object");
  HubertConfig c;
  if (j.contains("model_type")) {
    std::string model_type;
    RETURN_IF_ERROR(Read(j, "model_type", &model_type));
    if (model_type != "hubert") {
      return FieldError("model_type", "only 'hubert' is supported, got '" + model_type + "'");
    }
  }
  RETURN_IF_ERROR(Read(j, "hidden_size", &c.hidden_size));
  RETURN_IF_ERROR(Read(j, "num_hidden_layers", &c.num_hidden_layers));
  RETURN_IF_ERROR(Read(j, "num_attention_heads", &c.num_attention_heads));
  RETURN_IF_ERROR(Read(j, "intermediate_size", &c.intermediate_size));
  RETURN_IF_ERROR(Read(j, "hidden_act", &c.hidden_act));
  RETURN_IF_ERROR(Read(j, "layer_norm_eps", &c.layer_norm_eps));
  RETURN_IF_ERROR(Read(j, "do_stable_layer_norm", &c.do_stable_layer_norm));
  RETURN_IF_ERROR(Read(j, "feat_extract_norm", &c.feat_extract_norm));
  RETURN_IF_ERROR(Read(j, "feat_extract_activation", &c.feat_extract_activation));
  RETURN_IF_ERROR(Read(j, "conv_dim", &c.conv_dim));
  RETURN_IF_ERROR(Read(j, "conv_kernel", &c.conv_kernel));
  RETURN_IF_ERROR(Read(j, "conv_stride", &c.conv_stride));
  RETURN_IF_ERROR(Read(j, "conv_bias", &c.conv_bias));
  RETURN_IF_ERROR(Read(j, "feat_proj_layer_norm", &c.feat_proj_layer_norm));
  RETURN_IF_ERROR(Read(j, "num_conv_pos_embeddings", &c.num_conv_pos_embeddings));
  RETURN_IF_ERROR(Read(j, "num_conv_pos_embedding_groups", &c.num_conv_pos_embedding_groups));
  RETURN_IF_ERROR(Read(j, "hidden_dropout", &c.hidden_dropout));
  RETURN_IF_ERROR(Read(j, "activation_dropout", &c.activation_dropout));
  RETURN_IF_ERROR(Read(j, "attention_dropout", &c.attention_dropout));
  RETURN_IF_ERROR(Read(j, "feat_proj_dropout", &c.feat_proj_dropout));
  RETURN_IF_ERROR(Read(j, "final_dropout", &c.final_dropout));
  RETURN_IF_ERROR(Read(j, "layerdrop", &c.layerdrop));
  RETURN_IF_ERROR(Read(j, "apply_spec_augment", &c.apply_spec_augment));
  RETURN_IF_ERROR(Read(j, "mask_time_prob", &c.mask_time_prob));
  RETURN_IF_ERROR(Read(j, "mask_time_length", &c.mask_time_length));
  RETURN_IF_ERROR(Read(j, "mask_time_min_masks", &c.mask_time_min_masks));
  RETURN_IF_ERROR(Read(j, "mask_feature_prob", &c.mask_feature_prob));
  RETURN_IF_ERROR(Read(j, "mask_feature_length", &c.mask_feature_length));
  RETURN_IF_ERROR(Read(j, "mask_feature_min_masks", &c.mask_feature_min_masks));
  RETURN_IF_ERROR(Read(j, "classifier_proj_size", &c.classifier_proj_size));
  RETURN_IF_ERROR(Read(j, "use_weighted_layer_sum", &c.use_weighted_layer_sum));
  RETURN_IF_ERROR(Read(j, "initializer_range", &c.initializer_range));
  RETURN_IF_ERROR(ReadLabels(j, &c.id2label));

  // Options of newer HF versions that change the math and that we do not implement.
  bool conv_pos_batch_norm = false;
  RETURN_IF_ERROR(Read(j, "conv_pos_batch_norm", &conv_pos_batch_norm));
  if (conv_pos_batch_norm) return FieldError("conv_pos_batch_norm", "true is not supported");
  if (j.contains("num_feat_extract_layers")) {
    int n = 0;
    RETURN_IF_ERROR(Read(j, "num_feat_extract_layers", &n));
    if (n != static_cast<int>(c.conv_dim.size())) {
      return FieldError("num_feat_extract_layers",
                        absl::StrCat(n, " does not match conv_dim's ", c.conv_dim.size(), " entries"));
    }
  }
  for (const char* key : {"add_adapter", "use_intermediate_ffn_before_adapter"}) {
    bool v = false;
    RETURN_IF_ERROR(Read(j, key, &v));
    if (v) return FieldError(key, "true is not supported");
  }
  if (j.contains("position_embeddings_type") && !j["position_embeddings_type"].is_null()) {
    return FieldError("position_embeddings_type", "only convolutional positions are supported");
  }
  RETURN_IF_ERROR(c.Validate());

  static const std::set<std::string> kParsed = {
      "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
      "intermediate_size", "hidden_act", "layer_norm_eps", "do_stable_layer_norm",
      "feat_extract_norm", "feat_extract_activation", "conv_dim", "conv_kernel", "conv_stride",
      "conv_bias", "feat_proj_layer_norm", "num_conv_pos_embeddings",
      "num_conv_pos_embedding_groups", "hidden_dropout", "activation_dropout",
      "attention_dropout", "feat_proj_dropout", "final_dropout", "layerdrop",
      "apply_spec_augment", "mask_time_prob", "mask_time_length", "mask_time_min_masks",
      "mask_feature_prob", "mask_feature_length", "mask_feature_min_masks",
      "classifier_proj_size", "use_weighted_layer_sum", "initializer_range", "id2label",
      "label2id", "num_labels", "architectures", "num_feat_extract_layers",
      "conv_pos_batch_norm"};
  for (const auto& [key, value] : j.items()) {
    if (!kParsed.count(key)) c.extra[key] = value;
  }
  return c;
}

json HubertConfig::ToJson() const {
  json j = extra.is_object() ? extra : json::object();
  j["model_type"] = "hubert";
  j["architectures"] = json::array({"HubertForSequenceClassification"});
  j["hidden_size"] = hidden_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["intermediate_size"] = intermediate_size;
  j["hidden_act"] = hidden_act;
  j["layer_norm_eps"] = layer_norm_eps;
  j["do_stable_layer_norm"] = do_stable_layer_norm;
  j["feat_extract_norm"] = feat_extract_norm;
  j["feat_extract_activation"] = feat_extract_activation;
  j["conv_dim"] = conv_dim;
  j["conv_kernel"] = conv_kernel;
  j["conv_stride"] = conv_stride;
  j["conv_bias"] = conv_bias;
  j["num_feat_extract_layers"] = conv_dim.size();
  j["feat_proj_layer_norm"] = feat_proj_layer_norm;
  j["num_conv_pos_embeddings"] = num_conv_pos_embeddings;
  j["num_conv_pos_embedding_groups"] = num_conv_pos_embedding_groups;
  j["hidden_dropout"] = hidden_dropout;
  j["activation_dropout"] = activation_dropout;
  j["attention_dropout"] = attention_dropout;
  j["feat_proj_dropout"] = feat_proj_dropout;
  j["final_dropout"] = final_dropout;
  j["layerdrop"] = layerdrop;
  j["apply_spec_augment"] = apply_spec_augment;
  j["mask_time_prob"] = mask_time_prob;
  j["mask_time_length"] = mask_time_length;
  j["mask_time_min_masks"] = mask_time_min_masks;
  j["mask_feature_prob"] = mask_feature_prob;
  j["mask_feature_length"] = mask_feature_length;
  j["mask_feature_min_masks"] = mask_feature_min_masks;
  j["classifier_proj_size"] = classifier_proj_size;
  j["use_weighted_layer_sum"] = use_weighted_layer_sum;
  j["initializer_range"] = initializer_range;
  json id2label_json = json::object();
  json label2id_json = json::object();
  for (size_t i = 0; i < id2label.size(); ++i) {
    id2label_json[std::to_string(i)] = id2label[i];
    label2id_json[id2label[i]] = i;
  }
  j["id2label"] = id2label_json;
  j["label2id"] = label2id_json;
  j["torch_dtype"] = "float32";  // SaveModelFolder states the dtype actually written
  return j;
}

absl::StatusOr<HubertConfig> PresetConfig(const std::string& name) {
  HubertConfig c;  // defaults are facebook/hubert-base-ls960
  c.extra = {{"vocab_size", 32}, {"pad_token_id", 0}, {"bos_token_id", 1}, {"eos_token_id", 2}};
  c.feat_proj_dropout = 0.1;
  if (name == "hubert-base") return c;
  if (name == "hubert-large") {
    // facebook/hubert-large-ll60k
    c.hidden_size = 1024;
    c.num_hidden_layers = 24;
    c.num_attention_heads = 16;
    c.intermediate_size = 4096;
    c.feat_extract_norm = "layer";
    c.do_stable_layer_norm = true;
    c.conv_bias = true;
    c.hidden_dropout = 0.1;
    c.attention_dropout = 0.1;
    c.activation_dropout = 0.0;
    c.feat_proj_dropout = 0.1;
    c.layerdrop = 0.1;
    return c;
  }
  if (name == "tiny") {
    // Same receptive field and frame rate (20 ms) as base, a fraction of the cost; layer norm so
    // padded batches are exact.
    c.hidden_size = 96;
    c.num_hidden_layers = 3;
    c.num_attention_heads = 4;
    c.intermediate_size = 192;
    c.conv_dim = {64, 64, 64, 64, 64, 64, 64};
    c.feat_extract_norm = "layer";
    c.do_stable_layer_norm = true;
    c.conv_bias = true;
    c.num_conv_pos_embeddings = 32;
    c.num_conv_pos_embedding_groups = 8;
    c.classifier_proj_size = 64;
    // 1/sqrt(hidden_size): HF's 0.02 suits 768-wide models; at 96 wide it starts the encoder as
    // near identity with near-constant logits, and from scratch some seeds collapse to a
    // constant predictor (tests/model/model_test.cc TinyPresetTest).
    c.initializer_range = 0.1;
    c.hidden_dropout = 0.05;
    c.attention_dropout = 0.05;
    c.activation_dropout = 0.0;
    c.feat_proj_dropout = 0.0;
    c.layerdrop = 0.0;
    c.mask_time_prob = 0.05;
    c.mask_time_length = 5;
    // No SpecAugment by default: trained from scratch, the share of masked_spec_embed frames in
    // the mean pool (at least two spans per clip) gives away the clip's length, a shortcut the
    // model learns instead of the audio, and one that is gone at evaluation.
    c.apply_spec_augment = false;
    return c;
  }
  return absl::NotFoundError("unknown model preset '" + name +
                             "' (known: " + absl::StrJoin(ModelPresetNames(), ", ") + ")");
}

absl::StatusOr<PreprocessorConfig> PreprocessorConfig::FromJson(const json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("preprocessor_config.json: expected a JSON object");
  PreprocessorConfig p;
  RETURN_IF_ERROR(Read(j, "do_normalize", &p.do_normalize));
  RETURN_IF_ERROR(Read(j, "return_attention_mask", &p.return_attention_mask));
  RETURN_IF_ERROR(Read(j, "sampling_rate", &p.sampling_rate));
  RETURN_IF_ERROR(Read(j, "padding_value", &p.padding_value));
  if (p.sampling_rate <= 0) return FieldError("sampling_rate", "must be positive");
  int feature_size = 1;
  RETURN_IF_ERROR(Read(j, "feature_size", &feature_size));
  if (feature_size != 1) return FieldError("feature_size", "only mono waveforms (1) are supported");
  std::string padding_side = "right";
  RETURN_IF_ERROR(Read(j, "padding_side", &padding_side));
  if (padding_side != "right") return FieldError("padding_side", "only 'right' is supported");
  return p;
}

json PreprocessorConfig::ToJson() const {
  return json{{"feature_extractor_type", "Wav2Vec2FeatureExtractor"},
              {"feature_size", 1},
              {"padding_side", "right"},
              {"do_normalize", do_normalize},
              {"return_attention_mask", return_attention_mask},
              {"sampling_rate", sampling_rate},
              {"padding_value", padding_value}};
}

PreprocessorConfig DefaultPreprocessorFor(const HubertConfig& config) {
  PreprocessorConfig p;
  p.return_attention_mask = config.feat_extract_norm == "layer";
  return p;
}

}  // namespace ftune::model
