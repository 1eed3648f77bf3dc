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
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "worker/data/random.h"

namespace ftune::data {
namespace {

namespace fs = std::filesystem;
using ftune::v1::DatasetLayout;
using ftune::v1::DatasetSpec;
using ftune::v1::SplitStrategy;

constexpr double kDefaultEvalFraction = 0.2;
constexpr char kManifestName[] = "manifest.csv";
// Random candidate speaker sets tried when choosing the evaluation speakers.
constexpr int kSpeakerSplitTrials = 512;

// A file that may become a clip, before decoding.
struct Candidate {
  std::string path;     // as opened
  std::string display;  // as reported (relative to the dataset folder)
  std::string label;
  std::string speaker;
  std::string split;  // "train", "eval" or "" (manifest split column)
};

struct Scan {
  DatasetLayout layout;
  std::vector<Candidate> candidates;
  std::vector<ftune::v1::SkippedFile> skipped;
  // Labels in the layout's order (every label seen, usable or not).
  std::vector<std::string> labels;
  bool has_split_column = false;
};

void Skip(Scan* scan, std::string path, std::string reason) {
  ftune::v1::SkippedFile* s = &scan->skipped.emplace_back();
  s->set_path(std::move(path));
  s->set_reason(std::move(reason));
}

bool IsHidden(const fs::path& p) { return p.filename().string().rfind('.', 0) == 0; }

std::string Extension(const fs::path& p) {
  return absl::AsciiStrToLower(p.extension().string());
}

bool IsAudioExtension(const std::string& ext) {
  static const std::set<std::string> kAudio = {".wav", ".flac", ".ogg", ".oga", ".opus",
                                               ".mp3", ".aif", ".aiff", ".au",  ".w64",
                                               ".caf", ".rf64"};
  return kAudio.count(ext) > 0;
}

std::string Relative(const fs::path& p, const fs::path& root) {
  std::error_code ec;
  fs::path rel = fs::relative(p, root, ec);
  return ec || rel.empty() ? p.string() : rel.string();
}

// Regular files under `dir`, recursively, sorted, hidden files and folders left out.
std::vector<fs::path> ListFiles(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (IsHidden(it->path())) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file()) files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<fs::path> ListSubdirs(const fs::path& dir) {
  std::vector<fs::path> dirs;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_directory() && !IsHidden(e.path())) dirs.push_back(e.path());
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

bool IsActorDir(const fs::path& p) {
  const std::string name = p.filename().string();
  if (name.size() <= 6 || name.size() > 10 || name.rfind("Actor_", 0) != 0) return false;
  return std::all_of(name.begin() + 6, name.end(), [](char c) { return absl::ascii_isdigit(c); });
}

absl::StatusOr<DatasetLayout> DetectLayout(const fs::path& path) {
  if (fs::is_regular_file(path)) {
    if (Extension(path) == ".csv") return ftune::v1::DATASET_LAYOUT_MANIFEST;
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), " is a file, neither a dataset folder nor a .csv manifest"));
  }
  if (fs::is_regular_file(path / kManifestName)) return ftune::v1::DATASET_LAYOUT_MANIFEST;
  std::vector<fs::path> dirs = ListSubdirs(path);
  if (std::any_of(dirs.begin(), dirs.end(), IsActorDir)) return ftune::v1::DATASET_LAYOUT_RAVDESS;
  if (!dirs.empty()) return ftune::v1::DATASET_LAYOUT_FOLDERS;
  return absl::FailedPreconditionError(absl::StrCat(
      "cannot tell the layout of ", path.string(), ": it has no Actor_NN folders (RAVDESS), no ",
      kManifestName, " and no class folders"));
}

absl::Status ScanRavdess(const fs::path& root, bool include_song, Scan* scan) {
  std::vector<fs::path> actors;
  for (const fs::path& d : ListSubdirs(root)) {
    if (IsActorDir(d)) actors.push_back(d);
  }
  if (actors.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(root.string(), " has no Actor_NN folders (RAVDESS layout)"));
  }
  std::set<int> emotions;
  for (const fs::path& actor_dir : actors) {
    const std::string actor_name = actor_dir.filename().string();
    const int folder_actor = std::stoi(actor_name.substr(6));
    for (const fs::path& file : ListFiles(actor_dir)) {
      const std::string display = Relative(file, root);
      if (!IsAudioExtension(Extension(file))) {
        Skip(scan, display, "not an audio file name");
        continue;
      }
      auto name = ParseRavdessName(file.filename().string());
      if (!name.ok()) {
        Skip(scan, display, std::string(name.status().message()));
        continue;
      }
      if (name->actor != folder_actor) {
        Skip(scan, display,
             absl::StrCat("actor ", name->actor, " in the name but the file is in ", actor_name));
        continue;
      }
      if (name->vocal_channel == 2 && !include_song) {
        Skip(scan, display, "song recording (vocal channel 02); include_song is off");
        continue;
      }
      emotions.insert(name->emotion);
      char speaker[16];
      std::snprintf(speaker, sizeof(speaker), "Actor_%02d", name->actor);
      scan->candidates.push_back(
          {file.string(), display, RavdessEmotions()[name->emotion - 1], speaker, ""});
    }
  }
  for (int e : emotions) scan->labels.push_back(RavdessEmotions()[e - 1]);
  return absl::OkStatus();
}

