#include "worker/data/dataset.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/path_roots.h"
#include "common/status_macros.h"
#include "worker/data/random.h"

namespace ftune::data {
namespace {

namespace fs = std::filesystem;
using ftune::v1::DatasetLayout;
using ftune::v1::DatasetSpec;
using ftune::v1::SplitStrategy;

constexpr double kDefaultEvalFraction = 0.2;
// Random candidate speaker sets tried when choosing the evaluation speakers.
constexpr int kSpeakerSplitTrials = 512;

// Decodes every candidate once, with `threads` threads; index-aligned results.
struct Decoded {
  absl::Status status;
  AudioInfo info;
  int64_t samples = 0;
};

std::vector<Decoded> DecodeAll(const std::vector<Candidate>& candidates, AudioCache* cache,
                               int threads) {
  std::vector<Decoded> out(candidates.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < candidates.size(); i = next++) {
      auto audio = cache->Get(candidates[i].path, &out[i].info);
      if (audio.ok()) {
        out[i].samples = int64_t((*audio)->size());
      } else {
        out[i].status = audio.status();
      }
    }
  };
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  threads = int(std::min<size_t>(threads, std::max<size_t>(1, candidates.size())));
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  return out;
}

// "PATH: reason" from the decoder becomes "reason".
std::string Reason(const absl::Status& status, const std::string& path) {
  std::string msg(status.message());
  const std::string prefix = path + ": ";
  if (msg.rfind(prefix, 0) == 0) msg = msg.substr(prefix.size());
  return msg;
}

struct SplitChoice {
  std::vector<int> eval_clips;  // indices into the usable clips
  std::set<std::string> eval_speakers;
};

// Whole speakers held out: tries many seeded candidate sets and keeps the one whose class mix
// is closest to eval_fraction of every class, never leaving a class out of training.
SplitChoice SpeakerSplit(const std::vector<Clip>& clips, int num_labels, double fraction,
                         uint64_t seed) {
  std::map<std::string, std::vector<int>> by_speaker;
  std::vector<int> class_total(num_labels, 0);
  for (size_t i = 0; i < clips.size(); ++i) {
    by_speaker[clips[i].speaker].push_back(int(i));
    ++class_total[clips[i].label];
  }
  std::vector<std::string> speakers;
  for (const auto& [s, _] : by_speaker) speakers.push_back(s);
  const int n = int(speakers.size());
  int n_eval = int(std::lround(fraction * n));
  if (fraction > 0) n_eval = std::max(n_eval, 1);
  n_eval = std::min(n_eval, n - 1);
  SplitChoice best;
  if (n_eval <= 0) return best;
  double best_score = 0;
  Rng rng(DeriveSeed(seed, 0x5350454bULL));
  for (int trial = 0; trial < kSpeakerSplitTrials; ++trial) {
    std::vector<std::string> order = speakers;
    Shuffle(order, rng);
    std::vector<int> eval_count(num_labels, 0);
    int eval_clips = 0;
    for (int k = 0; k < n_eval; ++k) {
      for (int i : by_speaker[order[k]]) {
        ++eval_count[clips[i].label];
        ++eval_clips;
      }
    }
    double score = std::abs(double(eval_clips) / clips.size() - fraction);
    for (int c = 0; c < num_labels; ++c) {
      if (class_total[c] == 0) continue;
      if (eval_count[c] == class_total[c]) score += 1000;  // class missing from training
      if (eval_count[c] == 0) score += 10;                  // class missing from evaluation
      score += std::abs(double(eval_count[c]) / class_total[c] - fraction);
    }
    if (trial == 0 || score < best_score) {
      best_score = score;
      best.eval_speakers = std::set<std::string>(order.begin(), order.begin() + n_eval);
    }
  }
  for (size_t i = 0; i < clips.size(); ++i) {
    if (best.eval_speakers.count(clips[i].speaker)) best.eval_clips.push_back(int(i));
  }
  return best;
}

// Per class: a seeded shuffle, the first round(fraction * n) clips held out (at least one and
// never all when the class has two or more).
SplitChoice RandomSplit(const std::vector<Clip>& clips, int num_labels, double fraction,
                        uint64_t seed) {
  std::vector<std::vector<int>> by_class(num_labels);
  for (size_t i = 0; i < clips.size(); ++i) by_class[clips[i].label].push_back(int(i));
  SplitChoice choice;
  for (int c = 0; c < num_labels; ++c) {
    std::vector<int>& members = by_class[c];
    const int n = int(members.size());
    int k = 0;
    if (fraction > 0 && n >= 2) k = std::clamp(int(std::lround(fraction * n)), 1, n - 1);
    Rng rng(DeriveSeed(seed, 0x52414e44ULL, uint64_t(c)));
    Shuffle(members, rng);
    choice.eval_clips.insert(choice.eval_clips.end(), members.begin(), members.begin() + k);
  }
  std::sort(choice.eval_clips.begin(), choice.eval_clips.end());
  return choice;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

}  // namespace

std::string SplitName(SplitStrategy split) {
  switch (split) {
    case ftune::v1::SPLIT_STRATEGY_SPEAKER: return "speaker";
    case ftune::v1::SPLIT_STRATEGY_RANDOM: return "random";
    case ftune::v1::SPLIT_STRATEGY_MANIFEST: return "manifest";
    default: return "auto";
  }
}

namespace {

// A corpus after its layout was scanned, with everything its clips are built from.
struct ScannedCorpus {
  const DatasetSpec* spec;
  CorpusScan scan;
  double eval_fraction = kDefaultEvalFraction;
  std::string tag;  // "" for a single-corpus job
};

// "<tag>/<name>" in a multi-corpus job, `name` otherwise.
std::string Tagged(const std::string& tag, const std::string& name) {
  return tag.empty() ? name : absl::StrCat(tag, "/", name);
}

// A short name per corpus of a multi-corpus job: the layout for the named corpora, the folder's
// (or manifest's) name otherwise; repeats get "#2", "#3", ...
std::vector<std::string> CorpusTags(const std::vector<ScannedCorpus>& corpora) {
  std::vector<std::string> tags;
  std::map<std::string, int> seen;
  for (const ScannedCorpus& c : corpora) {
    std::string tag;
    switch (c.scan.layout) {
      case ftune::v1::DATASET_LAYOUT_FOLDERS:
      case ftune::v1::DATASET_LAYOUT_MANIFEST:
      case ftune::v1::DATASET_LAYOUT_AUDIOFOLDER: {
        const fs::path path = fs::path(c.spec->path()).lexically_normal();
        tag = (path.has_filename() ? path : path.parent_path()).stem().string();
        break;
      }
      default:
        tag = LayoutName(c.scan.layout);
    }
    const int n = ++seen[tag];
    tags.push_back(n == 1 ? tag : absl::StrCat(tag, "#", n));
  }
  return tags;
}

absl::StatusOr<ScannedCorpus> ScanCorpus(const DatasetSpec& spec, const PathRoots& roots) {
  if (spec.path().empty()) return absl::InvalidArgumentError("dataset path is empty");
  if (!roots.Allows(spec.path())) {
    return absl::PermissionDeniedError(
        absl::StrCat("dataset path ", spec.path(), " is ", kOutsideRoots));
  }
  if (!fs::exists(spec.path())) {
    return absl::NotFoundError(absl::StrCat("dataset path ", spec.path(), " does not exist"));
  }
  ScannedCorpus corpus;
  corpus.spec = &spec;
  corpus.eval_fraction = spec.has_eval_fraction() ? spec.eval_fraction() : kDefaultEvalFraction;
  if (!(corpus.eval_fraction >= 0 && corpus.eval_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("eval_fraction ", corpus.eval_fraction, " is outside [0, 1)"));
  }
  PathFilter allowed;
  if (!roots.empty()) {
    allowed = [&roots](const std::string& path) { return roots.Allows(path); };
  }
  ASSIGN_OR_RETURN(corpus.scan, ScanLayout(spec, allowed));
  if (allowed) {
    // Files found in folders may be links that lead out of the roots.
    std::vector<Candidate> inside;
    for (Candidate& c : corpus.scan.candidates) {
      if (allowed(c.path)) {
        inside.push_back(std::move(c));
      } else {
        corpus.scan.Skip(c.display, kOutsideRoots);
      }
    }
    corpus.scan.candidates = std::move(inside);
  }
  if (spec.split() == ftune::v1::SPLIT_STRATEGY_MANIFEST && !corpus.scan.has_split_column &&
      corpus.scan.layout != ftune::v1::DATASET_LAYOUT_MANIFEST) {
    return absl::InvalidArgumentError(absl::StrCat(
        "split 'manifest' needs splits declared by the dataset (a manifest's split column or "
        "audiofolder's split folders), but ",
        spec.path(), " is read as ", LayoutName(corpus.scan.layout), " and declares none"));
  }
  return corpus;
}

// Renames labels per `label_map`; a key no corpus has is an error (a typo would otherwise be
// silently ignored).
absl::Status MapLabels(const std::map<std::string, std::string>& label_map,
                       std::vector<ScannedCorpus>* corpora) {
  std::set<std::string> found;
  for (const ScannedCorpus& c : *corpora) found.insert(c.scan.labels.begin(), c.scan.labels.end());
  for (const auto& [from, to] : label_map) {
    if (to.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("label_map: '", from, "' maps to an empty label"));
    }
    if (!found.count(from)) {
      return absl::InvalidArgumentError(
          absl::StrCat("label_map: '", from,
                       "' is not a label of any dataset (found: ", absl::StrJoin(found, ","), ")"));
    }
  }
  auto mapped = [&](const std::string& label) {
    auto it = label_map.find(label);
    return it == label_map.end() ? label : it->second;
  };
  for (ScannedCorpus& c : *corpora) {
    std::vector<std::string> labels;
    for (const std::string& label : c.scan.labels) {
      const std::string to = mapped(label);
      if (std::find(labels.begin(), labels.end(), to) == labels.end()) labels.push_back(to);
    }
    c.scan.labels = std::move(labels);
    for (Candidate& candidate : c.scan.candidates) candidate.label = mapped(candidate.label);
  }
  return absl::OkStatus();
}

// The first corpus's labels in its order, then each further corpus's new ones.
std::vector<std::string> JoinLabels(const std::vector<ScannedCorpus>& corpora) {
  std::vector<std::string> labels;
  for (const ScannedCorpus& c : corpora) {
    for (const std::string& label : c.scan.labels) {
      if (std::find(labels.begin(), labels.end(), label) == labels.end()) labels.push_back(label);
    }
  }
  return labels;
}

// The train/eval part of a summary, from the clips.
void SummariseSplit(Dataset* ds) {
  auto& summary = ds->summary;
  auto by_path = [](const Clip& a, const Clip& b) { return a.path < b.path; };
  std::sort(ds->train.begin(), ds->train.end(), by_path);
  std::sort(ds->eval.begin(), ds->eval.end(), by_path);
  summary.clear_train_classes();
  summary.clear_eval_classes();
  for (const auto& label : ds->labels) {
    (*summary.mutable_train_classes())[label] = 0;
    (*summary.mutable_eval_classes())[label] = 0;
  }
  std::set<std::string> train_speakers, eval_speakers;
  for (const Clip& c : ds->train) {
    ++(*summary.mutable_train_classes())[ds->labels[c.label]];
    if (!c.speaker.empty()) train_speakers.insert(c.speaker);
  }
  for (const Clip& c : ds->eval) {
    ++(*summary.mutable_eval_classes())[ds->labels[c.label]];
    if (!c.speaker.empty()) eval_speakers.insert(c.speaker);
  }
  summary.clear_train_speakers();
  summary.clear_eval_speakers();
  for (const auto& s : train_speakers) summary.add_train_speakers(s);
  for (const auto& s : eval_speakers) summary.add_eval_speakers(s);
  summary.set_train_files(uint32_t(ds->train.size()));
  summary.set_eval_files(uint32_t(ds->eval.size()));
}

// One corpus's clips: decoded, summarised and split on their own, with `labels` as the ids.
absl::StatusOr<Dataset> BuildCorpus(ScannedCorpus corpus, const std::vector<std::string>& labels,
                                    uint64_t seed, AudioCache* cache, int threads) {
  const DatasetSpec& spec = *corpus.spec;
  CorpusScan& scan = corpus.scan;
  const double fraction = corpus.eval_fraction;
  Dataset ds;
  ds.labels = labels;
  std::map<std::string, int> label_id;
  for (size_t i = 0; i < ds.labels.size(); ++i) label_id[ds.labels[i]] = int(i);
  auto& summary = ds.summary;
  summary.set_path(spec.path());
  summary.set_layout(LayoutName(scan.layout));
  summary.set_tag(corpus.tag);
  summary.set_total_files(uint32_t(scan.candidates.size() + scan.skipped.size()));
  for (const auto& label : ds.labels) {
    summary.add_labels(label);
    (*summary.mutable_classes())[label] = 0;
  }

  std::vector<Candidate> wanted;
  for (auto& c : scan.candidates) {
    if (label_id.count(c.label)) {
      wanted.push_back(std::move(c));
    } else {
      scan.Skip(c.display, absl::StrCat("label '", c.label, "' is not in the job's labels (",
                                        absl::StrJoin(ds.labels, ","), ")"));
    }
  }
  std::vector<Decoded> decoded = DecodeAll(wanted, cache, threads);
  std::vector<Clip> usable;
  std::vector<std::string> usable_split;
  std::vector<double> durations;
  for (size_t i = 0; i < wanted.size(); ++i) {
    if (!decoded[i].status.ok()) {
      scan.Skip(wanted[i].display, Reason(decoded[i].status, wanted[i].path));
      continue;
    }
    const Candidate& c = wanted[i];
    if (decoded[i].samples < kMinClipSamples) {
      scan.Skip(c.display, absl::StrFormat("too short: %.1f ms, the model needs at least %.0f ms "
                                           "for one frame",
                                           1000.0 * double(decoded[i].samples) / kSampleRate,
                                           1000.0 * double(kMinClipSamples) / kSampleRate));
      continue;
    }
    const std::string speaker = c.speaker.empty() ? "" : Tagged(corpus.tag, c.speaker);
    Clip clip{c.path, label_id[c.label], speaker, double(decoded[i].samples) / kSampleRate};
    usable.push_back(clip);
    usable_split.push_back(c.split);
    durations.push_back(clip.seconds);
    summary.set_total_seconds(summary.total_seconds() + clip.seconds);
    ++(*summary.mutable_classes())[c.label];
    if (!speaker.empty()) ++(*summary.mutable_speakers())[speaker];
    ++(*summary.mutable_sample_rates())[decoded[i].info.source_rate];
    ++(*summary.mutable_channels())[decoded[i].info.channels];
  }
  summary.set_usable_files(uint32_t(usable.size()));
  if (!durations.empty()) {
    summary.set_min_seconds(*std::min_element(durations.begin(), durations.end()));
    summary.set_max_seconds(*std::max_element(durations.begin(), durations.end()));
    summary.set_median_seconds(Median(durations));
  }
  std::sort(scan.skipped.begin(), scan.skipped.end(),
            [](const auto& a, const auto& b) { return a.path() < b.path(); });
  for (auto& s : scan.skipped) {
    s.set_path(Tagged(corpus.tag, s.path()));
    *summary.add_skipped() = std::move(s);
  }

  // Split.
  const bool all_have_split =
      scan.has_split_column && !usable.empty() &&
      std::all_of(usable_split.begin(), usable_split.end(), [](auto& s) { return !s.empty(); });
  std::set<std::string> speakers;
  bool all_have_speaker = true;
  for (const Clip& c : usable) {
    if (c.speaker.empty()) all_have_speaker = false;
    else speakers.insert(c.speaker);
  }
  SplitStrategy split = spec.split();
  if (split == ftune::v1::SPLIT_STRATEGY_AUTO) {
    if (all_have_split) split = ftune::v1::SPLIT_STRATEGY_MANIFEST;
    else if (all_have_speaker && speakers.size() >= 2) split = ftune::v1::SPLIT_STRATEGY_SPEAKER;
    else split = ftune::v1::SPLIT_STRATEGY_RANDOM;
  }
  if (split == ftune::v1::SPLIT_STRATEGY_SPEAKER && !usable.empty()) {
    if (!all_have_speaker) {
      return absl::InvalidArgumentError(
          absl::StrCat("a speaker split needs a speaker for every clip; some clips of ",
                       spec.path(), " have none"));
    }
    if (speakers.size() < 2 && fraction > 0) {
      return absl::InvalidArgumentError(absl::StrCat("a speaker split needs at least 2 speakers; ",
                                                     spec.path(), " has ", speakers.size()));
    }
  }
  summary.set_split(SplitName(split));
  std::vector<bool> is_eval(usable.size(), false);
  if (split == ftune::v1::SPLIT_STRATEGY_MANIFEST) {
    for (size_t i = 0; i < usable.size(); ++i) is_eval[i] = usable_split[i] == "eval";
  } else {
    SplitChoice choice = split == ftune::v1::SPLIT_STRATEGY_SPEAKER
                             ? SpeakerSplit(usable, int(ds.labels.size()), fraction, seed)
                             : RandomSplit(usable, int(ds.labels.size()), fraction, seed);
    for (int i : choice.eval_clips) is_eval[i] = true;
  }
  for (size_t i = 0; i < usable.size(); ++i) {
    (is_eval[i] ? ds.eval : ds.train).push_back(usable[i]);
  }
  SummariseSplit(&ds);
  return ds;
}

// `parts` joined into one dataset; the summary is their union, each part's own under corpora.
Dataset JoinCorpora(std::vector<Dataset> parts, const std::vector<std::string>& labels) {
  Dataset ds;
  ds.labels = labels;
  auto& summary = ds.summary;
  std::vector<std::string> paths, layouts, splits;
  std::vector<double> durations;
  for (Dataset& part : parts) {
    const auto& p = part.summary;
    paths.push_back(p.path());
    layouts.push_back(p.layout());
    if (std::find(splits.begin(), splits.end(), p.split()) == splits.end()) {
      splits.push_back(p.split());
    }
    summary.set_total_files(summary.total_files() + p.total_files());
    summary.set_usable_files(summary.usable_files() + p.usable_files());
    summary.set_total_seconds(summary.total_seconds() + p.total_seconds());
    for (const auto& s : p.skipped()) *summary.add_skipped() = s;
    for (const auto& [label, n] : p.classes()) (*summary.mutable_classes())[label] += n;
    for (const auto& [speaker, n] : p.speakers()) (*summary.mutable_speakers())[speaker] += n;
    for (const auto& [rate, n] : p.sample_rates()) (*summary.mutable_sample_rates())[rate] += n;
    for (const auto& [c, n] : p.channels()) (*summary.mutable_channels())[c] += n;
    for (std::vector<Clip>* clips : {&part.train, &part.eval}) {
      for (const Clip& c : *clips) durations.push_back(c.seconds);
    }
    ds.train.insert(ds.train.end(), part.train.begin(), part.train.end());
    ds.eval.insert(ds.eval.end(), part.eval.begin(), part.eval.end());
    *summary.add_corpora() = std::move(part.summary);
  }
  summary.set_path(absl::StrJoin(paths, " + "));
  summary.set_layout(absl::StrJoin(layouts, "+"));
  summary.set_split(absl::StrJoin(splits, "+"));
  for (const auto& label : labels) summary.add_labels(label);
  if (!durations.empty()) {
    summary.set_min_seconds(*std::min_element(durations.begin(), durations.end()));
    summary.set_max_seconds(*std::max_element(durations.begin(), durations.end()));
    summary.set_median_seconds(Median(durations));
  }
  SummariseSplit(&ds);
  return ds;
}

absl::StatusOr<Dataset> ScanDatasetImpl(const DatasetRequest& request, AudioCache* cache,
                                        int threads) {
  if (request.corpora.empty()) return absl::InvalidArgumentError("no dataset to read");
  std::set<std::string> unique_labels(request.labels.begin(), request.labels.end());
  if (unique_labels.size() != request.labels.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("labels repeat a name: ", absl::StrJoin(request.labels, ",")));
  }
  std::vector<ScannedCorpus> corpora;
  ASSIGN_OR_RETURN(const PathRoots roots, PathRoots::Create(request.allowed_roots));
  for (const DatasetSpec& spec : request.corpora) {
    ASSIGN_OR_RETURN(ScannedCorpus corpus, ScanCorpus(spec, roots));
    corpora.push_back(std::move(corpus));
  }
  if (corpora.size() > 1) {
    const std::vector<std::string> tags = CorpusTags(corpora);
    for (size_t i = 0; i < corpora.size(); ++i) corpora[i].tag = tags[i];
  }
  RETURN_IF_ERROR(MapLabels(request.label_map, &corpora));
  const std::vector<std::string> labels =
      request.labels.empty() ? JoinLabels(corpora) : request.labels;

