// TensorBoard event files read back by tests/train/read_tfevents.py, a reader that shares no
// code with ftune's writer (its own CRC-32C and protobuf decoding).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace ftune::train::testing {

// The reader's JSON for a run folder: files, file_versions, scalars {tag: [[step, value,
// wall_time]]}, texts {tag: [[step, text]]}, session_logs [[step, status]]. Adds a test failure
// and returns null when the reader fails (a bad CRC, a record that does not decode).
nlohmann::json ReadTensorBoardRun(const std::string& run_dir);

// The steps of one scalar tag, in file order.
std::vector<int64_t> TagSteps(const nlohmann::json& run, const std::string& tag);

}  // namespace ftune::train::testing
