#include "worker/train/evaluation.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace ftune::train {

absl::StatusOr<EvaluationPass> Evaluate(const EvaluationInputs& in) {
  data::BatchLoader loader(*in.clips, in.cache, in.loader);
  MetricsAccumulator metrics(in.num_labels);
  double loss_sum = 0;
  torch::NoGradGuard no_grad;
  while (true) {
    if (in.stop && in.stop()) return EvaluationPass{.interrupted = true};
    ASSIGN_OR_RETURN(std::optional<data::Batch> batch, loader.Next());
    if (!batch) break;
    torch::Tensor logits;
    try {
      logits = in.logits(*batch);
    } catch (const c10::Error& e) {
      return ClipError("evaluating", *batch, *in.clips, e);
    }
    torch::Tensor truth = batch->labels.to(logits.device());
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, truth,
                    torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    torch::Tensor predicted = logits.argmax(1).cpu();
    const torch::Tensor labels = batch->labels.cpu();
    for (int64_t i = 0; i < labels.size(0); ++i) {
      metrics.Add(static_cast<int>(labels[i].item<int64_t>()),
                  static_cast<int>(predicted[i].item<int64_t>()));
    }
  }
  EvaluationPass pass;
  pass.metrics = metrics.Compute();
  if (in.collective != nullptr) {
    std::vector<double> counts = {loss_sum};
    counts.insert(counts.end(), pass.metrics.confusion.begin(), pass.metrics.confusion.end());
    torch::Tensor t = torch::tensor(counts, torch::kDouble);
    in.collective->AllReduceSum(t);
    const double* v = t.data_ptr<double>();
    loss_sum = v[0];
    std::vector<uint32_t> confusion(pass.metrics.confusion.size());
    for (size_t i = 0; i < confusion.size(); ++i) {
      confusion[i] = static_cast<uint32_t>(std::llround(v[i + 1]));
    }
    pass.metrics = MetricsFromConfusion(std::move(confusion), in.num_labels);
  }
  pass.loss = pass.metrics.num_samples > 0 ? loss_sum / pass.metrics.num_samples : 0.0;
  return pass;
}

absl::Status ClipError(const char* doing, const data::Batch& batch,
                       const std::vector<data::Clip>& clips, const c10::Error& e) {
  std::string names;
  for (int64_t i : batch.clip_indices) {
    if (i < 0 || i >= static_cast<int64_t>(clips.size())) continue;
    absl::StrAppend(&names, names.empty() ? "" : ", ", clips[i].path);
  }
  const std::string message = absl::StrCat(doing, " on ", names, ": ", e.what_without_backtrace());
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) {
    return absl::ResourceExhaustedError(message);
  }
  return absl::InvalidArgumentError(message);
}

}  // namespace ftune::train
