#include "worker/model/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <torch/serialize.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/job_spec.h"
#include "common/status_macros.h"
#include "worker/model/generator.h"
#include "worker/model/safetensors.h"

namespace ftune::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kPosConv[] = "hubert.encoder.pos_conv_embed.conv.";
constexpr char kHubertPrefix[] = "hubert.";
// HubertForCTC's head: a CTC checkpoint is a fine starting point, its head is dropped.
const std::set<std::string> kDroppedHeads = {"lm_head.weight", "lm_head.bias"};
const std::vector<std::string> kHeadKeys = {"projector.", "classifier.", "layer_weights"};

bool StartsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

bool Matches(const std::string& key, const std::vector<std::string>& patterns) {
  for (const std::string& p : patterns) {
    if (key == p || (!p.empty() && p.back() == '.' && StartsWith(key, p))) return true;
  }
  return false;
}

std::string ShapeString(const torch::Tensor& t) {
  return "[" + absl::StrJoin(t.sizes().vec(), ", ") + "]";
}

absl::StatusOr<json> ReadJsonFile(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("cannot open " + path.string());
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(path.string() + " is not valid JSON");
  return j;
}

absl::Status WriteJsonFile(const fs::path& path, const json& j) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) return absl::PermissionDeniedError("cannot write " + path.string());
  out << j.dump(2) << "\n";
  out.flush();
  if (!out) return absl::DataLossError("failed writing " + path.string());
  return absl::OkStatus();
}

// Rewrites the positional conv's alternative spellings to weight_g / weight_v.
absl::Status NormalizeWeightNorm(std::map<std::string, torch::Tensor>& tensors) {
  const std::string p = kPosConv;
  const std::string g = p + "weight_g", v = p + "weight_v";
  auto rename = [&](const std::string& from, const std::string& to) -> absl::Status {
    auto it = tensors.find(from);
    if (it == tensors.end()) return absl::OkStatus();
    if (tensors.count(to)) {
      return absl::InvalidArgumentError("checkpoint holds both '" + from + "' and '" + to + "'");
    }
    tensors[to] = it->second;
    tensors.erase(it);
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(rename(p + "parametrizations.weight.original0", g));
  RETURN_IF_ERROR(rename(p + "parametrizations.weight.original1", v));
  auto plain = tensors.find(p + "weight");
  if (plain != tensors.end()) {
    if (tensors.count(g) || tensors.count(v)) {
      return absl::InvalidArgumentError("checkpoint holds both '" + plain->first +
                                        "' and its weight-norm parts");
    }
    if (plain->second.dim() != 3) {
      return absl::InvalidArgumentError("'" + plain->first + "' must be 3-D, got " + ShapeString(plain->second));
    }
    // A plain weight is its own direction with g = its norm over dims 0 and 1.
    torch::Tensor w = plain->second.to(torch::kFloat);
    tensors[v] = w;
    tensors[g] = torch::norm_except_dim(w, 2, 2);
    tensors.erase(plain);
  }
  return absl::OkStatus();
}

}  // namespace

std::map<std::string, torch::Tensor> StateDict(const HubertForSequenceClassification& model) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : model->named_parameters(/*recurse=*/true)) {
    out[item.key()] = item.value().detach();
  }
  return out;
}

