#include "worker/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace ftune::train {

absl::StatusOr<LrSchedule> LrSchedule::Create(ScheduleKind kind, double peak_lr,
                                              int64_t warmup_steps, int64_t total_steps) {
  if (!(peak_lr > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("learning rate must be > 0, got ", peak_lr));
  }
  if (warmup_steps < 0 || total_steps < 0) {
    return absl::InvalidArgumentError(absl::StrCat("schedule steps must be >= 0, got warmup ",
                                                   warmup_steps, " total ", total_steps));
  }
  return LrSchedule(kind, peak_lr, warmup_steps, total_steps);
}

double LrSchedule::Factor(int64_t step) const {
  const double s = static_cast<double>(step);
  if (step < warmup_steps_) {
    return s / static_cast<double>(std::max<int64_t>(1, warmup_steps_));
  }
  const double decay_len = static_cast<double>(std::max<int64_t>(1, total_steps_ - warmup_steps_));
  const double progress = (s - static_cast<double>(warmup_steps_)) / decay_len;
  switch (kind_) {
    case ScheduleKind::kLinear:
      return std::max(0.0, static_cast<double>(total_steps_ - step) / decay_len);
    case ScheduleKind::kCosine:
      return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
    case ScheduleKind::kConstant:
      return 1.0;
  }
  return 1.0;
}

double LrSchedule::LrAt(int64_t step) const { return peak_lr_ * Factor(step); }

}  // namespace ftune::train
