// The libtorch HuBERT classifier: save/load round trips, strict loading, presets, mixed
// precision, training-mode behaviour, freezing and preprocessing.
#include <filesystem>
#include <fstream>
#include <string>

#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nlohmann/json.hpp"
#include "tests/support/process.h"
#include "worker/model/checkpoint.h"
#include "worker/model/device.h"
#include "worker/model/preprocess.h"
#include "worker/model/safetensors.h"

namespace ftune::model {
namespace {

const std::vector<std::string> kLabels = {"neutral", "happy", "sad", "angry"};

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

bool HasNote(const LoadedModel& m, const std::string& fragment) {
  for (const auto& n : m.notes) {
    if (n.find(fragment) != std::string::npos) return true;
  }
  return false;
}

// A small config exercising the options the tiny preset leaves off.
HubertConfig SmallGroupNormConfig() {
  HubertConfig c = *PresetConfig("tiny");
  c.feat_extract_norm = "group";
  c.do_stable_layer_norm = false;
  c.conv_bias = false;
  c.use_weighted_layer_sum = true;
  c.num_conv_pos_embeddings = 16;
  c.id2label = {"a", "b", "c"};
  return c;
}

class ModelTest : public ::testing::Test {
 protected:
  std::string NewDir(const std::string& name) {
    std::string dir = root_ + "/" + name;
    std::filesystem::create_directories(dir);
    return dir;
  }
  std::string root_ = ftune::testing::MakeTempDir("model");
};

TEST_F(ModelTest, PresetNeedsLabelsAndUnknownNamesFail) {
  EXPECT_EQ(LoadModel("tiny", {}, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadModel("/no/such/folder", kLabels, 1).status().code(), absl::StatusCode::kNotFound);
  auto tiny = LoadModel("tiny", kLabels, 1);
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_EQ(tiny->config.num_labels(), 4);
  EXPECT_FALSE(tiny->model->is_training());
  EXPECT_TRUE(tiny->preprocessor.return_attention_mask);  // layer-norm preset
}

TEST_F(ModelTest, SeedDeterminesFreshWeights) {
  auto a = LoadModel("tiny", kLabels, 5), b = LoadModel("tiny", kLabels, 5), c = LoadModel("tiny", kLabels, 6);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  auto sa = StateDict(a->model), sb = StateDict(b->model), sc = StateDict(c->model);
  for (const auto& [name, t] : sa) EXPECT_TRUE(torch::equal(t, sb.at(name))) << name;
  EXPECT_FALSE(torch::equal(sa.at("classifier.weight"), sc.at("classifier.weight")));
}

TEST_F(ModelTest, StateDictKeysAreHuggingFaceNames) {
  auto m = LoadModel("tiny", kLabels, 1);
  ASSERT_TRUE(m.ok());
  auto sd = StateDict(m->model);
  for (const char* key :
       {"hubert.feature_extractor.conv_layers.0.conv.weight", "hubert.feature_extractor.conv_layers.6.layer_norm.bias",
        "hubert.feature_projection.layer_norm.weight", "hubert.feature_projection.projection.weight",
        "hubert.masked_spec_embed", "hubert.encoder.pos_conv_embed.conv.weight_g",
        "hubert.encoder.pos_conv_embed.conv.weight_v", "hubert.encoder.pos_conv_embed.conv.bias",
        "hubert.encoder.layer_norm.weight", "hubert.encoder.layers.2.attention.q_proj.weight",
        "hubert.encoder.layers.0.feed_forward.intermediate_dense.weight",
        "hubert.encoder.layers.1.final_layer_norm.bias", "projector.weight", "classifier.bias"}) {
    EXPECT_TRUE(sd.count(key)) << key;
  }
  // Group-norm encoders normalise only the first conv layer.
  HubertForSequenceClassification g(SmallGroupNormConfig());
  auto gsd = StateDict(g);
  EXPECT_TRUE(gsd.count("hubert.feature_extractor.conv_layers.0.layer_norm.weight"));
  EXPECT_FALSE(gsd.count("hubert.feature_extractor.conv_layers.1.layer_norm.weight"));
  EXPECT_FALSE(gsd.count("hubert.feature_extractor.conv_layers.0.conv.bias"));
  EXPECT_EQ(gsd.at("layer_weights").size(0), 4);
}

TEST_F(ModelTest, SaveLoadRoundTripIsBitIdentical) {
  torch::manual_seed(3);
  HubertForSequenceClassification model(SmallGroupNormConfig());
  {
    torch::NoGradGuard no_grad;  // make every tensor distinct from its init
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.01);
  }
  model->eval();
  PreprocessorConfig pp;
  pp.do_normalize = false;
  const std::string dir = NewDir("saved");
  ASSERT_TRUE(SaveModelFolder(model, pp, dir).ok());
  for (const char* f : {"config.json", "model.safetensors", "preprocessor_config.json"}) {
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + f)) << f;
  }
  auto loaded = LoadModel(dir, {}, 99);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->notes.empty()) << loaded->notes[0];
  EXPECT_EQ(loaded->config.ToJson(), model->config().ToJson());
  EXPECT_FALSE(loaded->preprocessor.do_normalize);
  auto before = StateDict(model), after = StateDict(loaded->model);
  ASSERT_EQ(before.size(), after.size());
  for (const auto& [name, t] : before) EXPECT_TRUE(torch::equal(t, after.at(name))) << name;

  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::randn({2, 6000});
  torch::Tensor lengths = torch::tensor({6000, 4000}, torch::kLong);
  EXPECT_TRUE(torch::equal(model->forward(x, lengths), loaded->model->forward(x, lengths)));

  // Saving the loaded model again gives the same bytes.
  const std::string dir2 = NewDir("saved2");
  ASSERT_TRUE(SaveModelFolder(loaded->model, loaded->preprocessor, dir2).ok());
  EXPECT_EQ(ReadBytes(dir + "/model.safetensors"), ReadBytes(dir2 + "/model.safetensors"));
  EXPECT_EQ(ReadBytes(dir + "/config.json"), ReadBytes(dir2 + "/config.json"));
}

