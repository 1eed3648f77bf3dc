// What trainer tests share: a sink that records events, the tiny model (optionally without
// any randomness in training), a small fp32 config, and one training run with what it left.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "torch/torch.h"
#include "worker/model/checkpoint.h"
#include "worker/train/trainer.h"

namespace ftune::train::testing {

class RecordingSink : public EventSink {
 public:
  void Emit(ftune::v1::JobEvent event) override {
    if (on_event) on_event(event);
    events.push_back(std::move(event));
  }
  int Count(ftune::v1::JobEvent::PayloadCase kind) const {
    int n = 0;
    for (const auto& e : events) n += e.payload_case() == kind;
    return n;
  }
  std::function<void(const ftune::v1::JobEvent&)> on_event;
  std::vector<ftune::v1::JobEvent> events;
};

// The tiny preset; without regularisation when `deterministic` (for exact comparisons
// between runs that batch differently).
model::LoadedModel TinyModel(const std::vector<std::string>& labels, bool deterministic,
                             uint64_t seed = 7);

// One epoch, batch 4, lr 1e-3, fp32 on one CPU thread, progress every step, into `out`.
TrainerConfig BaseConfig(const std::string& out);

std::map<std::string, torch::Tensor> Weights(model::HubertForSequenceClassification& m);
// The gradients the last optimizer step used (they stay on the parameters until the next).
std::map<std::string, torch::Tensor> Gradients(model::HubertForSequenceClassification& m);
// Largest element-wise difference between two sets of named tensors (1e30 if names differ).
double MaxDiff(const std::map<std::string, torch::Tensor>& a,
               const std::map<std::string, torch::Tensor>& b);

struct RunOutput {
  absl::StatusOr<TrainResult> result;
  std::map<std::string, torch::Tensor> weights;
  std::map<std::string, torch::Tensor> gradients;
  std::vector<ftune::v1::JobEvent> events;
};

// Creates a trainer and runs it to its end; `on_event` sees each event with the run's token.
RunOutput Train(const TrainerConfig& config, model::LoadedModel model,
                const data::Dataset& dataset, const TrainerOptions& options = {},
                std::function<void(const ftune::v1::JobEvent&, CancelToken*)> on_event = nullptr,
                CancelToken* cancel = nullptr);

}  // namespace ftune::train::testing
