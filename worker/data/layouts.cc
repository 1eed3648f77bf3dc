#include "worker/data/layouts.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "worker/data/corpus_names.h"

namespace ftune::data {
namespace {

namespace fs = std::filesystem;
using ftune::v1::DatasetLayout;
using ftune::v1::DatasetSpec;

constexpr char kManifestName[] = "manifest.csv";
constexpr char kMetadataName[] = "metadata.csv";
constexpr char kMetadataJsonlName[] = "metadata.jsonl";

bool IsHidden(const fs::path& p) { return p.filename().string().rfind('.', 0) == 0; }

std::string Extension(const fs::path& p) { return absl::AsciiStrToLower(p.extension().string()); }

bool IsAudioFile(const fs::path& p) {
  static const auto* kAudio =
      new std::set<std::string>{".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3",
                                ".aif", ".aiff", ".au",  ".w64", ".caf",  ".rf64"};
  return kAudio->count(Extension(p)) > 0;
}

// Lexical, so a link is shown by its own name, never by where it points.
std::string Relative(const fs::path& p, const fs::path& root) {
  const fs::path rel = p.lexically_normal().lexically_relative(root.lexically_normal());
  return rel.empty() ? p.string() : rel.string();
}

// Regular files and links under `dir`, recursively, sorted, hidden files and folders left out.
std::vector<fs::path> ListFiles(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (IsHidden(it->path())) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    // Links are listed whether or not their targets exist, so that the allowed roots decide
    // about them the same way either way.
    if (it->is_regular_file() || it->is_symlink()) files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Visible folders (or regular files) directly in `dir`, sorted.
std::vector<fs::path> ListChildren(const fs::path& dir, bool folders) {
  std::vector<fs::path> children;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const bool wanted = folders ? e.is_directory() : e.is_regular_file();
    if (wanted && !IsHidden(e.path())) children.push_back(e.path());
  }
  std::sort(children.begin(), children.end());
  return children;
}

std::vector<fs::path> ListSubdirs(const fs::path& dir) { return ListChildren(dir, true); }

bool IsActorDir(const fs::path& p) {
  const std::string name = p.filename().string();
  if (name.size() <= 6 || name.size() > 10 || name.rfind("Actor_", 0) != 0) return false;
  return std::all_of(name.begin() + 6, name.end(), [](char c) { return absl::ascii_isdigit(c); });
}

// ---- Corpora known by their file names ----

// What a corpus's file name says about a clip.
struct NamedClip {
  int emotion = 0;  // index into the corpus's labels
  std::string speaker;
};

struct NamingConvention {
  DatasetLayout layout;
  const std::vector<std::string>& (*labels)();
  std::function<absl::StatusOr<NamedClip>(const fs::path& file)> parse;
};

const std::vector<NamingConvention>& NamingConventions() {
  static const auto* kConventions = new std::vector<NamingConvention>{
      {ftune::v1::DATASET_LAYOUT_CREMA_D, &CremaDEmotions,
       [](const fs::path& file) -> absl::StatusOr<NamedClip> {
         ASSIGN_OR_RETURN(CremaDName n, ParseCremaDName(file.filename().string()));
         return NamedClip{n.emotion, std::to_string(n.actor)};
       }},
      {ftune::v1::DATASET_LAYOUT_TESS, &TessEmotions,
       [](const fs::path& file) -> absl::StatusOr<NamedClip> {
         ASSIGN_OR_RETURN(TessName n, ParseTessName(file.filename().string()));
         return NamedClip{n.emotion, n.speaker};
       }},
      {ftune::v1::DATASET_LAYOUT_SAVEE, &SaveeEmotions,
       [](const fs::path& file) -> absl::StatusOr<NamedClip> {
         std::string name = file.filename().string();
         // The corpus's own AudioData/DC/a01.wav: the speaker is the folder.
         const std::string folder = file.parent_path().filename().string();
         if (name.find('_') == std::string::npos && IsSaveeSpeaker(folder)) {
           name = absl::StrCat(folder, "_", name);
         }
         ASSIGN_OR_RETURN(SaveeName n, ParseSaveeName(name));
         return NamedClip{n.emotion, n.speaker};
       }},
      {ftune::v1::DATASET_LAYOUT_EMODB, &EmoDbEmotions,
       [](const fs::path& file) -> absl::StatusOr<NamedClip> {
         ASSIGN_OR_RETURN(EmoDbName n, ParseEmoDbName(file.filename().string()));
         return NamedClip{n.emotion, absl::StrFormat("%02d", n.speaker)};
       }},
  };
  return *kConventions;
}

const NamingConvention* ConventionFor(DatasetLayout layout) {
  for (const NamingConvention& c : NamingConventions()) {
    if (c.layout == layout) return &c;
  }
  return nullptr;
}

absl::Status ScanNamedCorpus(const fs::path& root, const NamingConvention& convention,
                             CorpusScan* scan) {
  std::set<int> emotions;
  for (const fs::path& file : ListFiles(root)) {
    const std::string display = Relative(file, root);
    if (!IsAudioFile(file)) {
      scan->Skip(display, "not an audio file name");
      continue;
    }
    absl::StatusOr<NamedClip> clip = convention.parse(file);
    if (!clip.ok()) {
      scan->Skip(display, std::string(clip.status().message()));
      continue;
    }
    emotions.insert(clip->emotion);
    scan->candidates.push_back(
        {file.string(), display, convention.labels()[clip->emotion], clip->speaker, ""});
  }
  for (int e : emotions) scan->labels.push_back(convention.labels()[e]);
  return absl::OkStatus();
}

// The named corpus most of `root`'s audio files belong to (at least half of them), if any.
std::optional<DatasetLayout> DetectNamedCorpus(const fs::path& root) {
  std::vector<fs::path> audio;
  for (const fs::path& file : ListFiles(root)) {
    if (IsAudioFile(file)) audio.push_back(file);
  }
  if (audio.empty()) return std::nullopt;
  std::optional<DatasetLayout> best;
  size_t best_count = 0;
  for (const NamingConvention& c : NamingConventions()) {
    const size_t count = std::count_if(audio.begin(), audio.end(),
                                       [&](const fs::path& f) { return c.parse(f).ok(); });
    if (count > best_count) {
      best = c.layout;
      best_count = count;
    }
  }
  if (best_count * 2 < audio.size()) return std::nullopt;
  return best;
}

// ---- RAVDESS ----

absl::Status ScanRavdess(const fs::path& root, bool include_song, CorpusScan* scan) {
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
      if (!IsAudioFile(file)) {
        scan->Skip(display, "not an audio file name");
        continue;
      }
      auto name = ParseRavdessName(file.filename().string());
      if (!name.ok()) {
        scan->Skip(display, std::string(name.status().message()));
        continue;
      }
      if (name->actor != folder_actor) {
        scan->Skip(display, absl::StrCat("actor ", name->actor, " in the name but the file is in ",
                                         actor_name));
        continue;
      }
      if (name->vocal_channel == 2 && !include_song) {
        scan->Skip(display, "song recording (vocal channel 02); include_song is off");
        continue;
      }
      emotions.insert(name->emotion);
      scan->candidates.push_back({file.string(), display, RavdessEmotions()[name->emotion - 1],
                                  absl::StrFormat("Actor_%02d", name->actor), ""});
    }
  }
  for (int e : emotions) scan->labels.push_back(RavdessEmotions()[e - 1]);
  return absl::OkStatus();
}

