// Learning rate per optimizer step: linear warmup from 0, then linear decay to 0, half-cosine
// decay to 0, or constant — the curves of transformers' get_*_schedule_with_warmup.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "worker/train/trainer_config.h"

namespace ftune::train {

class LrSchedule {
 public:
  static absl::StatusOr<LrSchedule> Create(ScheduleKind kind, double peak_lr,
                                           int64_t warmup_steps, int64_t total_steps);

  // Learning rate used by optimizer step `step` (0-based: the first update uses LrAt(0)).
  double LrAt(int64_t step) const;
  // LrAt(step) / peak.
  double Factor(int64_t step) const;

  int64_t total_steps() const { return total_steps_; }
  int64_t warmup_steps() const { return warmup_steps_; }

 private:
  LrSchedule(ScheduleKind kind, double peak_lr, int64_t warmup_steps, int64_t total_steps)
      : kind_(kind), peak_lr_(peak_lr), warmup_steps_(warmup_steps), total_steps_(total_steps) {}

  ScheduleKind kind_;
  double peak_lr_;
  int64_t warmup_steps_;
  int64_t total_steps_;
};

}  // namespace ftune::train
