#include "worker/model/preprocess.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace ftune::model {

torch::Tensor NormalizeWaveform(const torch::Tensor& samples) {
  torch::Tensor x = samples.to(torch::kFloat);
  torch::Tensor mean = x.mean();
  torch::Tensor var = x.var(/*unbiased=*/false);
  return (x - mean) / torch::sqrt(var + 1e-7);
}

ModelInput MakeModelInput(const std::vector<torch::Tensor>& waveforms, const PreprocessorConfig& config) {
  int64_t max_len = 0;
  for (const auto& w : waveforms) max_len = std::max<int64_t>(max_len, w.numel());
  ModelInput input;
  input.input_values = torch::full({static_cast<int64_t>(waveforms.size()), max_len}, config.padding_value);
  std::vector<int64_t> lengths;
  for (size_t i = 0; i < waveforms.size(); ++i) {
    torch::Tensor w = waveforms[i].reshape({-1}).to(torch::kFloat);
    if (config.do_normalize && w.numel() > 0) w = NormalizeWaveform(w);
    input.input_values[static_cast<int64_t>(i)].slice(0, 0, w.numel()).copy_(w);
    lengths.push_back(w.numel());
  }
  if (config.return_attention_mask) input.lengths = torch::tensor(lengths, torch::kLong);
  return input;
}

absl::StatusOr<torch::Tensor> ForwardLogits(HubertForSequenceClassification& model, const ModelInput& input) {
  try {
    torch::NoGradGuard no_grad;
    return model->forward(input.input_values, input.lengths);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("model forward: ", e.what_without_backtrace()));
  }
}

}  // namespace ftune::model