// ---- One folder per class ----

// Adds the clips of `dir`/<label>/**: labels from the folder names; `split` for each clip;
// files directly in `dir` are skipped. `root` is what paths are reported relative to.
void ScanLabelFolders(const fs::path& dir, const fs::path& root, const std::string& split,
                      std::set<std::string>* labels, CorpusScan* scan) {
  for (const fs::path& file : ListChildren(dir, /*folders=*/false)) {
    scan->Skip(Relative(file, root), "not inside a class folder");
  }
  for (const fs::path& label_dir : ListSubdirs(dir)) {
    const std::string label = label_dir.filename().string();
    labels->insert(label);
    for (const fs::path& file : ListFiles(label_dir)) {
      const std::string display = Relative(file, root);
      if (!IsAudioFile(file)) {
        scan->Skip(display, "not an audio file name");
        continue;
      }
      scan->candidates.push_back({file.string(), display, label, "", split});
    }
  }
}

absl::Status ScanFolders(const fs::path& root, CorpusScan* scan) {
  if (ListSubdirs(root).empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(root.string(), " has no class folders (DIR/<label>/*.wav)"));
  }
  std::set<std::string> labels;
  ScanLabelFolders(root, root, "", &labels, scan);
  scan->labels.assign(labels.begin(), labels.end());
  return absl::OkStatus();
}

