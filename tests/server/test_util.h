// Shared bits of the controller suites: a valid spec, a recording Watch consumer.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ftune/v1/job.pb.h"
#include "server/event_log.h"

namespace ftune::server::testing {

inline ftune::v1::JobSpec ValidSpec(const std::string& name = "job") {
  ftune::v1::JobSpec spec;
  spec.mutable_dataset()->set_path("/data/ravdess");
  spec.set_model("tiny");
  spec.set_output_dir("/out/" + name);
  spec.set_name(name);
  return spec;
}

// Drains whatever a Watch has ready, as a stream consumer with instant writes would.
struct Drained {
  std::vector<ftune::v1::JobEvent> events;
  bool done = false;
  absl::Status status;
};

inline void DrainInto(Watch& watch, Drained* out) {
  while (!out->done) {
    Watch::Next next = watch.Poll();
    if (next.kind == Watch::Kind::kWait) return;
    if (next.kind == Watch::Kind::kDone) {
      out->done = true;
      out->status = next.status;
      return;
    }
    out->events.push_back(next.event);
  }
}

}  // namespace ftune::server::testing
