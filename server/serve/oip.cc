#include "server/serve/oip.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "worker/data/audio.h"

namespace ftune::serve {

std::vector<OipTensorSpec> OipInputs(const ServedModel&) {
  return {{kOipWaveform, "FP32", {-1, -1}}};
}

std::vector<OipTensorSpec> OipOutputs(const ServedModel& model) {
  return {{kOipProbabilities, "FP32", {-1, model.loaded.config.num_labels()}},
          {kOipLabel, "BYTES", {-1}}};
}

std::string SerializeBytesTensor(const std::vector<std::string>& elements) {
  std::string out;
  for (const std::string& element : elements) {
    const uint32_t length = static_cast<uint32_t>(element.size());
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((length >> (8 * i)) & 0xff));
    out += element;
  }
  return out;
}

absl::StatusOr<std::shared_ptr<const ServedModel>> FindOipModel(const InferenceEngine& engine,
                                                                const std::string& model,
                                                                const std::string& version) {
  if (model.empty()) return absl::NotFoundError("no model named in the path");
  ASSIGN_OR_RETURN(std::shared_ptr<const ServedModel> current, engine.Current(model));
  if (!version.empty() && version != std::to_string(current->version)) {
    return absl::NotFoundError(absl::StrCat("model '", current->id, "' has no version ", version,
                                            "; version ", current->version, " is serving"));
  }
  return current;
}

namespace {

// A checked request: its model and its rows, ready for the batcher.
struct PreparedInfer {
  std::shared_ptr<const ServedModel> model;
  std::vector<std::vector<float>> clips;
  bool probabilities_requested = true;
  bool label_requested = true;
};

absl::StatusOr<PreparedInfer> PrepareInfer(const InferenceEngine& engine,
                                           const OipInferRequest& request,
                                           const ServiceLimits& limits) {
  PreparedInfer prepared;
  ASSIGN_OR_RETURN(prepared.model, FindOipModel(engine, request.model, request.version));
  if (request.input_name != kOipWaveform) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", request.input_name, "': the model takes one input, '", kOipWaveform, "'"));
  }
  if (request.datatype != "FP32") {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'waveform' has datatype '", request.datatype, "'; it must be FP32"));
  }
  const std::vector<int64_t>& shape = request.shape;
  if (shape.empty() || shape.size() > 2 ||
      std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 1; })) {
    return absl::InvalidArgumentError(absl::StrCat("input 'waveform' has shape [",
                                                   absl::StrJoin(shape, ","),
                                                   "]; it must be [N] or [B, N] with B, N >= 1"));
  }
  const int64_t rows = shape.size() == 2 ? shape[0] : 1;
  const int64_t columns = shape.back();
  if (static_cast<int64_t>(request.data.size()) != rows * columns) {
    return absl::InvalidArgumentError(absl::StrCat("input 'waveform' holds ", request.data.size(),
                                                   " values; shape [", absl::StrJoin(shape, ","),
                                                   "] needs ", rows * columns));
  }
  if (!request.lengths.empty() && static_cast<int64_t>(request.lengths.size()) != rows) {
    return absl::InvalidArgumentError(absl::StrCat("parameters.lengths has ",
                                                   request.lengths.size(),
                                                   " values; the batch has ", rows, " rows"));
  }
  if (!request.outputs.empty()) {
    prepared.probabilities_requested = false;
    prepared.label_requested = false;
    for (const std::string& name : request.outputs) {
      if (name == kOipProbabilities) {
        prepared.probabilities_requested = true;
      } else if (name == kOipLabel) {
        prepared.label_requested = true;
      } else {
        return absl::InvalidArgumentError(absl::StrCat("output '", name, "' does not exist; the ",
                                                       "outputs are probabilities and label"));
      }
    }
  }
  const double rate = request.sample_rate.value_or(data::kSampleRate);
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t length = request.lengths.empty() ? columns : request.lengths[row];
    if (length < 1 || length > columns) {
      return absl::InvalidArgumentError(absl::StrCat("parameters.lengths[", row, "] is ", length,
                                                     "; it must be in 1..", columns));
    }
    ASSIGN_OR_RETURN(
        std::vector<float> clip,
        PreparePcm(request.data.data() + row * columns, static_cast<size_t>(length), rate, limits,
                   absl::StrCat("waveform row ", row), "parameters.sample_rate"));
    prepared.clips.push_back(std::move(clip));
  }
  return prepared;
}

absl::StatusOr<OipInferResult> Assemble(const std::string& model_id, bool probabilities_requested,
                                        bool label_requested, std::vector<Classification> answers) {
  OipInferResult result;
  result.rows = static_cast<int64_t>(answers.size());
  result.model = answers.front().model;
  result.probabilities_requested = probabilities_requested;
  result.label_requested = label_requested;
  for (const Classification& answer : answers) {
    if (answer.model != result.model) {
      // Rows answered by two versions could disagree even on the labels.
      return absl::UnavailableError(
          absl::StrCat("model '", model_id, "' was reloaded during the request; send it again"));
    }
    result.probabilities.insert(result.probabilities.end(), answer.probabilities.begin(),
                                answer.probabilities.end());
    result.labels.push_back(
        answer.model->loaded.config.id2label[RankLabels(answer.probabilities).front()]);
  }
  return result;
}

}  // namespace

void RunOipInferAsync(InferenceEngine& engine, const OipInferRequest& request,
                      const ServiceLimits& limits, absl::Time deadline,
                      std::function<void(absl::StatusOr<OipInferResult>)> done) {
  absl::StatusOr<PreparedInfer> prepared = PrepareInfer(engine, request, limits);
  if (!prepared.ok()) {
    done(prepared.status());
    return;
  }
  const std::string model_id = prepared->model->id;
  ClassifyAllAsync(engine, model_id, std::move(prepared->clips), deadline,
                   [model_id, probabilities = prepared->probabilities_requested,
                    label = prepared->label_requested,
                    done = std::move(done)](absl::StatusOr<std::vector<Classification>> answers) {
                     if (!answers.ok()) {
                       done(answers.status());
                       return;
                     }
                     done(Assemble(model_id, probabilities, label, *std::move(answers)));
                   });
}

absl::StatusOr<OipInferResult> RunOipInfer(InferenceEngine& engine, const OipInferRequest& request,
                                           const ServiceLimits& limits, absl::Time deadline) {
  return AwaitCallback<absl::StatusOr<OipInferResult>>(
      [&](auto done) { RunOipInferAsync(engine, request, limits, deadline, std::move(done)); });
}

}  // namespace ftune::serve
