// The model card (README.md) of a checkpoint folder, in the Hugging Face Hub's form: YAML front
// matter (library_name, pipeline_tag, base_model when known, tags, datasets, metrics and a
// model-index with the evaluation results), then the results, a per-class table, the confusion
// matrix, the training data, the hyperparameters and the evaluation history. best/README.md is
// the card of the best checkpoint, so best/ can be pushed to the Hub as it is.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ftune/v1/job.pb.h"
#include "nlohmann/json.hpp"

namespace ftune::train {

struct ModelCardInputs {
  std::string model_name;
  // A Hub model id the training started from (config.json's _name_or_path); "" when unknown
  // (a preset, or a local folder that names none).
  std::string base_model;
  // Where the weights came from, in words ("the tiny preset (random initialisation)", "the
  // checkpoint folder /data/x").
  std::string started_from;
  ftune::v1::DatasetSummary dataset;
  // The evaluation of this checkpoint; nullopt when it was saved without one.
  std::optional<ftune::v1::EvalResult> eval;
  int64_t step = 0;
  double epoch = 0;
  // Name and value, in order.
  std::vector<std::pair<std::string, std::string>> hyperparameters;
  // Hugging Face log_history entries up to this checkpoint: the evaluation history table.
  std::vector<nlohmann::json> log_history;
};

std::string RenderModelCard(const ModelCardInputs& inputs);

// Dataset names for the card's `datasets`: the corpus names of the named layouts (ravdess,
// crema-d, ...), the folder name otherwise; one per corpus.
std::vector<std::string> CardDatasetNames(const ftune::v1::DatasetSummary& summary);

}  // namespace ftune::train
