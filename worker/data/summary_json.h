// DatasetSummary as JSON: the object `ftworker inspect --json` prints. Free of libtorch.
#pragma once

#include "ftune/v1/job.pb.h"
#include "nlohmann/json.hpp"

namespace ftune::data {

// Keys: path, layout, split, total_files, usable_files, skipped [{path, reason}], labels,
// classes {label: n}, speakers {speaker: n}, splits {train: [speakers], eval: [speakers]},
// train_files, eval_files, train_classes, eval_classes, seconds {min, median, max, total},
// sample_rates {"16000": n}, channels {"1": n}; for a multi-corpus dataset also corpora [each
// corpus's own object, with its tag].
nlohmann::json SummaryToJson(const ftune::v1::DatasetSummary& summary);

}  // namespace ftune::data
