// Parity with torchaudio 0.13 (an independent implementation): make_reference.py builds small
// random models, writes them as HF folders with its own key mapping, and stores reference
// logits; the C++ model must reproduce them within 1e-4 in float32.
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/time/time.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "tests/support/process.h"
#include "worker/model/checkpoint.h"
#include "worker/model/device.h"
#include "worker/model/safetensors.h"
#include "worker/train/trainer.h"

namespace ftune::model {
namespace {

constexpr double kTolerance = 1e-4;

// Runs make_reference.py once per process; every test asserts on the outcome, so a missing
// torchaudio is a failure, not a skip.
absl::StatusOr<std::string> GenerateReference() {
  const std::string dir = ftune::testing::MakeTempDir("hubert_parity");
  const char* override_script = std::getenv("FTUNE_MODEL_REFERENCE_SCRIPT");
  const std::string script = override_script ? override_script : FTUNE_MODEL_REFERENCE_SCRIPT;
  auto run = ftune::testing::RunCommand({"/usr/bin/python3", script, dir}, absl::Seconds(240));
  if (!run.ok()) return run.status();
  if (run->exit_code != 0) {
    return absl::InternalError("make_reference.py exited with " + std::to_string(run->exit_code) +
                               " (is python3-torchaudio installed?): " + run->out);
  }
  return dir;
}

const absl::StatusOr<std::string>& ReferenceDir() {
  static const auto* dir = new absl::StatusOr<std::string>(GenerateReference());
  return *dir;
}

class ParityTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { ASSERT_TRUE(ReferenceDir().ok()) << ReferenceDir().status(); }
  std::string Folder(const std::string& name) const { return *ReferenceDir() + "/" + name; }
};

void ExpectClose(const torch::Tensor& actual, const torch::Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const double diff = (actual.to(torch::kFloat) - expected).abs().max().item<double>();
  EXPECT_LT(diff, kTolerance) << what << ": max |diff| = " << diff << "\nactual " << actual
                              << "\nexpected " << expected;
}

TEST_P(ParityTest, LogitsMatchTorchaudio) {
  const std::string folder = Folder(GetParam());
  auto loaded = LoadModel(folder, {}, 1);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto ref = ReadSafetensors(folder + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  std::ifstream meta_file(folder + "/reference.json");
  auto meta = nlohmann::json::parse(meta_file);
  const int64_t len0 = meta["lengths"][0], len1 = meta["lengths"][1];
  EXPECT_EQ(loaded->config.id2label, (std::vector<std::string>{"angry", "happy", "sad"}));

  auto& model = loaded->model;
  torch::NoGradGuard no_grad;
  const torch::Tensor padded = ref->at("input_padded");
  const torch::Tensor lengths = torch::tensor({len0, len1}, torch::kLong);

  // Each clip alone, no mask.
  torch::Tensor single0 = model->forward(padded.slice(0, 0, 1).slice(1, 0, len0), {});
  torch::Tensor single1 = model->forward(padded.slice(0, 1, 2).slice(1, 0, len1), {});
  ExpectClose(single0, ref->at("single_0"), "clip 0 alone");
  ExpectClose(single1, ref->at("single_1"), "clip 1 alone");

  // Padded batch with lengths (HF attention_mask) and without (group-norm HF usage).
  ExpectClose(model->forward(padded, lengths), ref->at("padded_masked"), "padded batch with mask");
  ExpectClose(model->forward(padded, {}), ref->at("padded_unmasked"), "padded batch without mask");

  // The two halves give the same as the whole.
  torch::Tensor halves = model->forward_features(model->extract_features(padded), lengths);
  EXPECT_TRUE(torch::allclose(halves, model->forward(padded, lengths), 0, 1e-6));
}

// A reference folder's model after the backward pass of make_reference.py's loss (the padded
// batch's cross-entropy, eval mode: no dropout on either side), and torchaudio's gradients.
struct ReferenceBackward {
  LoadedModel loaded;
  std::map<std::string, torch::Tensor> expected;
};

absl::StatusOr<ReferenceBackward> RunReferenceBackward(const std::string& folder,
                                                       bool bf16_autocast) {
  ReferenceBackward out;
  ASSIGN_OR_RETURN(out.loaded, LoadModel(folder, {}, 1));
  ASSIGN_OR_RETURN(auto ref, ReadSafetensors(folder + "/reference.safetensors"));
  ASSIGN_OR_RETURN(out.expected, ReadSafetensors(folder + "/gradients.safetensors"));
  std::ifstream meta_file(folder + "/reference.json");
  const auto meta = nlohmann::json::parse(meta_file);
  const torch::Tensor lengths = torch::tensor(meta["lengths"].get<std::vector<int64_t>>());
  const torch::Tensor labels = torch::tensor(meta["labels"].get<std::vector<int64_t>>());
  auto& model = out.loaded.model;
  model->eval();
  AutocastGuard autocast(torch::Device(torch::kCPU), bf16_autocast);
  torch::nn::functional::cross_entropy(model->forward(ref.at("input_padded"), lengths), labels)
      .backward();
  return out;
}

// Training parity: the gradient reaches every parameter as torchaudio's autograd computes it.
TEST_P(ParityTest, GradientsMatchTorchaudio) {
  auto run = RunReferenceBackward(Folder(GetParam()), /*bf16_autocast=*/false);
  ASSERT_TRUE(run.ok()) << run.status();
  int compared = 0;
  for (const auto& item : run->loaded.model->named_parameters()) {
    auto it = run->expected.find(item.key());
    if (it == run->expected.end()) {
      // Only what torchaudio lacks and evaluation never uses (masked_spec_embed).
      EXPECT_FALSE(item.value().grad().defined()) << item.key() << " has no reference gradient";
      continue;
    }
    ASSERT_TRUE(item.value().grad().defined()) << item.key() << " got no gradient";
    const torch::Tensor& want = it->second;
    const double scale = std::max(1.0, want.abs().max().item<double>());
    const double diff = (item.value().grad() - want).abs().max().item<double>();
    EXPECT_LT(diff, 1e-4 * scale) << item.key() << ": max |diff| " << diff << ", max |grad| "
                                  << want.abs().max().item<double>();
    ++compared;
  }
  EXPECT_EQ(compared, static_cast<int>(run->expected.size()));
}

// The path training takes on this CPU: bf16 autocast. Each parameter's gradient stays within
// a few percent of the float64 reference (bf16 keeps ~3 significant digits; measured worst
// 2.6-3.3% across the variants).
TEST_P(ParityTest, Bf16AutocastGradientsTrackTheReference) {
  auto run = RunReferenceBackward(Folder(GetParam()), /*bf16_autocast=*/true);
  ASSERT_TRUE(run.ok()) << run.status();
  double worst = 0;
  std::string worst_name;
  for (const auto& item : run->loaded.model->named_parameters()) {
    auto it = run->expected.find(item.key());
    if (it == run->expected.end()) continue;
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    const double norm = it->second.norm().item<double>();
    if (norm < 1e-6) continue;
    const double error = (item.value().grad() - it->second).norm().item<double>() / norm;
    if (error > worst) worst = error, worst_name = item.key();
  }
  EXPECT_LT(worst, 0.08) << "relative gradient error at " << worst_name;
}

class DiscardingSink : public train::EventSink {
 public:
  void Emit(ftune::v1::JobEvent) override {}
};

// The trainer's optimizer steps against torch's on identical weights and batch: fp32, dropout
// off, AdamW with weight decay (none on biases and LayerNorms, as transformers' Trainer) and
// clipping at half the first gradient norm, two steps at a constant learning rate. The loss,
// the gradient norm, every clipped gradient of step 1 and every parameter after each step.
TEST_P(ParityTest, TrainingStepsMatchTorch) {
  const std::string folder = Folder(GetParam());
  auto loaded = LoadModel(folder, {}, 1);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto ref = ReadSafetensors(folder + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto steps = ReadSafetensors(folder + "/train_steps.safetensors");
  ASSERT_TRUE(steps.ok()) << steps.status();
  std::ifstream meta_file(folder + "/reference.json");
  const auto meta = nlohmann::json::parse(meta_file);
  const auto& recipe = meta.at("train_steps");

  // The same weights in a model without dropout.
  HubertConfig config = loaded->config;
  config.hidden_dropout = config.attention_dropout = config.activation_dropout = 0;
  config.feat_proj_dropout = config.layerdrop = 0;
  LoadedModel model;
  model.config = config;
  model.preprocessor = loaded->preprocessor;
  model.model = HubertForSequenceClassification(config);
  ASSERT_TRUE(LoadStateDict(model.model, StateDict(loaded->model), {}, nullptr).ok());

  train::TrainerConfig tc;
  tc.epochs = 1;
  tc.batch_size = 2;
  tc.learning_rate = recipe.at("learning_rate").get<double>();
  tc.weight_decay = recipe.at("weight_decay").get<double>();
  tc.max_grad_norm = recipe.at("max_grad_norm").get<double>();
  tc.schedule = train::ScheduleKind::kConstant;
  tc.precision = train::RequestedPrecision::kFp32;
  tc.freeze_feature_encoder_set = true;
  tc.freeze_feature_encoder = false;
  tc.device = "cpu";
  tc.output_dir = ftune::testing::MakeTempDir("step_parity");
  data::Dataset dataset;
  dataset.labels = config.id2label;
  dataset.train.push_back(data::Clip{"unused.wav", 0, "", 1.0});
  data::AudioCache cache;
  DiscardingSink sink;
  train::CancelToken cancel;
  auto trainer = train::Trainer::Create(tc, std::move(model), dataset, &cache, &sink, &cancel);
  ASSERT_TRUE(trainer.ok()) << trainer.status();

  data::Batch batch;
  batch.audio = ref->at("input_padded");
  batch.lengths = torch::tensor(meta.at("lengths").get<std::vector<int64_t>>());
  batch.labels = torch::tensor(meta.at("labels").get<std::vector<int64_t>>());
  batch.clip_indices = {0, 1};
  auto& m = (*trainer)->model();
  double max_grad = 0;
  for (const auto& [key, t] : *steps) {
    if (key.rfind("clipped_grad.", 0) == 0) max_grad = std::max(max_grad, t.abs().max().item<double>());
  }
  for (int step = 1; step <= 2; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    auto stats = (*trainer)->TrainStep({batch});
    ASSERT_TRUE(stats.ok()) << stats.status();
    ASSERT_TRUE(stats->taken);
    const double want_loss = recipe.at("losses")[step - 1].get<double>();
    const double want_norm = recipe.at("grad_norms")[step - 1].get<double>();
    EXPECT_NEAR(stats->loss, want_loss, 1e-5 * std::max(1.0, want_loss));
    EXPECT_NEAR(stats->grad_norm, want_norm, 1e-4 * want_norm);
    const double clip = std::min(1.0, tc.max_grad_norm / (stats->grad_norm + 1e-6));
    if (step == 1) EXPECT_LT(clip, 0.6);  // clipping is active
    int compared = 0;
    for (const auto& item : m->named_parameters()) {
      if (step == 1) {
        const torch::Tensor& want = steps->at("clipped_grad." + item.key());
        ASSERT_TRUE(item.value().grad().defined()) << item.key() << " got no gradient";
        const double scale = std::max(1e-3, want.abs().max().item<double>());
        const double diff = (item.value().grad() * clip - want).abs().max().item<double>();
        EXPECT_LT(diff, 1e-4 * scale) << "clipped gradient of " << item.key();
      }
      // An Adam step moves each weight by about the learning rate whatever its gradient's
      // size, so a wrong update shows at that scale. Where the true gradient is zero or
      // nearly (k_proj.bias: softmax ignores a shift shared by all keys; a conv bias before a
      // per-channel GroupNorm; cancellations) float32 gradients are rounding noise and the
      // update's sign is noise too: those elements are only held to the step's bound.
      const torch::Tensor grad = steps->at("clipped_grad." + item.key()).abs();
      const torch::Tensor well_conditioned =
          grad >= std::max(1e-3 * grad.max().item<double>(), 1e-5 * max_grad);
      const torch::Tensor& want = steps->at("step" + std::to_string(step) + "." + item.key());
      const torch::Tensor diff = (item.value().detach() - want).abs();
      const double max_diff =
          (diff * well_conditioned.to(diff.scalar_type())).max().item<double>();
      EXPECT_LT(max_diff, 1e-2 * tc.learning_rate) << "parameter " << item.key();
      EXPECT_LT(diff.max().item<double>(), 2.1 * step * tc.learning_rate) << item.key();
      ++compared;
    }
    EXPECT_EQ(compared, static_cast<int>(steps->size() / 3));
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, ParityTest,
                         ::testing::Values("group_postln", "layer_stable", "group_postln_bin"));

// Layer-norm feature encoders are per-frame, so with a mask each padded row equals the clip
// alone (the torchaudio reference shows the same above). A group-norm encoder normalises over
// the padding too, which is why HF gives those models zero padding and no mask.
TEST_F(ParityTest, PaddedRowsEqualUnpaddedForLayerNormModel) {
  auto loaded = LoadModel(Folder("layer_stable"), {}, 1);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto ref = ReadSafetensors(Folder("layer_stable") + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  torch::NoGradGuard no_grad;
  const torch::Tensor padded = ref->at("input_padded");
  for (int64_t len1 : {5600, 4000, 1000}) {
    torch::Tensor batch = loaded->model->forward(padded, torch::tensor({padded.size(1), len1}, torch::kLong));
    torch::Tensor alone = loaded->model->forward(padded.slice(0, 1, 2).slice(1, 0, len1), {});
    ExpectClose(batch.slice(0, 1, 2), alone, "padded row vs alone, length " + std::to_string(len1));
  }
}

TEST_F(ParityTest, BareHubertModelGetsFreshHeadAndSameFeatures) {
  auto loaded = LoadModel(Folder("bare"), {"neutral", "sad"}, 7);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_FALSE(loaded->notes.empty());
  bool noted = false;
  for (const auto& n : loaded->notes) noted |= n.find("bare HubertModel") != std::string::npos;
  EXPECT_TRUE(noted);
  EXPECT_EQ(loaded->model->config().num_labels(), 2);
  auto ref = ReadSafetensors(Folder("bare") + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto clip = ReadSafetensors(Folder("group_postln") + "/reference.safetensors");
  ASSERT_TRUE(clip.ok()) << clip.status();
  torch::NoGradGuard no_grad;
  torch::Tensor features = loaded->model->extract_features(clip->at("input_padded").slice(0, 0, 1));
  ExpectClose(features, ref->at("features_0"), "feature encoder");
  // A bare model without labels has nothing to classify into.
  EXPECT_FALSE(LoadModel(Folder("bare"), {}, 7).ok());
}

TEST_F(ParityTest, DifferentLabelsReinitialiseTheHead) {
  auto original = LoadModel(Folder("layer_stable"), {}, 1);
  auto relabelled = LoadModel(Folder("layer_stable"), {"a", "b", "c", "d"}, 1);
  ASSERT_TRUE(original.ok() && relabelled.ok());
  EXPECT_EQ(relabelled->config.num_labels(), 4);
  EXPECT_EQ(relabelled->model->classifier->weight.size(0), 4);
  EXPECT_FALSE(relabelled->notes.empty());
  // The backbone is untouched.
  EXPECT_TRUE(torch::equal(original->model->hubert->encoder->layers[1]->attention->q_proj->weight,
                           relabelled->model->hubert->encoder->layers[1]->attention->q_proj->weight));
  // Same labels: nothing re-initialised.
  auto same = LoadModel(Folder("layer_stable"), {"angry", "happy", "sad"}, 99);
  ASSERT_TRUE(same.ok());
  EXPECT_TRUE(torch::equal(same->model->classifier->weight, original->model->classifier->weight));
}

}  // namespace
}  // namespace ftune::model