absl::Status LoadStateDict(HubertForSequenceClassification& model,
                           std::map<std::string, torch::Tensor> tensors,
                           const std::vector<std::string>& fresh_ok,
                           std::vector<std::string>* missing_fresh) {
  try {
    RETURN_IF_ERROR(NormalizeWeightNorm(tensors));
    auto params = model->named_parameters(/*recurse=*/true);
    // SpecAugment's mask embedding exists only while the config masks (mask_time_prob or
    // mask_feature_prob > 0); with masking turned off it is left out, as Hugging Face does.
    for (auto it = tensors.begin(); it != tensors.end();) {
      const bool mask_embedding = absl::EndsWith(it->first, "masked_spec_embed");
      it = mask_embedding && params.find(it->first) == nullptr ? tensors.erase(it) : std::next(it);
    }
    for (const auto& [name, tensor] : tensors) {
      const torch::Tensor* param = params.find(name);
      if (param == nullptr) {
        return absl::InvalidArgumentError("unexpected tensor '" + name +
                                          "' in checkpoint (not part of this architecture)");
      }
      if (!tensor.is_floating_point()) {
        return absl::InvalidArgumentError("tensor '" + name + "' is not floating point");
      }
      if (!tensor.sizes().equals(param->sizes())) {
        return absl::InvalidArgumentError("tensor '" + name + "' has shape " + ShapeString(tensor) +
                                          ", the config implies " + ShapeString(*param));
      }
    }
    std::vector<std::string> missing;
    for (const auto& item : params) {
      if (tensors.count(item.key())) continue;
      if (Matches(item.key(), fresh_ok)) {
        if (missing_fresh) missing_fresh->push_back(item.key());
      } else {
        missing.push_back(item.key());
      }
    }
    if (!missing.empty()) {
      const size_t shown = std::min<size_t>(missing.size(), 5);
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint is missing ", missing.size(), " tensor(s): '",
          absl::StrJoin(missing.begin(), missing.begin() + shown, "', '"), "'",
          missing.size() > shown ? ", ..." : ""));
    }
    torch::NoGradGuard no_grad;
    size_t loaded = 0;
    for (auto& item : params) {
      auto it = tensors.find(item.key());
      if (it == tensors.end()) continue;
      item.value().copy_(it->second.to(item.value().options()));
      ++loaded;
    }
    if (loaded != tensors.size()) {
      return absl::InternalError(absl::StrCat("loaded ", loaded, " of ", tensors.size(), " tensors"));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("loading weights: ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, torch::Tensor>> ReadPytorchBin(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open " + path);
  std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::map<std::string, torch::Tensor> out;
  try {
    torch::IValue value = torch::pickle_load(data);
    if (!value.isGenericDict()) {
      return absl::InvalidArgumentError(path + ": expected a state dict (name -> tensor)");
    }
    for (const auto& entry : value.toGenericDict()) {
      if (!entry.key().isString() || !entry.value().isTensor()) {
        return absl::InvalidArgumentError(path + ": state dict entries must be name -> tensor");
      }
      out[entry.key().toStringRef()] = entry.value().toTensor().contiguous();
    }
  } catch (const c10::Error& e) {
    return absl::DataLossError(absl::StrCat(
        "cannot read ", path, " (needs torch.save's zip format; convert to model.safetensors): ",
        e.what_without_backtrace()));
  }
  return out;
}

