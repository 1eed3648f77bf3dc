#include "worker/data/corpus_names.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace ftune::data {
namespace {

// The file name without its extension (the text before the last '.').
absl::string_view Stem(absl::string_view file_name) {
  const size_t dot = file_name.rfind('.');
  return dot == absl::string_view::npos ? file_name : file_name.substr(0, dot);
}

// A quoted field for error messages, control bytes escaped so any input prints safely.
std::string Quoted(absl::string_view field) { return absl::StrCat("'", absl::CEscape(field), "'"); }

bool AllDigits(absl::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isdigit(c); });
}

bool AllLower(absl::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_islower(c); });
}

// Digits only, as a number (at most 9 digits, so it cannot overflow).
int Number(absl::string_view digits) {
  int n = 0;
  for (char c : digits) n = n * 10 + (c - '0');
  return n;
}

// The index of `code` in `codes`, or -1.
int IndexOf(const std::vector<std::string>& codes, absl::string_view code) {
  auto it = std::find(codes.begin(), codes.end(), code);
  return it == codes.end() ? -1 : static_cast<int>(it - codes.begin());
}

// InvalidArgument "not a <corpus> name (<pattern>): <why>".
absl::Status NotA(absl::string_view corpus, absl::string_view pattern, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("not a ", corpus, " name (", pattern, "): ", why));
}

// `field` (what) must be one of `codes`; returns its index.
absl::StatusOr<int> OneOf(absl::string_view corpus, absl::string_view pattern,
                          absl::string_view what, absl::string_view field,
                          const std::vector<std::string>& codes) {
  const int index = IndexOf(codes, field);
  if (index < 0) {
    return NotA(
        corpus, pattern,
        absl::StrCat(what, " ", Quoted(field), " is not one of ", absl::StrJoin(codes, " ")));
  }
  return index;
}

// Splits the stem at '_' into exactly `n` fields.
absl::StatusOr<std::vector<absl::string_view>> Fields(absl::string_view file_name, size_t n,
                                                      absl::string_view corpus,
                                                      absl::string_view pattern) {
  std::vector<absl::string_view> fields = absl::StrSplit(Stem(file_name), '_');
  if (fields.size() != n) {
    return NotA(corpus, pattern,
                absl::StrCat(fields.size(), " '_'-separated fields instead of ", n));
  }
  return fields;
}

}  // namespace

const std::vector<std::string>& RavdessEmotions() {
  static const auto* kEmotions = new std::vector<std::string>{
      "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"};
  return *kEmotions;
}