class StrictLoadTest : public ModelTest {
 protected:
  void SetUp() override {
    auto m = LoadModel("tiny", kLabels, 1);
    ASSERT_TRUE(m.ok());
    dir_ = NewDir("strict");
    ASSERT_TRUE(SaveModelFolder(m->model, m->preprocessor, dir_).ok());
    auto t = ReadSafetensors(dir_ + "/model.safetensors");
    ASSERT_TRUE(t.ok());
    tensors_ = *t;
  }
  absl::Status LoadWith(const std::map<std::string, torch::Tensor>& tensors) {
    EXPECT_TRUE(WriteSafetensors(tensors, dir_ + "/model.safetensors").ok());
    return LoadModel(dir_, {}, 1).status();
  }
  void ExpectNamed(const absl::Status& s, const std::string& name) {
    ASSERT_FALSE(s.ok());
    EXPECT_NE(std::string(s.message()).find(name), std::string::npos) << s;
  }
  std::string dir_;
  std::map<std::string, torch::Tensor> tensors_;
};

TEST_F(StrictLoadTest, UnknownTensorIsNamed) {
  auto t = tensors_;
  t["hubert.encoder.layers.9.attention.q_proj.weight"] = torch::zeros({96, 96});
  ExpectNamed(LoadWith(t), "hubert.encoder.layers.9.attention.q_proj.weight");
}

TEST_F(StrictLoadTest, MissingTensorIsNamed) {
  auto t = tensors_;
  t.erase("hubert.encoder.layers.1.feed_forward.output_dense.bias");
  ExpectNamed(LoadWith(t), "hubert.encoder.layers.1.feed_forward.output_dense.bias");
}

TEST_F(StrictLoadTest, MisshapedTensorIsNamed) {
  auto t = tensors_;
  t["hubert.feature_projection.projection.weight"] = torch::zeros({96, 63});
  ExpectNamed(LoadWith(t), "hubert.feature_projection.projection.weight");
}

