#include "tests/train/trainer_harness.h"

#include <algorithm>

#include "gtest/gtest.h"
#include "worker/data/audio_cache.h"

namespace ftune::train::testing {

model::LoadedModel TinyModel(const std::vector<std::string>& labels, bool deterministic,
                             uint64_t seed) {
  if (!deterministic) {
    auto loaded = model::LoadModel("tiny", labels, seed);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return *std::move(loaded);
  }
  model::HubertConfig c = *model::PresetConfig("tiny");
  c.id2label = labels;
  c.hidden_dropout = c.activation_dropout = c.attention_dropout = c.feat_proj_dropout = 0;
  c.layerdrop = 0;
  c.mask_time_prob = 0;
  c.mask_feature_prob = 0;
  torch::manual_seed(seed);
  model::LoadedModel loaded;
  loaded.config = c;
  loaded.model = model::HubertForSequenceClassification(c);
  loaded.model->init_weights();
  loaded.preprocessor = model::DefaultPreprocessorFor(c);
  return loaded;
}

TrainerConfig BaseConfig(const std::string& out) {
  TrainerConfig c;
  c.epochs = 1;
  c.batch_size = 4;
  c.learning_rate = 1e-3;
  c.precision = RequestedPrecision::kFp32;
  c.device = "cpu";
  c.threads = 1;
  c.loader_threads = 1;
  c.log_every_steps = 1;
  c.output_dir = out;
  return c;
}

std::map<std::string, torch::Tensor> Weights(model::HubertForSequenceClassification& m) {
  std::map<std::string, torch::Tensor> w;
  for (const auto& p : m->named_parameters()) w[p.key()] = p.value().detach().cpu().clone();
  return w;
}

std::map<std::string, torch::Tensor> Gradients(model::HubertForSequenceClassification& m) {
  std::map<std::string, torch::Tensor> g;
  for (const auto& p : m->named_parameters()) {
    if (p.value().grad().defined()) g[p.key()] = p.value().grad().cpu().clone();
  }
  return g;
}

double MaxDiff(const std::map<std::string, torch::Tensor>& a,
               const std::map<std::string, torch::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    if (it == b.end()) return 1e30;
    worst = std::max(worst, (t - it->second).abs().max().item<double>());
  }
  return worst;
}

RunOutput Train(const TrainerConfig& config, model::LoadedModel model,
                const data::Dataset& dataset, const TrainerOptions& options,
                std::function<void(const ftune::v1::JobEvent&, CancelToken*)> on_event,
                CancelToken* cancel) {
  data::AudioCache audio;
  RecordingSink sink;
  CancelToken own_cancel;
  if (cancel == nullptr) cancel = &own_cancel;
  if (on_event) sink.on_event = [&](const ftune::v1::JobEvent& e) { on_event(e, cancel); };
  RunOutput run;
  auto trainer =
      Trainer::Create(config, std::move(model), dataset, &audio, &sink, cancel, options);
  if (!trainer.ok()) {
    run.result = trainer.status();
    return run;
  }
  run.result = (*trainer)->Run();
  run.weights = Weights((*trainer)->model());
  run.gradients = Gradients((*trainer)->model());
  run.events = sink.events;
  return run;
}

}  // namespace ftune::train::testing
