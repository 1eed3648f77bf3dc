// Where a running job's events go. The trainer only emits; the local `ftworker train` prints
// them, the daemon batches them to the controller. The sink fills in time; the controller
// assigns seq.
#pragma once

#include "ftune/v1/job.pb.h"

namespace ftune::train {

class EventSink {
 public:
  virtual ~EventSink() = default;
  // Called from the training thread; must not block on the network.
  virtual void Emit(ftune::v1::JobEvent event) = 0;
};

}  // namespace ftune::train