  std::unique_ptr<AudioCache> own_cache;
  if (cache == nullptr) {
    own_cache = std::make_unique<AudioCache>(/*max_memory_bytes=*/64 << 20);
    cache = own_cache.get();
  }
  std::vector<Dataset> parts;
  for (ScannedCorpus& corpus : corpora) {
    ASSIGN_OR_RETURN(Dataset part,
                     BuildCorpus(std::move(corpus), labels, request.seed, cache, threads));
    parts.push_back(std::move(part));
  }
  if (parts.size() == 1) return std::move(parts[0]);
  return JoinCorpora(std::move(parts), labels);
}

}  // namespace

DatasetRequest DatasetRequestFor(const ftune::v1::JobSpec& spec, uint64_t seed) {
  DatasetRequest request;
  request.corpora.push_back(spec.dataset());
  request.corpora.insert(request.corpora.end(), spec.extra_datasets().begin(),
                         spec.extra_datasets().end());
  request.label_map.insert(spec.label_map().begin(), spec.label_map().end());
  request.labels.assign(spec.labels().begin(), spec.labels().end());
  request.seed = seed;
  return request;
}

absl::StatusOr<Dataset> ScanDataset(const DatasetRequest& request, AudioCache* cache, int threads) {
  // std::filesystem throws on what it cannot stat (e.g. a folder without permission).
  try {
    return ScanDatasetImpl(request, cache, threads);
  } catch (const fs::filesystem_error& e) {
    return absl::FailedPreconditionError(absl::StrCat("cannot read dataset: ", e.what()));
  }
}