absl::StatusOr<RavdessName> ParseRavdessName(absl::string_view file_name) {
  constexpr absl::string_view kCorpus = "RAVDESS", kPattern = "MM-VV-EE-II-SS-RR-AA";
  std::vector<absl::string_view> parts = absl::StrSplit(Stem(file_name), '-');
  std::vector<int> v;
  for (absl::string_view part : parts) {
    if (part.size() != 2 || !AllDigits(part)) {
      return NotA(kCorpus, kPattern,
                  absl::StrCat("field ", v.size() + 1, " is ", Quoted(part), ", not two digits"));
    }
    v.push_back(Number(part));
  }
  if (v.size() != 7) return NotA(kCorpus, kPattern, absl::StrCat(v.size(), " fields instead of 7"));
  RavdessName n{v[0], v[1], v[2], v[3], v[4], v[5], v[6]};
  auto check = [&](int value, int lo, int hi, const char* what) -> absl::Status {
    if (value < lo || value > hi) {
      return NotA(kCorpus, kPattern, absl::StrCat(what, " ", value, " is outside ", lo, "..", hi));
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

const std::vector<std::string>& CremaDEmotions() {
  static const auto* kEmotions =
      new std::vector<std::string>{"anger", "disgust", "fear", "happy", "neutral", "sad"};
  return *kEmotions;
}

absl::StatusOr<CremaDName> ParseCremaDName(absl::string_view file_name) {
  constexpr absl::string_view kCorpus = "CREMA-D", kPattern = "AAAA_SSS_EEE_LL";
  static const auto* kSentences = new std::vector<std::string>{
      "IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI"};
  static const auto* kEmotionCodes =
      new std::vector<std::string>{"ANG", "DIS", "FEA", "HAP", "NEU", "SAD"};
  static const auto* kLevels = new std::vector<std::string>{"LO", "MD", "HI", "XX"};
  ASSIGN_OR_RETURN(std::vector<absl::string_view> f, Fields(file_name, 4, kCorpus, kPattern));
  CremaDName n;
  if (f[0].size() != 4 || !AllDigits(f[0])) {
    return NotA(kCorpus, kPattern, absl::StrCat("actor ", Quoted(f[0]), " is not four digits"));
  }
  n.actor = Number(f[0]);
  if (n.actor < 1001 || n.actor > 1091) {
    return NotA(kCorpus, kPattern, absl::StrCat("actor ", n.actor, " is outside 1001..1091"));
  }
  ASSIGN_OR_RETURN(int sentence, OneOf(kCorpus, kPattern, "sentence", f[1], *kSentences));
  n.sentence = (*kSentences)[sentence];
  ASSIGN_OR_RETURN(n.emotion, OneOf(kCorpus, kPattern, "emotion", f[2], *kEmotionCodes));
  ASSIGN_OR_RETURN(int level, OneOf(kCorpus, kPattern, "level", f[3], *kLevels));
  n.level = (*kLevels)[level];
  return n;
}

const std::vector<std::string>& TessEmotions() {
  static const auto* kEmotions = new std::vector<std::string>{
      "angry", "disgust", "fear", "happy", "neutral", "pleasant_surprise", "sad"};
  return *kEmotions;
}

absl::StatusOr<TessName> ParseTessName(absl::string_view file_name) {
  constexpr absl::string_view kCorpus = "TESS", kPattern = "SSS_word_emotion";
  static const auto* kSpeakers = new std::vector<std::string>{"OAF", "YAF"};
  static const auto* kEmotionCodes =
      new std::vector<std::string>{"angry", "disgust", "fear", "happy", "neutral", "ps", "sad"};
  ASSIGN_OR_RETURN(std::vector<absl::string_view> f, Fields(file_name, 3, kCorpus, kPattern));
  TessName n;
  ASSIGN_OR_RETURN(int speaker, OneOf(kCorpus, kPattern, "speaker", f[0], *kSpeakers));
  n.speaker = (*kSpeakers)[speaker];
  if (!AllLower(f[1])) {
    return NotA(kCorpus, kPattern,
                absl::StrCat("word ", Quoted(f[1]), " is not lower-case letters"));
  }
  n.word = std::string(f[1]);
  ASSIGN_OR_RETURN(n.emotion, OneOf(kCorpus, kPattern, "emotion", f[2], *kEmotionCodes));
  return n;
}

const std::vector<std::string>& SaveeEmotions() {
  static const auto* kEmotions = new std::vector<std::string>{
      "anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"};
  return *kEmotions;
}

bool IsSaveeSpeaker(absl::string_view name) {
  return name == "DC" || name == "JE" || name == "JK" || name == "KL";
}

absl::StatusOr<SaveeName> ParseSaveeName(absl::string_view file_name) {
  constexpr absl::string_view kCorpus = "SAVEE", kPattern = "SS_eNN";
  static const auto* kEmotionCodes =
      new std::vector<std::string>{"a", "d", "f", "h", "n", "sa", "su"};
  ASSIGN_OR_RETURN(std::vector<absl::string_view> f, Fields(file_name, 2, kCorpus, kPattern));
  SaveeName n;
  if (!IsSaveeSpeaker(f[0])) {
    return NotA(kCorpus, kPattern,
                absl::StrCat("speaker ", Quoted(f[0]), " is not one of DC JE JK KL"));
  }
  n.speaker = std::string(f[0]);
  // The emotion code is the letters before the two-digit sentence number.
  const absl::string_view code_and_number = f[1];
  if (code_and_number.size() < 3 ||
      !AllDigits(code_and_number.substr(code_and_number.size() - 2))) {
    return NotA(
        kCorpus, kPattern,
        absl::StrCat(Quoted(code_and_number), " does not end in a two-digit sentence number"));
  }
  const absl::string_view code = code_and_number.substr(0, code_and_number.size() - 2);
  ASSIGN_OR_RETURN(n.emotion, OneOf(kCorpus, kPattern, "emotion", code, *kEmotionCodes));
  n.sentence = Number(code_and_number.substr(code_and_number.size() - 2));
  const int last = code == "n" ? 30 : 15;
  if (n.sentence < 1 || n.sentence > last) {
    return NotA(
        kCorpus, kPattern,
        absl::StrCat("sentence ", n.sentence, " of emotion '", code, "' is outside 1..", last));
  }
  return n;
}

const std::vector<std::string>& EmoDbEmotions() {
  static const auto* kEmotions = new std::vector<std::string>{
      "anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"};
  return *kEmotions;
}

absl::StatusOr<EmoDbName> ParseEmoDbName(absl::string_view file_name) {
  constexpr absl::string_view kCorpus = "EmoDB", kPattern = "SSTTTEV";
  static const auto* kSpeakers =
      new std::vector<std::string>{"03", "08", "09", "10", "11", "12", "13", "14", "15", "16"};
  static const auto* kTexts = new std::vector<std::string>{"a01", "a02", "a04", "a05", "a07",
                                                           "b01", "b02", "b03", "b09", "b10"};
  static const auto* kEmotionCodes =
      new std::vector<std::string>{"W", "L", "E", "A", "F", "T", "N"};
  const absl::string_view stem = Stem(file_name);
  if (stem.size() != 7) {
    return NotA(kCorpus, kPattern, absl::StrCat(stem.size(), " characters instead of 7"));
  }
  EmoDbName n;
  ASSIGN_OR_RETURN(int speaker, OneOf(kCorpus, kPattern, "speaker", stem.substr(0, 2), *kSpeakers));
  n.speaker = Number((*kSpeakers)[speaker]);
  ASSIGN_OR_RETURN(int text, OneOf(kCorpus, kPattern, "text", stem.substr(2, 3), *kTexts));
  n.text = (*kTexts)[text];
  ASSIGN_OR_RETURN(n.emotion,
                   OneOf(kCorpus, kPattern, "emotion", stem.substr(5, 1), *kEmotionCodes));
  if (!absl::ascii_islower(stem[6])) {
    return NotA(kCorpus, kPattern,
                absl::StrCat("version ", Quoted(stem.substr(6)), " is not a..z"));
  }
  n.version = stem[6];
  return n;
}

}  // namespace ftune::data