TEST_F(StrictLoadTest, HalfPrecisionWeightsConvertWithNote) {
  auto t = tensors_;
  for (auto& [name, tensor] : t) tensor = tensor.to(torch::kBFloat16);
  ASSERT_TRUE(WriteSafetensors(t, dir_ + "/model.safetensors").ok());
  auto m = LoadModel(dir_, {}, 1);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(HasNote(*m, "BFloat16"));
  EXPECT_EQ(m->model->classifier->weight.scalar_type(), torch::kFloat);
}

TEST_F(StrictLoadTest, PlainPositionalConvWeightAndMissingMaskEmbedding) {
  auto t = tensors_;
  const std::string p = "hubert.encoder.pos_conv_embed.conv.";
  auto original = LoadModel(dir_, {}, 1);
  ASSERT_TRUE(original.ok());
  t[p + "weight"] = original->model->hubert->encoder->pos_conv_embed->conv->weight().detach();
  t.erase(p + "weight_g");
  t.erase(p + "weight_v");
  t.erase("hubert.masked_spec_embed");
  ASSERT_TRUE(WriteSafetensors(t, dir_ + "/model.safetensors").ok());
  auto m = LoadModel(dir_, {}, 1);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(HasNote(*m, "masked_spec_embed"));
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::randn({1, 8000});
  EXPECT_TRUE(torch::allclose(m->model->forward(x, {}), original->model->forward(x, {}), 1e-5, 1e-6));
  // Both spellings at once is ambiguous.
  t[p + "weight_g"] = tensors_.at(p + "weight_g");
  ExpectNamed(LoadWith(t), p + "weight");
}

// A config that turns SpecAugment off has no mask embedding; the checkpoint's is left out
// (as Hugging Face does) instead of failing the load.
TEST_F(StrictLoadTest, MaskEmbeddingOfAConfigWithoutMaskingIsIgnored) {
  const std::string config_path = dir_ + "/config.json";
  nlohmann::json config = nlohmann::json::parse(std::ifstream(config_path));
  config["mask_time_prob"] = 0.0;
  config["mask_feature_prob"] = 0.0;
  std::ofstream(config_path) << config.dump();
  auto m = LoadModel(dir_, {}, 1);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->model->named_parameters().find("hubert.masked_spec_embed"), nullptr);
  EXPECT_TRUE(torch::equal(m->model->classifier->weight,
                           tensors_.at("classifier.weight").to(torch::kFloat)));
}

TEST_F(StrictLoadTest, BadConfigAndMissingWeightsAreErrors) {
  std::filesystem::remove(dir_ + "/model.safetensors");
  EXPECT_EQ(LoadModel(dir_, {}, 1).status().code(), absl::StatusCode::kNotFound);
  std::ofstream(dir_ + "/config.json") << R"({"model_type": "hubert", "hidden_act": "mish"})";
  ExpectNamed(LoadModel(dir_, {}, 1).status(), "hidden_act");
}

TEST_F(ModelTest, NumFramesMatchesHuggingFaceFormula) {
  auto m = LoadModel("tiny", kLabels, 1);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->model->num_frames(16000), 49);
  EXPECT_EQ(m->model->num_frames(48000), 149);
  EXPECT_EQ(m->model->num_frames(400), 1);
  EXPECT_EQ(m->model->num_frames(399), 0);
  torch::NoGradGuard no_grad;
  EXPECT_EQ(m->model->extract_features(torch::randn({2, 16000})).sizes(), (std::vector<int64_t>{2, 49, 64}));
  auto frames = m->model->num_frames(torch::tensor({16000, 400, 10}, torch::kLong));
  EXPECT_EQ(frames[0].item<int64_t>(), 49);
  EXPECT_EQ(frames[2].item<int64_t>(), 0);
  // Too short: an error, not a crash.
  ModelInput tiny_input{torch::randn({1, 100}), torch::Tensor()};
  EXPECT_FALSE(ForwardLogits(m->model, tiny_input).ok());
}