// ---- CSV (manifest.csv, metadata.csv) ----

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

// A CSV file's records with their "NAME:LINE" locations; blank lines left out, records that
// do not parse skipped with the reason.
struct CsvRecord {
  std::string where;
  std::vector<std::string> fields;
};
absl::StatusOr<std::vector<CsvRecord>> ReadCsv(const fs::path& file, CorpusScan* scan) {
  std::ifstream in(file);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", file.string()));
  std::vector<CsvRecord> records;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    std::string where = absl::StrCat(file.filename().string(), ":", line_no);
    absl::StatusOr<std::vector<std::string>> fields = ParseCsvLine(line);
    if (!fields.ok()) {
      scan->Skip(where, std::string(fields.status().message()));
      continue;
    }
    records.push_back({std::move(where), *std::move(fields)});
  }
  return records;
}

// The column named one of `names` (case-insensitive) in a header row, or -1.
int Column(const std::vector<std::string>& header, std::initializer_list<const char*> names) {
  for (size_t i = 0; i < header.size(); ++i) {
    const std::string lower = absl::AsciiStrToLower(header[i]);
    for (const char* name : names) {
      if (lower == name) return static_cast<int>(i);
    }
  }
  return -1;
}

std::string Field(const std::vector<std::string>& fields, int column) {
  return column >= 0 && column < static_cast<int>(fields.size()) ? fields[column] : "";
}

// The file a CSV row names (relative to `base` unless absolute), or why it cannot be used.
absl::StatusOr<fs::path> RowFile(const fs::path& base, const std::string& rel,
                                 const PathFilter& allowed) {
  fs::path file = fs::path(rel).is_absolute() ? fs::path(rel) : base / rel;
  if (allowed && !allowed(file.string())) return absl::PermissionDeniedError(kOutsideRoots);
  if (!fs::exists(file)) return absl::NotFoundError("file not found");
  if (!fs::is_regular_file(file)) return absl::FailedPreconditionError("not a regular file");
  return file;
}

absl::StatusOr<std::string> NormaliseSplit(const std::string& value) {
  const std::string v = absl::AsciiStrToLower(value);
  if (v == "train" || v == "training") return std::string("train");
  if (v == "eval" || v == "evaluation" || v == "validation" || v == "valid" || v == "val" ||
      v == "dev" || v == "test") {
    return std::string("eval");
  }
  return absl::InvalidArgumentError(absl::StrCat("split '", value, "' is neither train nor eval"));
}

absl::Status ScanManifest(const fs::path& manifest, bool require_split, const PathFilter& allowed,
                          CorpusScan* scan) {
  if (!fs::is_regular_file(manifest)) {
    return absl::NotFoundError(absl::StrCat("cannot read manifest ", manifest.string()));
  }
  ASSIGN_OR_RETURN(std::vector<CsvRecord> records, ReadCsv(manifest, scan));
  const fs::path base = manifest.parent_path();
  int col_path = 0, col_label = 1, col_speaker = 2, col_split = 3;
  size_t first = 0;
  if (!records.empty() && Column(records[0].fields, {"path"}) >= 0) {
    const std::vector<std::string>& header = records[0].fields;
    col_path = Column(header, {"path"});
    col_label = Column(header, {"label"});
    col_speaker = Column(header, {"speaker"});
    col_split = Column(header, {"split"});
    if (col_label < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(manifest.string(), ": header has no 'label' column"));
    }
    scan->has_split_column = col_split >= 0;
    first = 1;
  } else if (!records.empty()) {
    scan->has_split_column = records[0].fields.size() > 3;
  }
  std::set<std::string> labels;
  for (size_t r = first; r < records.size(); ++r) {
    const CsvRecord& row = records[r];
    const std::string rel = Field(row.fields, col_path);
    const std::string label = Field(row.fields, col_label);
    if (rel.empty() || label.empty()) {
      scan->Skip(row.where, "needs at least path,label");
      continue;
    }
    absl::StatusOr<fs::path> file = RowFile(base, rel, allowed);
    if (!file.ok()) {
      scan->Skip(rel, std::string(file.status().message()));
      continue;
    }
    std::string split;
    if (!Field(row.fields, col_split).empty()) {
      auto s = NormaliseSplit(Field(row.fields, col_split));
      if (!s.ok()) {
        scan->Skip(rel, absl::StrCat(row.where, ": ", s.status().message()));
        continue;
      }
      split = *s;
    } else if (require_split) {
      scan->Skip(rel, absl::StrCat(row.where, ": no split value (the split is from the manifest)"));
      continue;
    }
    labels.insert(label);
    scan->candidates.push_back({file->string(), rel, label, Field(row.fields, col_speaker), split});
  }
  scan->labels.assign(labels.begin(), labels.end());
  return absl::OkStatus();
}

