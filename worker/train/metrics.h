// Classification metrics over one evaluation pass.
#pragma once

#include <cstdint>
#include <vector>

namespace ftune::train {

struct ClassificationMetrics {
  int64_t num_samples = 0;
  double accuracy = 0;
  // Unweighted mean over classes of F1 (a class with no true and no predicted sample scores 0,
  // as scikit-learn's zero_division=0).
  double macro_f1 = 0;
  std::vector<double> per_class_recall;
  std::vector<double> per_class_precision;  // 0 for a class never predicted
  std::vector<double> per_class_f1;
  // Row-major num_labels x num_labels; row = true label, column = predicted label.
  std::vector<uint32_t> confusion;
};

// Accumulates (truth, prediction) pairs; labels outside [0, num_labels) are ignored.
class MetricsAccumulator {
 public:
  explicit MetricsAccumulator(int num_labels);
  void Add(int truth, int predicted);
  ClassificationMetrics Compute() const;

 private:
  int num_labels_;
  std::vector<uint32_t> confusion_;
};

// The metrics of a row-major num_labels x num_labels confusion matrix (row = true label).
ClassificationMetrics MetricsFromConfusion(std::vector<uint32_t> confusion, int num_labels);

ClassificationMetrics ComputeMetrics(const std::vector<int>& truth,
                                     const std::vector<int>& predicted, int num_labels);

}  // namespace ftune::train