// A fresh model in eval mode whose head has some gain, so logits are not all ~0.
HubertForSequenceClassification EvalModelWithHeadGain(const HubertConfig& config, int seed) {
  torch::manual_seed(seed);
  HubertForSequenceClassification model(config);
  {
    torch::NoGradGuard no_grad;
    model->classifier->weight.normal_(0, 1);
    model->projector->weight.normal_(0, 0.3);
  }
  model->eval();
  return model;
}

// The feature encoder's GEMM form equals its conv1d form for group-norm and layer-norm (with
// conv bias) encoders; under bf16 autocast a frozen encoder takes the GEMM form even with
// autograd on, and a trainable one the conv1d form.
TEST_F(ModelTest, FeatureEncoderGemmFormEqualsConvForm) {
  HubertConfig layer_norm = *PresetConfig("tiny");
  layer_norm.feat_extract_norm = "layer";
  layer_norm.conv_bias = true;
  for (HubertConfig config : {SmallGroupNormConfig(), layer_norm}) {
    if (config.id2label.empty()) config.id2label = kLabels;
    SCOPED_TRACE(config.feat_extract_norm);
    torch::manual_seed(4);
    HubertForSequenceClassification model(config);
    HubertFeatureEncoder& encoder = model->hubert->feature_extractor;
    {
      model->to(torch::kDouble);
      torch::Tensor x = torch::randn({2, 6000}, torch::kDouble);
      torch::Tensor conv_form = model->extract_features(x);
      ASSERT_TRUE(conv_form.requires_grad());
      torch::Tensor gemm_form = encoder->forward_time_major(x, torch::kDouble);
      ASSERT_EQ(gemm_form.sizes(), conv_form.sizes());
      EXPECT_TRUE(torch::allclose(gemm_form, conv_form.detach(), 1e-9, 1e-9));
      model->to(torch::kFloat);
    }

    torch::Tensor x = torch::randn({2, 6000});
    AutocastGuard autocast(torch::Device(torch::kCPU), torch::kBFloat16);
    torch::Tensor trainable = model->extract_features(x);
    EXPECT_TRUE(trainable.requires_grad());
    model->freeze_feature_encoder();
    torch::Tensor frozen = model->extract_features(x);
    EXPECT_FALSE(frozen.requires_grad());
    // Bit for bit the GEMM form, so the frozen encoder took it (conv1d rounds differently).
    torch::Tensor gemm_form = encoder->forward_time_major(x, torch::kBFloat16);
    EXPECT_TRUE(torch::equal(frozen, gemm_form));
    EXPECT_FALSE(torch::equal(frozen.to(torch::kFloat), trainable.detach().to(torch::kFloat)));

    // The cached GEMM weight follows an in-place update of the frozen weight.
    {
      torch::NoGradGuard no_grad;
      encoder->layers[1]->conv->weight.mul_(-1);
    }
    torch::Tensor updated = model->extract_features(x);
    EXPECT_TRUE(torch::equal(updated, encoder->forward_time_major(x, torch::kBFloat16)));
    EXPECT_FALSE(torch::equal(updated, frozen));
    const double scale = trainable.abs().max().item<double>();
    EXPECT_LT((frozen.to(torch::kFloat) - trainable.detach().to(torch::kFloat)).abs().max().item<double>(),
              0.05 * scale);
  }
}

// bf16 autocast on CPU: every layer runs, and logits stay within 5% of the largest fp32 logit
// (bf16 keeps 8 mantissa bits).
TEST_F(ModelTest, Bf16AutocastCloseToFp32) {
  for (HubertConfig config : {*PresetConfig("tiny"), SmallGroupNormConfig()}) {
    if (config.id2label.empty()) config.id2label = kLabels;
    HubertForSequenceClassification model = EvalModelWithHeadGain(config, 11);
    torch::NoGradGuard no_grad;
    torch::Tensor x = torch::randn({2, 16000});
    torch::Tensor lengths = torch::tensor({16000, 11000}, torch::kLong);
    torch::Tensor fp32 = model->forward(x, lengths);
    torch::Tensor bf16;
    {
      AutocastGuard autocast(torch::Device(torch::kCPU), true);
      bf16 = model->forward(x, lengths);
    }
    EXPECT_FALSE(at::autocast::is_cpu_enabled());
    EXPECT_EQ(bf16.scalar_type(), torch::kFloat);
    const double scale = fp32.abs().max().item<double>();
    const double diff = (bf16 - fp32).abs().max().item<double>();
    EXPECT_GT(diff, 0) << "autocast did not change the arithmetic";
    EXPECT_LT(diff, 0.05 * scale) << config.feat_extract_norm << " fp32 " << fp32 << " bf16 " << bf16;
  }
}