// ---- Hugging Face audiofolder ----

enum class SplitKind { kTrain, kValidation, kTest };

// Hugging Face datasets' split folder names.
std::optional<SplitKind> SplitFolderKind(const fs::path& dir) {
  const std::string name = absl::AsciiStrToLower(dir.filename().string());
  if (name == "train" || name == "training") return SplitKind::kTrain;
  if (name == "validation" || name == "valid" || name == "val" || name == "dev") {
    return SplitKind::kValidation;
  }
  if (name == "test" || name == "testing" || name == "eval" || name == "evaluation") {
    return SplitKind::kTest;
  }
  return std::nullopt;
}

struct SplitFolders {
  std::map<fs::path, SplitKind> folders;
  bool has_validation = false;
};

SplitFolders FindSplitFolders(const fs::path& root) {
  SplitFolders found;
  for (const fs::path& dir : ListSubdirs(root)) {
    if (std::optional<SplitKind> kind = SplitFolderKind(dir)) {
      found.folders[dir] = *kind;
      found.has_validation |= *kind == SplitKind::kValidation;
    }
  }
  return found;
}

// ftune's split for a split folder: validation/ is the evaluation set; test/ is too when there
// is no validation/, and is left out otherwise (nullopt).
std::optional<std::string> OurSplit(SplitKind kind, bool has_validation) {
  switch (kind) {
    case SplitKind::kTrain:
      return "train";
    case SplitKind::kValidation:
      return "eval";
    case SplitKind::kTest:
      if (!has_validation) return "eval";
      break;
  }
  return std::nullopt;
}

constexpr char kTestLeftOut[] =
    "in the test split, which is left out: the job evaluates on validation/";

// metadata.csv with a header naming file_name and label (speaker or speaker_id optional; other
// columns ignored); file names relative to its folder. `split_of` gives a listed file's split,
// or an error saying why it is not used. Adds the listed files to `listed`.
absl::Status ScanMetadata(
    const fs::path& metadata, const fs::path& root,
    const std::function<absl::StatusOr<std::string>(const fs::path& file)>& split_of,
    const PathFilter& allowed, std::set<std::string>* labels, std::set<fs::path>* listed,
    CorpusScan* scan) {
  ASSIGN_OR_RETURN(std::vector<CsvRecord> records, ReadCsv(metadata, scan));
  const std::string where = Relative(metadata, root);
  if (records.empty()) return absl::InvalidArgumentError(absl::StrCat(where, " is empty"));
  const std::vector<std::string>& header = records[0].fields;
  const int col_file = Column(header, {"file_name"});
  const int col_label = Column(header, {"label"});
  const int col_speaker = Column(header, {"speaker", "speaker_id"});
  if (col_file < 0 || col_label < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": the header (", absl::StrJoin(header, ","),
                     ") needs a file_name and a label column (Hugging Face audiofolder metadata)"));
  }
  for (size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& row = records[r];
    const std::string rel = Field(row.fields, col_file);
    const std::string label = Field(row.fields, col_label);
    if (rel.empty() || label.empty()) {
      scan->Skip(row.where, "needs a file_name and a label");
      continue;
    }
    absl::StatusOr<fs::path> file = RowFile(metadata.parent_path(), rel, allowed);
    const std::string display =
        file.ok() ? Relative(*file, root) : Relative(metadata.parent_path() / rel, root);
    if (!file.ok()) {
      scan->Skip(display, std::string(file.status().message()));
      continue;
    }
    listed->insert(fs::weakly_canonical(*file));
    absl::StatusOr<std::string> split = split_of(*file);
    if (!split.ok()) {
      scan->Skip(display, std::string(split.status().message()));
      continue;
    }
    labels->insert(label);
    scan->candidates.push_back(
        {file->string(), display, label, Field(row.fields, col_speaker), *split});
  }
  return absl::OkStatus();
}

