// Datasets: finds the clips of a folder (RAVDESS, one folder per class, or a CSV manifest),
// validates every file by decoding it, splits train/eval and summarises what it found.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ftune/v1/job.pb.h"
#include "worker/data/audio_cache.h"

namespace ftune::data {

struct Clip {
  std::string path;
  int label = -1;
  std::string speaker;  // empty when unknown
  double seconds = 0;   // decoded duration at 16 kHz
};

struct Dataset {
  std::vector<std::string> labels;  // id -> label, stable order
  std::vector<Clip> train, eval;    // each sorted by path
  ftune::v1::DatasetSummary summary;
};

// RAVDESS emotions by code 01..08.
const std::vector<std::string>& RavdessEmotions();

// The seven fields of a RAVDESS file name MM-VV-EE-II-SS-RR-AA.wav.
struct RavdessName {
  int modality = 0;       // 01 audio-video, 02 video-only, 03 audio-only
  int vocal_channel = 0;  // 01 speech, 02 song
  int emotion = 0;        // 01..08, see RavdessEmotions()
  int intensity = 0;      // 01 normal, 02 strong
  int statement = 0;      // 01, 02
  int repetition = 0;     // 01, 02
  int actor = 0;          // 01..99
};
// Parses a file name (no folder); InvalidArgument saying which field is wrong.
absl::StatusOr<RavdessName> ParseRavdessName(const std::string& file_name);

// Scans spec.path per spec.layout/split, decodes every candidate file once (through `cache`,
// which then holds the audio for the loaders; nullptr = a private bounded cache) with
// `threads` decoding threads (0 = all cores), and splits. Fails only when the dataset cannot be read at
// all (path missing, layout undetectable, bad options); problems with its content are left to
// ValidateDataset so that `ftworker inspect` can show them alongside the summary.
absl::StatusOr<Dataset> ScanDataset(const ftune::v1::DatasetSpec& spec,
                                    const std::vector<std::string>& labels, uint64_t seed,
                                    AudioCache* cache, int threads);

// FailedPrecondition naming the problem: no usable audio, a class with no usable audio, a class
// absent from the training split.
absl::Status ValidateDataset(const Dataset& dataset);

// ScanDataset then ValidateDataset. `labels` non-empty fixes the label set and order (files with
// other labels are skipped with a reason); otherwise the labels found, in the layout's order
// (RAVDESS emotion codes; folder and manifest labels sorted by name).
absl::StatusOr<Dataset> LoadDataset(const ftune::v1::DatasetSpec& spec,
                                    const std::vector<std::string>& labels, uint64_t seed,
                                    AudioCache* cache, int threads);

// Lower-case names used in DatasetSummary.layout / .split.
std::string LayoutName(ftune::v1::DatasetLayout layout);
std::string SplitName(ftune::v1::SplitStrategy split);

}  // namespace ftune::data