absl::StatusOr<Dataset> ScanDataset(const DatasetSpec& spec, const std::vector<std::string>& labels,
                                    uint64_t seed, AudioCache* cache, int threads) {
  return ScanDataset(DatasetRequest{{spec}, {}, labels, seed}, cache, threads);
}

absl::Status ValidateDataset(const Dataset& dataset) {
  const auto& s = dataset.summary;
  if (s.usable_files() == 0) {
    std::string why = s.total_files() == 0
                          ? "it holds no files"
                          : absl::StrCat("all ", s.total_files(), " files were skipped");
    if (s.skipped_size() > 0) {
      why += absl::StrCat(" (first: ", s.skipped(0).path(), ": ", s.skipped(0).reason(), ")");
    }
    return absl::FailedPreconditionError(
        absl::StrCat("dataset ", s.path(), " has no usable audio: ", why));
  }
  for (const auto& label : dataset.labels) {
    auto it = s.classes().find(label);
    if (it == s.classes().end() || it->second == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("class '", label, "' has no usable audio in ", s.path()));
    }
    auto train = s.train_classes().find(label);
    if (train == s.train_classes().end() || train->second == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "class '", label, "' has no clips in the training split (", s.split(), " split)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Dataset> LoadDataset(const DatasetRequest& request, AudioCache* cache, int threads) {
  ASSIGN_OR_RETURN(Dataset dataset, ScanDataset(request, cache, threads));
  RETURN_IF_ERROR(ValidateDataset(dataset));
  return dataset;
}

absl::StatusOr<Dataset> LoadDataset(const DatasetSpec& spec,
                                    const std::vector<std::string>& labels, uint64_t seed,
                                    AudioCache* cache, int threads) {
  return LoadDataset(DatasetRequest{{spec}, {}, labels, seed}, cache, threads);
}

}  // namespace ftune::data