absl::Status RefuseJsonlMetadata(const fs::path& dir, const fs::path& root) {
  if (fs::exists(dir / kMetadataJsonlName) && !fs::exists(dir / kMetadataName)) {
    return absl::InvalidArgumentError(
        absl::StrCat(Relative(dir / kMetadataJsonlName, root),
                     ": metadata.jsonl is not read; write the same columns as metadata.csv"));
  }
  return absl::OkStatus();
}

// Audio files under `dir` that no metadata.csv row named.
void SkipUnlisted(const fs::path& dir, const fs::path& root, const std::set<fs::path>& listed,
                  CorpusScan* scan) {
  for (const fs::path& file : ListFiles(dir)) {
    if (IsAudioFile(file) && !listed.count(fs::weakly_canonical(file))) {
      scan->Skip(Relative(file, root), "not listed in metadata.csv");
    }
  }
}

absl::Status ScanAudioFolder(const fs::path& root, const PathFilter& allowed, CorpusScan* scan) {
  const SplitFolders splits = FindSplitFolders(root);
  scan->has_split_column = !splits.folders.empty();
  std::set<std::string> labels;
  std::set<fs::path> listed;  // files a metadata.csv names
  RETURN_IF_ERROR(RefuseJsonlMetadata(root, root));

  if (fs::is_regular_file(root / kMetadataName)) {
    // One metadata.csv for everything: a file's split is its first folder.
    auto split_of = [&](const fs::path& file) -> absl::StatusOr<std::string> {
      if (splits.folders.empty()) return std::string();
      auto it = splits.folders.find(root / *fs::path(Relative(file, root)).begin());
      if (it == splits.folders.end()) {
        return absl::FailedPreconditionError(
            "not inside a split folder (train/, validation/, test/)");
      }
      std::optional<std::string> split = OurSplit(it->second, splits.has_validation);
      if (!split) return absl::FailedPreconditionError(kTestLeftOut);
      return *split;
    };
    RETURN_IF_ERROR(
        ScanMetadata(root / kMetadataName, root, split_of, allowed, &labels, &listed, scan));
    SkipUnlisted(root, root, listed, scan);
  } else if (splits.folders.empty()) {
    if (ListSubdirs(root).empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          root.string(), " has no metadata.csv, no split folders and no label folders"));
    }
    ScanLabelFolders(root, root, "", &labels, scan);
  } else {
    for (const auto& [dir, kind] : splits.folders) {
      const std::optional<std::string> split = OurSplit(kind, splits.has_validation);
      if (!split) {
        for (const fs::path& file : ListFiles(dir)) scan->Skip(Relative(file, root), kTestLeftOut);
        continue;
      }
      RETURN_IF_ERROR(RefuseJsonlMetadata(dir, root));
      if (fs::is_regular_file(dir / kMetadataName)) {
        auto split_of = [&](const fs::path&) -> absl::StatusOr<std::string> { return *split; };
        RETURN_IF_ERROR(
            ScanMetadata(dir / kMetadataName, root, split_of, allowed, &labels, &listed, scan));
        SkipUnlisted(dir, root, listed, scan);
      } else {
        ScanLabelFolders(dir, root, *split, &labels, scan);
      }
    }
    for (const fs::path& file : ListFiles(root)) {
      if (!splits.folders.count(root / *fs::path(Relative(file, root)).begin())) {
        scan->Skip(Relative(file, root), "not inside a split folder (train/, validation/, test/)");
      }
    }
  }
  scan->labels.assign(labels.begin(), labels.end());
  return absl::OkStatus();
}

}  // namespace

