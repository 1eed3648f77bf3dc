// Unpredictable identifiers (lease ids, job ids) from the kernel's CSPRNG: a lease id is what
// lets a worker report for a job, so it must not be guessable from earlier ones.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace ftune {

// `prefix` followed by `hex_digits` random lower-case hex digits.
std::string RandomHexId(absl::string_view prefix, int hex_digits);

}  // namespace ftune
