#include "worker/train/metrics.h"

#include <algorithm>

namespace ftune::train {

MetricsAccumulator::MetricsAccumulator(int num_labels)
    : num_labels_(std::max(0, num_labels)),
      confusion_(static_cast<size_t>(num_labels_) * num_labels_, 0) {}

void MetricsAccumulator::Add(int truth, int predicted) {
  if (truth < 0 || truth >= num_labels_ || predicted < 0 || predicted >= num_labels_) return;
  ++confusion_[static_cast<size_t>(truth) * num_labels_ + predicted];
}

ClassificationMetrics MetricsAccumulator::Compute() const {
  return MetricsFromConfusion(confusion_, num_labels_);
}

ClassificationMetrics MetricsFromConfusion(std::vector<uint32_t> confusion, int num_labels) {
  ClassificationMetrics m;
  const int n = std::max(0, num_labels);
  confusion.resize(static_cast<size_t>(n) * n, 0);
  m.confusion = std::move(confusion);
  m.per_class_recall.assign(n, 0.0);
  m.per_class_precision.assign(n, 0.0);
  m.per_class_f1.assign(n, 0.0);
  int64_t correct = 0;
  double f1_sum = 0;
  for (int c = 0; c < n; ++c) {
    int64_t tp = m.confusion[static_cast<size_t>(c) * n + c];
    int64_t actual = 0;
    int64_t predicted = 0;
    for (int k = 0; k < n; ++k) {
      actual += m.confusion[static_cast<size_t>(c) * n + k];
      predicted += m.confusion[static_cast<size_t>(k) * n + c];
    }
    m.num_samples += actual;
    correct += tp;
    const double recall = actual > 0 ? static_cast<double>(tp) / actual : 0.0;
    const double precision = predicted > 0 ? static_cast<double>(tp) / predicted : 0.0;
    m.per_class_recall[c] = recall;
    m.per_class_precision[c] = precision;
    m.per_class_f1[c] =
        (precision + recall) > 0 ? 2 * precision * recall / (precision + recall) : 0.0;
    f1_sum += m.per_class_f1[c];
  }
  m.accuracy = m.num_samples > 0 ? static_cast<double>(correct) / m.num_samples : 0.0;
  m.macro_f1 = n > 0 ? f1_sum / n : 0.0;
  return m;
}

ClassificationMetrics ComputeMetrics(const std::vector<int>& truth,
                                     const std::vector<int>& predicted, int num_labels) {
  MetricsAccumulator acc(num_labels);
  const size_t count = std::min(truth.size(), predicted.size());
  for (size_t i = 0; i < count; ++i) acc.Add(truth[i], predicted[i]);
  return acc.Compute();
}

}  // namespace ftune::train