std::string LayoutName(DatasetLayout layout) {
  switch (layout) {
    case ftune::v1::DATASET_LAYOUT_RAVDESS:
      return "ravdess";
    case ftune::v1::DATASET_LAYOUT_FOLDERS:
      return "folders";
    case ftune::v1::DATASET_LAYOUT_MANIFEST:
      return "manifest";
    case ftune::v1::DATASET_LAYOUT_AUDIOFOLDER:
      return "audiofolder";
    case ftune::v1::DATASET_LAYOUT_CREMA_D:
      return "crema-d";
    case ftune::v1::DATASET_LAYOUT_TESS:
      return "tess";
    case ftune::v1::DATASET_LAYOUT_SAVEE:
      return "savee";
    case ftune::v1::DATASET_LAYOUT_EMODB:
      return "emodb";
    default:
      return "auto";
  }
}

absl::StatusOr<DatasetLayout> DetectLayout(const std::string& path_name) {
  const fs::path path(path_name);
  if (fs::is_regular_file(path)) {
    if (Extension(path) == ".csv") return ftune::v1::DATASET_LAYOUT_MANIFEST;
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), " is a file, neither a dataset folder nor a .csv manifest"));
  }
  if (fs::is_regular_file(path / kManifestName)) return ftune::v1::DATASET_LAYOUT_MANIFEST;
  if (fs::is_regular_file(path / kMetadataName) || fs::is_regular_file(path / kMetadataJsonlName)) {
    return ftune::v1::DATASET_LAYOUT_AUDIOFOLDER;
  }
  const SplitFolders splits = FindSplitFolders(path);
  const bool has_train = std::any_of(splits.folders.begin(), splits.folders.end(),
                                     [](const auto& f) { return f.second == SplitKind::kTrain; });
  if (has_train && splits.folders.size() >= 2) return ftune::v1::DATASET_LAYOUT_AUDIOFOLDER;
  const std::vector<fs::path> dirs = ListSubdirs(path);
  if (std::any_of(dirs.begin(), dirs.end(), IsActorDir)) return ftune::v1::DATASET_LAYOUT_RAVDESS;
  if (std::optional<DatasetLayout> named = DetectNamedCorpus(path)) return *named;
  if (!dirs.empty()) return ftune::v1::DATASET_LAYOUT_FOLDERS;
  return absl::FailedPreconditionError(absl::StrCat(
      "cannot tell the layout of ", path.string(), ": it has no ", kManifestName,
      ", no metadata.csv or train/ + validation/ folders (audiofolder), no Actor_NN folders "
      "(RAVDESS), no audio files mostly named like CREMA-D, TESS, SAVEE or EmoDB, and no class "
      "folders"));
}

absl::StatusOr<CorpusScan> ScanLayout(const DatasetSpec& spec, const PathFilter& allowed) {
  const fs::path root(spec.path());
  CorpusScan scan;
  scan.layout = spec.layout();
  if (scan.layout == ftune::v1::DATASET_LAYOUT_AUTO) {
    ASSIGN_OR_RETURN(scan.layout, DetectLayout(spec.path()));
  }
  if (scan.layout != ftune::v1::DATASET_LAYOUT_MANIFEST && !fs::is_directory(root)) {
    return absl::InvalidArgumentError(absl::StrCat(spec.path(), " is not a folder"));
  }
  switch (scan.layout) {
    case ftune::v1::DATASET_LAYOUT_RAVDESS:
      RETURN_IF_ERROR(ScanRavdess(root, spec.include_song(), &scan));
      break;
    case ftune::v1::DATASET_LAYOUT_FOLDERS:
      RETURN_IF_ERROR(ScanFolders(root, &scan));
      break;
    case ftune::v1::DATASET_LAYOUT_MANIFEST:
      RETURN_IF_ERROR(ScanManifest(fs::is_directory(root) ? root / kManifestName : root,
                                   spec.split() == ftune::v1::SPLIT_STRATEGY_MANIFEST, allowed,
                                   &scan));
      break;
    case ftune::v1::DATASET_LAYOUT_AUDIOFOLDER:
      RETURN_IF_ERROR(ScanAudioFolder(root, allowed, &scan));
      break;
    default:
      if (const NamingConvention* convention = ConventionFor(scan.layout)) {
        RETURN_IF_ERROR(ScanNamedCorpus(root, *convention, &scan));
        break;
      }
      return absl::InvalidArgumentError(absl::StrCat("unknown dataset layout ", spec.layout()));
  }
  return scan;
}

}  // namespace ftune::data