// Served at bf16, the weights are converted once instead of cast on every forward pass: the
// same arithmetic, so the same logits as plain autocast, and no fp32 linear or conv is left.
TEST_F(ModelTest, PreparedForInferenceEqualsAutocast) {
  for (HubertConfig config : {*PresetConfig("tiny"), SmallGroupNormConfig()}) {
    if (config.id2label.empty()) config.id2label = kLabels;
    HubertForSequenceClassification model = EvalModelWithHeadGain(config, 12);
    torch::NoGradGuard no_grad;
    torch::Tensor x = torch::randn({2, 16000});
    torch::Tensor lengths = torch::tensor({16000, 11000}, torch::kLong);
    AutocastGuard autocast(torch::Device(torch::kCPU), true);
    torch::Tensor cast_each_time = model->forward(x, lengths);
    model->prepare_for_inference(torch::kBFloat16);
    torch::Tensor prepared = model->forward(x, lengths);
    EXPECT_EQ(prepared.scalar_type(), torch::kFloat);
    const double scale = cast_each_time.abs().max().item<double>();
    EXPECT_LT((prepared - cast_each_time).abs().max().item<double>(), 1e-2 * scale)
        << config.feat_extract_norm << " autocast " << cast_each_time << " prepared " << prepared;
    EXPECT_EQ(model->classifier->weight.scalar_type(), torch::kBFloat16);
    EXPECT_EQ(model->hubert->encoder->layers[0]->attention->q_proj->weight.scalar_type(),
              torch::kBFloat16);
    EXPECT_EQ(model->hubert->encoder->pos_conv_embed->conv->folded_weight.scalar_type(),
              torch::kBFloat16);
  }
}