absl::Status ScanFolders(const fs::path& root, Scan* scan) {
  std::vector<fs::path> dirs = ListSubdirs(root);
  if (dirs.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(root.string(), " has no class folders (DIR/<label>/*.wav)"));
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    if (e.is_regular_file() && !IsHidden(e.path())) {
      Skip(scan, Relative(e.path(), root), "not inside a class folder");
    }
  }
  for (const fs::path& dir : dirs) {
    const std::string label = dir.filename().string();
    scan->labels.push_back(label);
    for (const fs::path& file : ListFiles(dir)) {
      const std::string display = Relative(file, root);
      if (!IsAudioExtension(Extension(file))) {
        Skip(scan, display, "not an audio file name");
        continue;
      }
      scan->candidates.push_back({file.string(), display, label, "", ""});
    }
  }
  return absl::OkStatus();
}

// One CSV record; RFC 4180 quoting (quotes around a field, "" for a quote inside).
absl::StatusOr<std::vector<std::string>> ParseCsvLine(const std::string& line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        fields.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else if (c != '\r') {
      fields.back() += c;
    }
  }
  if (quoted) return absl::InvalidArgumentError("unterminated quoted field");
  for (auto& f : fields) f = std::string(absl::StripAsciiWhitespace(f));
  return fields;
}

absl::StatusOr<std::string> NormaliseSplit(const std::string& value) {
  const std::string v = absl::AsciiStrToLower(value);
  if (v == "train" || v == "training") return std::string("train");
  if (v == "eval" || v == "evaluation" || v == "validation" || v == "valid" || v == "val" ||
      v == "dev" || v == "test") {
    return std::string("eval");
  }
  return absl::InvalidArgumentError(
      absl::StrCat("split '", value, "' is neither train nor eval"));
}

absl::Status ScanManifest(const fs::path& manifest, bool require_split, Scan* scan) {
  std::ifstream in(manifest);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read manifest ", manifest.string()));
  }
  const fs::path base = manifest.parent_path();
  const std::string name = manifest.filename().string();
  int col_path = 0, col_label = 1, col_speaker = 2, col_split = 3;
  std::set<std::string> labels;
  std::string line;
  int line_no = 0;
  bool first = true;
  while (std::getline(in, line)) {
    ++line_no;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    const std::string where = absl::StrCat(name, ":", line_no);
    auto fields = ParseCsvLine(line);
    if (!fields.ok()) {
      Skip(scan, where, std::string(fields.status().message()));
      continue;
    }
    if (first) {
      first = false;
      std::vector<std::string> lower;
      for (const auto& f : *fields) lower.push_back(absl::AsciiStrToLower(f));
      auto find = [&](const std::string& col) {
        auto it = std::find(lower.begin(), lower.end(), col);
        return it == lower.end() ? -1 : int(it - lower.begin());
      };
      if (find("path") >= 0) {
        col_path = find("path");
        col_label = find("label");
        col_speaker = find("speaker");
        col_split = find("split");
        if (col_label < 0) {
          return absl::InvalidArgumentError(
              absl::StrCat(manifest.string(), ": header has no 'label' column"));
        }
        scan->has_split_column = col_split >= 0;
        continue;
      }
      scan->has_split_column = fields->size() > 3;
    }
    auto field = [&](int col) -> std::string {
      return col >= 0 && col < int(fields->size()) ? (*fields)[col] : "";
    };
    const std::string rel = field(col_path);
    const std::string label = field(col_label);
    if (rel.empty() || label.empty()) {
      Skip(scan, where, "needs at least path,label");
      continue;
    }
    fs::path file = fs::path(rel).is_absolute() ? fs::path(rel) : base / rel;
    if (!fs::exists(file)) {
      Skip(scan, rel, "file not found");
      continue;
    }
    if (!fs::is_regular_file(file)) {
      Skip(scan, rel, "not a regular file");
      continue;
    }
    std::string split;
    if (!field(col_split).empty()) {
      auto s = NormaliseSplit(field(col_split));
      if (!s.ok()) {
        Skip(scan, rel, absl::StrCat(where, ": ", s.status().message()));
        continue;
      }
      split = *s;
    } else if (require_split) {
      Skip(scan, rel, absl::StrCat(where, ": no split value (the split is from the manifest)"));
      continue;
    }
    labels.insert(label);
    scan->candidates.push_back({file.string(), rel, label, field(col_speaker), split});
  }
  scan->labels.assign(labels.begin(), labels.end());
  return absl::OkStatus();
}

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

