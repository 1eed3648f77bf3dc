// Datasets: finds the clips of one or more corpora (layouts.h: RAVDESS, CREMA-D, TESS, SAVEE,
// EmoDB, Hugging Face audiofolder, one folder per class, or a CSV manifest), maps their labels
// onto one set, validates every file by decoding it, splits train/eval per corpus and
// summarises what it found.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ftune/v1/job.pb.h"
#include "worker/data/audio_cache.h"
#include "worker/data/corpus_names.h"
#include "worker/data/layouts.h"

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

// The fewest 16 kHz samples that give one frame of HuBERT's convolutional feature encoder
// (its receptive field, 25 ms); every HuBERT and wav2vec 2.0 configuration shares it. Shorter
// clips are skipped at scan time, with the reason.
inline constexpr int64_t kMinClipSamples = 400;

// What to read: one corpus, or several trained on together.
struct DatasetRequest {
  std::vector<ftune::v1::DatasetSpec> corpora;  // at least one
  // Corpus label -> job label, applied before `labels`; every key must be a label of some
  // corpus (a key that matches nothing is a typo, and an error).
  std::map<std::string, std::string> label_map;
  // Non-empty: the label set and order; clips with other labels are skipped with a reason.
  // Empty: the labels found, in the first corpus's order, then each further corpus's new ones.
  std::vector<std::string> labels;
  uint64_t seed = 42;  // of the splits
  // Folders every file read must lie in, after resolving links (a worker's --allowed-root);
  // empty = anywhere. Files elsewhere are skipped as "outside the allowed roots", nothing more.
  std::vector<std::string> allowed_roots;
};

// A job's dataset, extra_datasets, label_map and labels, with the split seed.
DatasetRequest DatasetRequestFor(const ftune::v1::JobSpec& spec, uint64_t seed);

// Scans each corpus per its layout and split, decodes every candidate file once (through
// `cache`, which then holds the audio for the loaders; nullptr = a private bounded cache) with
// `threads` decoding threads (0 = all cores), and splits each corpus on its own (so speakers of
// one corpus never meet those of another: with several corpora speakers are named
// "<tag>/<speaker>"), then joins them. Fails only when a corpus cannot be read at all (path
// missing, layout undetectable, bad options or label map); problems with the content are left to
// ValidateDataset so that `ftworker inspect` can show them alongside the summary.
absl::StatusOr<Dataset> ScanDataset(const DatasetRequest& request, AudioCache* cache, int threads);
// One corpus.
absl::StatusOr<Dataset> ScanDataset(const ftune::v1::DatasetSpec& spec,
                                    const std::vector<std::string>& labels, uint64_t seed,
                                    AudioCache* cache, int threads);

// FailedPrecondition naming the problem: no usable audio, a class with no usable audio, a class
// absent from the training split.
absl::Status ValidateDataset(const Dataset& dataset);

// ScanDataset then ValidateDataset. A layout's own label order is its code order for the named
// corpora (RAVDESS, CREMA-D, TESS, SAVEE, EmoDB) and by name for folders, manifests and
// audiofolder.
absl::StatusOr<Dataset> LoadDataset(const DatasetRequest& request, AudioCache* cache, int threads);
absl::StatusOr<Dataset> LoadDataset(const ftune::v1::DatasetSpec& spec,
                                    const std::vector<std::string>& labels, uint64_t seed,
                                    AudioCache* cache, int threads);

// Lower-case names used in DatasetSummary.split (LayoutName in layouts.h).
std::string SplitName(ftune::v1::SplitStrategy split);

}  // namespace ftune::data