TEST_F(ModelTest, TrainingForwardBackwardWithSpecAugmentAndFreezing) {
  HubertConfig config = SmallGroupNormConfig();
  config.apply_spec_augment = true;
  config.mask_time_prob = 0.5;
  config.mask_time_length = 3;
  config.layerdrop = 0.3;
  torch::manual_seed(2);
  HubertForSequenceClassification model(config);
  model->freeze_feature_encoder();
  model->train();
  torch::Tensor x = torch::randn({3, 12000});
  torch::Tensor lengths = torch::tensor({12000, 9000, 6000}, torch::kLong);
  torch::Tensor logits = model->forward(x, lengths);
  torch::Tensor loss = torch::nn::functional::cross_entropy(logits, torch::tensor({0, 1, 2}, torch::kLong));
  loss.backward();
  EXPECT_TRUE(std::isfinite(loss.item<double>()));
  for (const auto& p : model->hubert->feature_extractor->named_parameters()) {
    EXPECT_FALSE(p.value().requires_grad()) << p.key();
    EXPECT_FALSE(p.value().grad().defined()) << p.key();
  }
  // Masked frames take masked_spec_embed, so it receives gradient.
  ASSERT_TRUE(model->hubert->masked_spec_embed.grad().defined());
  EXPECT_GT(model->hubert->masked_spec_embed.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(model->classifier->weight.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(model->layer_weights.grad().abs().sum().item<double>(), 0);

  // Training differs from eval (dropout, masking); eval is deterministic.
  model->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor e1 = model->forward(x, lengths), e2 = model->forward(x, lengths);
  EXPECT_TRUE(torch::equal(e1, e2));
  EXPECT_FALSE(torch::allclose(e1, logits.detach()));
}

TEST_F(ModelTest, TrainingUnderBf16AutocastBackpropagates) {
  auto m = LoadModel("tiny", kLabels, 4);
  ASSERT_TRUE(m.ok());
  m->model->train();
  torch::Tensor x = torch::randn({2, 8000});
  torch::Tensor loss;
  {
    AutocastGuard autocast(torch::Device(torch::kCPU), true);
    torch::Tensor logits = m->model->forward(x, torch::tensor({8000, 5000}, torch::kLong));
    loss = torch::nn::functional::cross_entropy(logits, torch::tensor({0, 3}, torch::kLong));
  }
  loss.backward();
  EXPECT_TRUE(std::isfinite(loss.item<double>()));
  EXPECT_EQ(m->model->hubert->encoder->layers[0]->attention->q_proj->weight.grad().scalar_type(), torch::kFloat);
}

TEST_F(ModelTest, FreezeBackboneLeavesOnlyTheHead) {
  HubertForSequenceClassification model(SmallGroupNormConfig());
  model->freeze_backbone_layers(1);
  EXPECT_FALSE(model->hubert->encoder->layers[0]->attention->q_proj->weight.requires_grad());
  EXPECT_TRUE(model->hubert->encoder->layers[1]->attention->q_proj->weight.requires_grad());
  EXPECT_FALSE(model->hubert->feature_projection->projection->weight.requires_grad());
  EXPECT_FALSE(model->hubert->encoder->layer_norm->weight.requires_grad());  // post-LN: before the layers
  model->freeze_backbone();
  for (const auto& p : model->named_parameters()) {
    const bool head = p.key().rfind("projector.", 0) == 0 || p.key().rfind("classifier.", 0) == 0 ||
                      p.key() == "layer_weights";
    EXPECT_EQ(p.value().requires_grad(), head) << p.key();
  }
}

TEST(PreprocessTest, NormalisesEachClipAndMasksOnlyWhenAsked) {
  PreprocessorConfig pp;
  pp.return_attention_mask = true;
  std::vector<torch::Tensor> clips = {torch::randn({1000}) * 3 + 1, torch::randn({600}) * 0.1 - 2};
  ModelInput in = MakeModelInput(clips, pp);
  ASSERT_EQ(in.input_values.sizes(), (std::vector<int64_t>{2, 1000}));
  ASSERT_TRUE(in.lengths.defined());
  EXPECT_EQ(in.lengths[1].item<int64_t>(), 600);
  torch::Tensor row1 = in.input_values[1].slice(0, 0, 600);
  EXPECT_NEAR(row1.mean().item<double>(), 0, 1e-5);
  EXPECT_NEAR(row1.var(false).item<double>(), 1, 1e-3);
  EXPECT_EQ(in.input_values[1].slice(0, 600).abs().sum().item<double>(), 0);

  pp.return_attention_mask = false;
  pp.do_normalize = false;
  ModelInput plain = MakeModelInput(clips, pp);
  EXPECT_FALSE(plain.lengths.defined());
  EXPECT_TRUE(torch::equal(plain.input_values[0], clips[0]));
}

}  // namespace
}  // namespace ftune::model