const std::vector<std::string>& RavdessEmotions() {
  static const auto* kEmotions = new std::vector<std::string>{
      "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"};
  return *kEmotions;
}

absl::StatusOr<RavdessName> ParseRavdessName(const std::string& file_name) {
  const size_t dot = file_name.rfind('.');
  const std::string stem = file_name.substr(0, dot);
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a RAVDESS name (MM-VV-EE-II-SS-RR-AA): ", why));
  };
  std::vector<int> v;
  size_t pos = 0;
  while (pos <= stem.size()) {
    size_t end = stem.find('-', pos);
    if (end == std::string::npos) end = stem.size();
    const std::string part = stem.substr(pos, end - pos);
    if (part.size() != 2 || !absl::ascii_isdigit(part[0]) || !absl::ascii_isdigit(part[1])) {
      return bad(absl::StrCat("field ", v.size() + 1, " is '", part, "', not two digits"));
    }
    v.push_back(std::stoi(part));
    pos = end + 1;
  }
  if (v.size() != 7) return bad(absl::StrCat(v.size(), " fields instead of 7"));
  RavdessName n{v[0], v[1], v[2], v[3], v[4], v[5], v[6]};
  auto check = [&](int value, int lo, int hi, const char* what) -> absl::Status {
    if (value < lo || value > hi) {
      return bad(absl::StrCat(what, " ", value, " is outside ", lo, "..", hi));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(check(n.modality, 1, 3, "modality"));
  RETURN_IF_ERROR(check(n.vocal_channel, 1, 2, "vocal channel"));
  RETURN_IF_ERROR(check(n.emotion, 1, 8, "emotion"));
  RETURN_IF_ERROR(check(n.intensity, 1, 2, "intensity"));
  RETURN_IF_ERROR(check(n.statement, 1, 2, "statement"));
  RETURN_IF_ERROR(check(n.repetition, 1, 2, "repetition"));
  RETURN_IF_ERROR(check(n.actor, 1, 99, "actor"));
  return n;
}

std::string LayoutName(DatasetLayout layout) {
  switch (layout) {
    case ftune::v1::DATASET_LAYOUT_RAVDESS: return "ravdess";
    case ftune::v1::DATASET_LAYOUT_FOLDERS: return "folders";
    case ftune::v1::DATASET_LAYOUT_MANIFEST: return "manifest";
    default: return "auto";
  }
}

std::string SplitName(SplitStrategy split) {
  switch (split) {
    case ftune::v1::SPLIT_STRATEGY_SPEAKER: return "speaker";
    case ftune::v1::SPLIT_STRATEGY_RANDOM: return "random";
    case ftune::v1::SPLIT_STRATEGY_MANIFEST: return "manifest";
    default: return "auto";
  }
}

namespace {

absl::StatusOr<Dataset> ScanDatasetImpl(const DatasetSpec& spec,
                                        const std::vector<std::string>& labels, uint64_t seed,
                                        AudioCache* cache, int threads) {
  if (spec.path().empty()) return absl::InvalidArgumentError("dataset path is empty");
  const fs::path root(spec.path());
  if (!fs::exists(root)) {
    return absl::NotFoundError(absl::StrCat("dataset path ", spec.path(), " does not exist"));
  }
  const double fraction = spec.has_eval_fraction() ? spec.eval_fraction() : kDefaultEvalFraction;
  if (!(fraction >= 0 && fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("eval_fraction ", fraction, " is outside [0, 1)"));
  }
  std::set<std::string> unique_labels(labels.begin(), labels.end());
  if (unique_labels.size() != labels.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("labels repeat a name: ", absl::StrJoin(labels, ",")));
  }

  Scan scan;
  scan.layout = spec.layout();
  if (scan.layout == ftune::v1::DATASET_LAYOUT_AUTO) {
    ASSIGN_OR_RETURN(scan.layout, DetectLayout(root));
  }
  if (spec.split() == ftune::v1::SPLIT_STRATEGY_MANIFEST &&
      scan.layout != ftune::v1::DATASET_LAYOUT_MANIFEST) {
    return absl::InvalidArgumentError(absl::StrCat(
        "split 'manifest' needs a CSV manifest, but the layout is ", LayoutName(scan.layout)));
  }
  const bool is_dir = fs::is_directory(root);
  switch (scan.layout) {
    case ftune::v1::DATASET_LAYOUT_RAVDESS:
    case ftune::v1::DATASET_LAYOUT_FOLDERS:
      if (!is_dir) {
        return absl::InvalidArgumentError(absl::StrCat(spec.path(), " is not a folder"));
      }
      RETURN_IF_ERROR(scan.layout == ftune::v1::DATASET_LAYOUT_RAVDESS
                          ? ScanRavdess(root, spec.include_song(), &scan)
                          : ScanFolders(root, &scan));
      break;
    case ftune::v1::DATASET_LAYOUT_MANIFEST:
      RETURN_IF_ERROR(ScanManifest(is_dir ? root / kManifestName : root,
                                   spec.split() == ftune::v1::SPLIT_STRATEGY_MANIFEST, &scan));
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown dataset layout ", spec.layout()));
  }

  std::unique_ptr<AudioCache> own_cache;
  if (cache == nullptr) {
    own_cache = std::make_unique<AudioCache>(/*max_memory_bytes=*/64 << 20);
    cache = own_cache.get();
  }
  Dataset ds;
  ds.labels = labels.empty() ? scan.labels : labels;
  std::map<std::string, int> label_id;
  for (size_t i = 0; i < ds.labels.size(); ++i) label_id[ds.labels[i]] = int(i);
  auto& summary = ds.summary;
  summary.set_path(spec.path());
  summary.set_layout(LayoutName(scan.layout));
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
      Skip(&scan, c.display, absl::StrCat("label '", c.label, "' is not in the job's labels (",
                                          absl::StrJoin(ds.labels, ","), ")"));
    }
  }
  std::vector<Decoded> decoded = DecodeAll(wanted, cache, threads);
  std::vector<Clip> usable;
  std::vector<std::string> usable_split;
  std::vector<double> durations;
  for (size_t i = 0; i < wanted.size(); ++i) {
    if (!decoded[i].status.ok()) {
      Skip(&scan, wanted[i].display, Reason(decoded[i].status, wanted[i].path));
      continue;
    }
    const Candidate& c = wanted[i];
    Clip clip{c.path, label_id[c.label], c.speaker, double(decoded[i].samples) / kSampleRate};
    usable.push_back(clip);
    usable_split.push_back(c.split);
    durations.push_back(clip.seconds);
    summary.set_total_seconds(summary.total_seconds() + clip.seconds);
    ++(*summary.mutable_classes())[c.label];
    if (!c.speaker.empty()) ++(*summary.mutable_speakers())[c.speaker];
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
  for (auto& s : scan.skipped) *summary.add_skipped() = std::move(s);

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
          "a speaker split needs a speaker for every clip; some clips have none");
    }
    if (speakers.size() < 2 && fraction > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a speaker split needs at least 2 speakers; the dataset has ", speakers.size()));
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
  std::set<std::string> train_speakers, eval_speakers;
  for (const auto& label : ds.labels) {
    (*summary.mutable_train_classes())[label] = 0;
    (*summary.mutable_eval_classes())[label] = 0;
  }
  for (size_t i = 0; i < usable.size(); ++i) {
    const Clip& c = usable[i];
    const std::string& label = ds.labels[c.label];
    if (is_eval[i]) {
      ds.eval.push_back(c);
      ++(*summary.mutable_eval_classes())[label];
      if (!c.speaker.empty()) eval_speakers.insert(c.speaker);
    } else {
      ds.train.push_back(c);
      ++(*summary.mutable_train_classes())[label];
      if (!c.speaker.empty()) train_speakers.insert(c.speaker);
    }
  }
  auto by_path = [](const Clip& a, const Clip& b) { return a.path < b.path; };
  std::sort(ds.train.begin(), ds.train.end(), by_path);
  std::sort(ds.eval.begin(), ds.eval.end(), by_path);
  for (const auto& s : train_speakers) summary.add_train_speakers(s);
  for (const auto& s : eval_speakers) summary.add_eval_speakers(s);
  summary.set_train_files(uint32_t(ds.train.size()));
  summary.set_eval_files(uint32_t(ds.eval.size()));
  return ds;
}

}  // namespace

absl::StatusOr<Dataset> ScanDataset(const DatasetSpec& spec,
                                    const std::vector<std::string>& labels, uint64_t seed,
                                    AudioCache* cache, int threads) {
  // std::filesystem throws on what it cannot stat (e.g. a folder without permission).
  try {
    return ScanDatasetImpl(spec, labels, seed, cache, threads);
  } catch (const fs::filesystem_error& e) {
    return absl::FailedPreconditionError(absl::StrCat("cannot read dataset ", spec.path(), ": ",
                                                      e.what()));
  }
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

absl::StatusOr<Dataset> LoadDataset(const DatasetSpec& spec,
                                    const std::vector<std::string>& labels, uint64_t seed,
                                    AudioCache* cache, int threads) {
  ASSIGN_OR_RETURN(Dataset dataset, ScanDataset(spec, labels, seed, cache, threads));
  RETURN_IF_ERROR(ValidateDataset(dataset));
  return dataset;
}

}  // namespace ftune::data