absl::StatusOr<LoadedModel> LoadModel(const std::string& preset_or_dir,
                                      const std::vector<std::string>& labels, uint64_t seed) {
  LoadedModel result;
  try {
    const fs::path dir(preset_or_dir);
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
      if (!IsModelPreset(preset_or_dir)) {
        return absl::NotFoundError("'" + preset_or_dir + "' is neither a model folder nor a preset (" +
                                   absl::StrJoin(ModelPresetNames(), ", ") + ")");
      }
      if (labels.empty()) {
        return absl::InvalidArgumentError("preset '" + preset_or_dir + "' needs a label set");
      }
      ASSIGN_OR_RETURN(result.config, PresetConfig(preset_or_dir));
      result.config.id2label = labels;
      RETURN_IF_ERROR(result.config.Validate());
      GeneratorScope fresh_weights(MakeCpuGenerator(seed));
      result.model = HubertForSequenceClassification(result.config);
      result.model->eval();
      result.preprocessor = DefaultPreprocessorFor(result.config);
      result.notes.push_back("random initialisation from preset '" + preset_or_dir + "'");
      return result;
    }

    ASSIGN_OR_RETURN(json config_json, ReadJsonFile(dir / "config.json"));
    auto config = HubertConfig::FromJson(config_json);
    if (!config.ok()) {
      return absl::Status(config.status().code(),
                          (dir / "config.json").string() + ": " + std::string(config.status().message()));
    }
    result.config = *std::move(config);

    if (fs::exists(dir / "preprocessor_config.json")) {
      ASSIGN_OR_RETURN(json pp_json, ReadJsonFile(dir / "preprocessor_config.json"));
      auto pp = PreprocessorConfig::FromJson(pp_json);
      if (!pp.ok()) {
        return absl::Status(pp.status().code(), (dir / "preprocessor_config.json").string() + ": " +
                                                    std::string(pp.status().message()));
      }
      result.preprocessor = *pp;
    } else {
      result.preprocessor = DefaultPreprocessorFor(result.config);
      result.notes.push_back("no preprocessor_config.json: using the defaults for this architecture");
    }

    std::map<std::string, torch::Tensor> tensors;
    if (fs::exists(dir / "model.safetensors")) {
      ASSIGN_OR_RETURN(tensors, ReadSafetensors((dir / "model.safetensors").string()));
    } else if (fs::exists(dir / "pytorch_model.bin")) {
      ASSIGN_OR_RETURN(tensors, ReadPytorchBin((dir / "pytorch_model.bin").string()));
    } else {
      return absl::NotFoundError(preset_or_dir + " holds neither model.safetensors nor pytorch_model.bin");
    }

    for (const std::string& key : kDroppedHeads) {
      if (tensors.erase(key)) {
        result.notes.push_back("dropped '" + key + "' (CTC head, not used for classification)");
      }
    }
    std::set<std::string> dtypes;
    for (const auto& [name, t] : tensors) {
      if (t.scalar_type() != torch::kFloat) dtypes.insert(c10::toString(t.scalar_type()));
    }
    if (!dtypes.empty()) {
      result.notes.push_back("converted " + absl::StrJoin(dtypes, ", ") + " weights to float32");
    }

    // A bare HubertModel has no "hubert." prefix and no head.
    bool fresh_head = false;
    const bool bare = std::none_of(tensors.begin(), tensors.end(),
                                   [](const auto& kv) { return StartsWith(kv.first, kHubertPrefix); });
    if (bare) {
      std::map<std::string, torch::Tensor> prefixed;
      for (auto& [name, t] : tensors) prefixed[kHubertPrefix + name] = t;
      tensors = std::move(prefixed);
      fresh_head = true;
      result.notes.push_back("fresh classification head: folder holds a bare HubertModel");
    } else if (!tensors.count("classifier.weight")) {
      fresh_head = true;
      result.notes.push_back("fresh classification head: folder holds no classifier");
    }
    if (!labels.empty() && labels != result.config.id2label) {
      if (!fresh_head) {
        result.notes.push_back("fresh classification head: labels [" + absl::StrJoin(labels, ", ") +
                               "] differ from the folder's [" +
                               absl::StrJoin(result.config.id2label, ", ") + "]");
      }
      fresh_head = true;
      result.config.id2label = labels;
    }
    if (result.config.id2label.empty()) {
      return absl::InvalidArgumentError(preset_or_dir + ": config.json has no id2label and no labels were given");
    }
    RETURN_IF_ERROR(result.config.Validate());
    if (fresh_head) {
      for (auto it = tensors.begin(); it != tensors.end();) {
        it = Matches(it->first, kHeadKeys) ? tensors.erase(it) : std::next(it);
      }
    }

    GeneratorScope fresh_weights(MakeCpuGenerator(seed));
    result.model = HubertForSequenceClassification(result.config);
    std::vector<std::string> fresh_ok = {"hubert.masked_spec_embed"};
    if (fresh_head) fresh_ok.insert(fresh_ok.end(), kHeadKeys.begin(), kHeadKeys.end());
    std::vector<std::string> missing_fresh;
    absl::Status loaded = LoadStateDict(result.model, std::move(tensors), fresh_ok, &missing_fresh);
    if (!loaded.ok()) {
      return absl::Status(loaded.code(), preset_or_dir + ": " + std::string(loaded.message()));
    }
    if (std::count(missing_fresh.begin(), missing_fresh.end(), "hubert.masked_spec_embed")) {
      result.notes.push_back("fresh hubert.masked_spec_embed: not in the checkpoint");
    }
    result.model->eval();
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("loading model '", preset_or_dir, "': ", e.what_without_backtrace()));
  }
  return result;
}

absl::Status SaveModelFolder(const HubertForSequenceClassification& model,
                             const PreprocessorConfig& preprocessor, const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::NotFoundError("output folder " + dir + " does not exist");
  const fs::path path(dir);
  std::map<std::string, torch::Tensor> tensors;
  try {
    tensors = StateDict(model);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("collecting weights: ", e.what_without_backtrace()));
  }
  json config = model->config().ToJson();
  const torch::ScalarType dtype = tensors.at("classifier.weight").scalar_type();
  config["torch_dtype"] = dtype == torch::kBFloat16 ? "bfloat16" : dtype == torch::kFloat16 ? "float16" : "float32";
  RETURN_IF_ERROR(WriteJsonFile(path / "config.json", config));
  RETURN_IF_ERROR(WriteSafetensors(tensors, (path / "model.safetensors").string()));
  RETURN_IF_ERROR(WriteJsonFile(path / "preprocessor_config.json", preprocessor.ToJson()));
  return absl::OkStatus();
}

}  // namespace ftune::model
