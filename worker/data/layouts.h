// Dataset layouts: how one corpus's files become candidate clips (path, label, speaker, split)
// before any audio is decoded, and which files are skipped and why. Used by dataset.cc; no
// decoding, no splitting, no libtorch.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ftune/v1/job.pb.h"

namespace ftune::data {

// A file that may become a clip, before decoding.
struct Candidate {
  std::string path;     // as opened
  std::string display;  // as reported (relative to the dataset folder)
  std::string label;
  std::string speaker;  // "" when the layout has none
  std::string split;    // "train", "eval" or "" (the dataset declares none)
};

struct CorpusScan {
  ftune::v1::DatasetLayout layout = ftune::v1::DATASET_LAYOUT_AUTO;  // after detection
  std::vector<Candidate> candidates;
  std::vector<ftune::v1::SkippedFile> skipped;
  // Labels in the layout's order (every label seen, usable or not).
  std::vector<std::string> labels;
  // The layout can declare splits (a manifest split column, audiofolder split folders).
  bool has_split_column = false;

  void Skip(std::string path, std::string reason) {
    ftune::v1::SkippedFile* s = &skipped.emplace_back();
    s->set_path(std::move(path));
    s->set_reason(std::move(reason));
  }
};

// The layout of `path` by the rules of DATASET_LAYOUT_AUTO (see job.proto), or
// FailedPrecondition saying what was looked for.
absl::StatusOr<ftune::v1::DatasetLayout> DetectLayout(const std::string& path);

// Detects spec.layout() when it is AUTO, then lists the corpus's candidates. Fails only when
// the corpus cannot be read at all (no such layout there, unreadable manifest); bad files are
// skipped with their reasons.
// `allowed` (when set) is asked about each file a manifest row names, resolved, before anything
// else: a refused row is skipped as "outside the allowed roots" and is never looked at, so the
// reason tells nothing of what lies outside.
using PathFilter = std::function<bool(const std::string& path)>;
absl::StatusOr<CorpusScan> ScanLayout(const ftune::v1::DatasetSpec& spec,
                                      const PathFilter& allowed = {});

// The skip reason of a file outside the worker's allowed roots.
inline constexpr char kOutsideRoots[] = "outside the allowed roots";

// Lower-case layout names as typed and shown: ravdess, folders, manifest, audiofolder, crema-d,
// tess, savee, emodb ("auto" for AUTO).
std::string LayoutName(ftune::v1::DatasetLayout layout);

}  // namespace ftune::data