namespace ftune::model {
namespace {

// A voiced tone whose pitch rises (label 1) or falls (label 0) from a random starting pitch:
// the class lives only in the prosody.
torch::Tensor Contour(bool rising, torch::Generator& gen, int64_t samples) {
  // Start at centre / 1.26 (rising) or centre * 1.26 (falling): same mean pitch either way.
  const double centre = 140 + 100 * torch::rand({1}, gen).item<double>();
  const double f0 = rising ? centre / 1.26 : centre * 1.26;
  torch::Tensor t = torch::arange(samples, torch::kDouble) / 16000.0;
  const double duration = samples / 16000.0;
  // Pitch glides by a factor of 1.6 (1.26^2) up or down; phase is the integral of the frequency.
  const double k = std::log(1.6) / duration * (rising ? 1 : -1);
  torch::Tensor phase = 2 * M_PI * f0 * (torch::exp(k * t) - 1) / k;
  torch::Tensor wave = torch::sin(phase) + 0.5 * torch::sin(2 * phase) + 0.25 * torch::sin(3 * phase);
  wave = wave * (0.3 + 0.7 * torch::rand({1}, gen).item<double>());
  return (wave + 0.05 * torch::randn({samples}, gen, torch::kDouble)).to(torch::kFloat);
}

// Why some seeds of a from-scratch tiny once sat at chance: with Hugging Face's
// initializer_range 0.02 (chosen for 768-wide models) each of tiny's 96-wide transformer layers
// changed its input by only ~20% and the logits of different clips differed by ~0.002, so the
// first gradients mostly suppressed that random variation; on unlucky seeds the representation
// collapsed to a constant (the spread of pooled features across clips fell from 12% to 1% of
// their size) and never recovered. The preset's initializer_range is 1/sqrt(hidden_size).
TEST(TinyPresetTest, FreshLayersAndLogitsAreNotNearConstant) {
  for (uint64_t seed : {1, 2, 3}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    auto loaded = LoadModel("tiny", {"a", "b", "c", "d", "e", "f", "g", "h"}, seed);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    auto& m = loaded->model;
    torch::NoGradGuard no_grad;
    torch::manual_seed(seed);
    const torch::Tensor audio = torch::randn({4, 32000});
    torch::Tensor h = m->hubert->feature_projection->forward(m->extract_features(audio));
    h = h + m->hubert->encoder->pos_conv_embed->forward(h);
    for (size_t i = 0; i < m->hubert->encoder->layers.size(); ++i) {
      torch::Tensor next = m->hubert->encoder->layers[i]->forward(h, torch::Tensor());
      const double change = ((next - h).norm() / h.norm()).item<double>();
      EXPECT_GT(change, 0.5) << "layer " << i;  // measured 0.7-1.1 (0.2 at 0.02)
      h = next;
    }
    const double spread = m->forward(audio, torch::Tensor()).std(0).mean().item<double>();
    EXPECT_GT(spread, 0.02);  // measured 0.05-0.09 (0.002 at 0.02)
  }
}

// The tiny preset learns a prosody-only distinction (pitch direction, same mean pitch) from 64
// clips in 160 steps on CPU. (At lr 1e-3 without warmup, 80 steps, seeds 0-2 stay at one
// class; at 3e-4 seeds 0-4 all reach 1.0.)
TEST(TinyPresetTest, LearnsPitchContourQuickly) {
  auto loaded = LoadModel("tiny", {"falling", "rising"}, 42);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto& model = loaded->model;
  auto gen = torch::make_generator<torch::CPUGeneratorImpl>(7);
  auto make_set = [&](int n) {
    std::vector<torch::Tensor> clips;
    std::vector<int64_t> labels;
    for (int i = 0; i < n; ++i) {
      labels.push_back(i % 2);
      clips.push_back(Contour(i % 2 == 1, gen, 6400 + 800 * (i % 3)));
    }
    return std::make_pair(MakeModelInput(clips, loaded->preprocessor), torch::tensor(labels, torch::kLong));
  };
  auto [train_x, train_y] = make_set(64);
  auto [test_x, test_y] = make_set(16);

  torch::manual_seed(0);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(3e-4).weight_decay(0.01));
  model->train();
  for (int step = 0; step < 160; ++step) {
    torch::Tensor idx = torch::randperm(64, torch::kLong).slice(0, 0, 8);
    opt.zero_grad();
    torch::Tensor logits = model->forward(train_x.input_values.index_select(0, idx),
                                          train_x.lengths.index_select(0, idx));
    torch::Tensor loss = torch::nn::functional::cross_entropy(logits, train_y.index_select(0, idx));
    loss.backward();
    opt.step();
  }
  model->eval();
  auto logits = ForwardLogits(model, test_x);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const double accuracy = logits->argmax(1).eq(test_y).to(torch::kFloat).mean().item<double>();
  EXPECT_GE(accuracy, 0.75);  // chance is 0.5
}

}  // namespace
}  // namespace ftune::model
