// The corpus file-name parsers, each tested the same way: every field of a good name, a table of
// malformed names with the reason named, and randomised properties over thousands of generated
// names — every valid name parses back to its fields, a mutated name either is rejected or is
// exactly the canonical name of what it parsed to (the parsers accept nothing loosely), random
// bytes never crash a parser, and no name is accepted by two corpora (so auto-detection cannot
// confuse them).
#include "worker/data/corpus_names.h"

#include <functional>
#include <random>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ftune::data {
namespace {

using ::testing::HasSubstr;

constexpr int kTrials = 4000;

// ---- Canonical names from fields (the inverse of each parser) ----

std::string Format(const RavdessName& n) {
  return absl::StrFormat("%02d-%02d-%02d-%02d-%02d-%02d-%02d.wav", n.modality, n.vocal_channel,
                         n.emotion, n.intensity, n.statement, n.repetition, n.actor);
}
std::string Format(const CremaDName& n) {
  static const char* kCodes[] = {"ANG", "DIS", "FEA", "HAP", "NEU", "SAD"};
  return absl::StrFormat("%d_%s_%s_%s.wav", n.actor, n.sentence, kCodes[n.emotion], n.level);
}
std::string Format(const TessName& n) {
  static const char* kCodes[] = {"angry", "disgust", "fear", "happy", "neutral", "ps", "sad"};
  return absl::StrFormat("%s_%s_%s.wav", n.speaker, n.word, kCodes[n.emotion]);
}
std::string Format(const SaveeName& n) {
  static const char* kCodes[] = {"a", "d", "f", "h", "n", "sa", "su"};
  return absl::StrFormat("%s_%s%02d.wav", n.speaker, kCodes[n.emotion], n.sentence);
}
std::string Format(const EmoDbName& n) {
  static const char* kCodes[] = {"W", "L", "E", "A", "F", "T", "N"};
  return absl::StrFormat("%02d%s%s%c.wav", n.speaker, n.text, kCodes[n.emotion], n.version);
}

template <typename T>
const T& Pick(const std::vector<T>& values, std::mt19937& rng) {
  return values[std::uniform_int_distribution<size_t>(0, values.size() - 1)(rng)];
}
int Between(int lo, int hi, std::mt19937& rng) {
  return std::uniform_int_distribution<int>(lo, hi)(rng);
}

// ---- Random valid names ----

std::string RandomRavdess(std::mt19937& rng) {
  RavdessName n{Between(1, 3, rng), Between(1, 2, rng), Between(1, 8, rng), Between(1, 2, rng),
                Between(1, 2, rng), Between(1, 2, rng), Between(1, 99, rng)};
  return Format(n);
}
std::string RandomCremaD(std::mt19937& rng) {
  static const std::vector<std::string> kSentences = {"IEO", "TIE", "IOM", "IWW", "TAI", "MTI",
                                                      "IWL", "ITH", "DFA", "ITS", "TSI", "WSI"};
  CremaDName n{Between(1001, 1091, rng), Pick(kSentences, rng), Between(0, 5, rng),
               Pick(std::vector<std::string>{"LO", "MD", "HI", "XX"}, rng)};
  return Format(n);
}
std::string RandomTess(std::mt19937& rng) {
  std::string word;
  for (int i = Between(1, 8, rng); i > 0; --i) word += static_cast<char>('a' + Between(0, 25, rng));
  TessName n{Pick(std::vector<std::string>{"OAF", "YAF"}, rng), word, Between(0, 6, rng)};
  return Format(n);
}
std::string RandomSavee(std::mt19937& rng) {
  SaveeName n{Pick(std::vector<std::string>{"DC", "JE", "JK", "KL"}, rng), Between(0, 6, rng), 0};
  n.sentence = Between(1, n.emotion == 4 ? 30 : 15, rng);
  return Format(n);
}
std::string RandomEmoDb(std::mt19937& rng) {
  EmoDbName n{Pick(std::vector<int>{3, 8, 9, 10, 11, 12, 13, 14, 15, 16}, rng),
              Pick(std::vector<std::string>{"a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03",
                                            "b09", "b10"},
                   rng),
              Between(0, 6, rng), static_cast<char>('a' + Between(0, 25, rng))};
  return Format(n);
}

// One corpus's parser seen uniformly: OK and the canonical name of what it parsed, or the error.
struct Corpus {
  const char* name;
  std::function<std::string(std::mt19937&)> random_name;
  std::function<absl::StatusOr<std::string>(const std::string&)> canonical;
};

template <typename Parse>
std::function<absl::StatusOr<std::string>(const std::string&)> Canonical(Parse parse) {
  return [parse](const std::string& name) -> absl::StatusOr<std::string> {
    auto parsed = parse(name);
    if (!parsed.ok()) return parsed.status();
    return Format(*parsed);
  };
}

std::vector<Corpus> Corpora() {
  return {{"RAVDESS", RandomRavdess, Canonical(ParseRavdessName)},
          {"CREMA-D", RandomCremaD, Canonical(ParseCremaDName)},
          {"TESS", RandomTess, Canonical(ParseTessName)},
          {"SAVEE", RandomSavee, Canonical(ParseSaveeName)},
          {"EmoDB", RandomEmoDb, Canonical(ParseEmoDbName)}};
}

// A random edit: replace, insert or delete one byte, swap two, or cut the name short.
std::string Mutate(std::string name, std::mt19937& rng) {
  static const std::string kAlphabet = "0123456789_-.abdefhnpsvwxAEFLNTWDCJKOY\x80 \t";
  const int edits = Between(1, 3, rng);
  for (int e = 0; e < edits; ++e) {
    const size_t at = name.empty() ? 0 : Between(0, static_cast<int>(name.size()) - 1, rng);
    switch (Between(0, 4, rng)) {
      case 0:
        if (!name.empty())
          name[at] = Pick(std::vector<char>(kAlphabet.begin(), kAlphabet.end()), rng);
        break;
      case 1:
        name.insert(name.begin() + at,
                    kAlphabet[Between(0, static_cast<int>(kAlphabet.size()) - 1, rng)]);
        break;
      case 2:
        if (!name.empty()) name.erase(at, 1);
        break;
      case 3:
        if (name.size() > 1) {
          std::swap(name[at], name[Between(0, static_cast<int>(name.size()) - 1, rng)]);
        }
        break;
      default:
        name.resize(at);
    }
  }
  return name;
}

TEST(CorpusNamesTest, EveryValidNameParsesBackToItself) {
  std::mt19937 rng(1);
  for (const Corpus& corpus : Corpora()) {
    for (int i = 0; i < kTrials; ++i) {
      const std::string name = corpus.random_name(rng);
      auto canonical = corpus.canonical(name);
      ASSERT_TRUE(canonical.ok()) << corpus.name << " " << name << ": " << canonical.status();
      EXPECT_EQ(*canonical, name) << corpus.name;
    }
  }
}

TEST(CorpusNamesTest, AMutatedNameIsRejectedOrExactlyCanonical) {
  std::mt19937 rng(2);
  for (const Corpus& corpus : Corpora()) {
    int rejected = 0;
    for (int i = 0; i < kTrials; ++i) {
      const std::string name = Mutate(corpus.random_name(rng), rng);
      auto canonical = corpus.canonical(name);
      if (!canonical.ok()) {
        ++rejected;
        EXPECT_EQ(canonical.status().code(), absl::StatusCode::kInvalidArgument);
        EXPECT_THAT(std::string(canonical.status().message()),
                    HasSubstr(absl::StrCat("not a ", corpus.name, " name")));
        continue;
      }
      // Accepted: only a different extension (ignored) may separate it from the canonical name.
      const std::string stem = name.substr(0, name.rfind('.'));
      EXPECT_EQ(canonical->substr(0, canonical->rfind('.')), stem) << corpus.name << " " << name;
    }
    EXPECT_GT(rejected, kTrials / 2) << corpus.name;
  }
}

TEST(CorpusNamesTest, RandomBytesNeverCrashAParser) {
  std::mt19937 rng(3);
  for (int i = 0; i < kTrials; ++i) {
    std::string bytes(Between(0, 24, rng), '\0');
    for (char& c : bytes) c = static_cast<char>(Between(0, 255, rng));
    for (const Corpus& corpus : Corpora()) {
      auto canonical = corpus.canonical(bytes);
      if (canonical.ok()) continue;
      // The reason prints whatever the bytes were.
      EXPECT_FALSE(canonical.status().message().empty());
    }
  }
}

TEST(CorpusNamesTest, NoNameBelongsToTwoCorpora) {
  std::mt19937 rng(4);
  const std::vector<Corpus> corpora = Corpora();
  for (const Corpus& owner : corpora) {
    for (int i = 0; i < kTrials / 4; ++i) {
      const std::string name = owner.random_name(rng);
      for (const Corpus& other : corpora) {
        if (&other == &owner) continue;
        EXPECT_FALSE(other.canonical(name).ok())
            << owner.name << " name " << name << " also parses as " << other.name;
      }
    }
  }
}

// ---- Each parser's fields and reasons ----

struct BadName {
  const char* name;
  const char* why;
};

template <typename Parse>
void ExpectRejected(Parse parse, const std::vector<BadName>& cases) {
  for (const BadName& c : cases) {
    auto parsed = parse(c.name);
    ASSERT_FALSE(parsed.ok()) << c.name;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(c.why)) << c.name;
  }
}

TEST(CremaDNameTest, FieldsAndReasons) {
  auto n = ParseCremaDName("1091_WSI_FEA_HI.flac");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->actor, 1091);
  EXPECT_EQ(n->sentence, "WSI");
  EXPECT_EQ(CremaDEmotions()[n->emotion], "fear");
  EXPECT_EQ(n->level, "HI");
  EXPECT_EQ(CremaDEmotions(),
            (std::vector<std::string>{"anger", "disgust", "fear", "happy", "neutral", "sad"}));
  ExpectRejected(ParseCremaDName,
                 {{"1001_DFA_ANG.wav", "3 '_'-separated fields instead of 4"},
                  {"1000_DFA_ANG_XX.wav", "actor 1000 is outside 1001..1091"},
                  {"1092_DFA_ANG_XX.wav", "actor 1092"},
                  {"10a1_DFA_ANG_XX.wav", "actor '10a1' is not four digits"},
                  {"1001_XYZ_ANG_XX.wav", "sentence 'XYZ' is not one of"},
                  {"1001_DFA_ang_XX.wav", "emotion 'ang' is not one of ANG DIS FEA HAP NEU SAD"},
                  {"1001_DFA_SUR_XX.wav", "emotion 'SUR'"},
                  {"1001_DFA_ANG_ZZ.wav", "level 'ZZ' is not one of LO MD HI XX"},
                  {"", "1 '_'-separated fields"}});
}

TEST(TessNameTest, FieldsAndReasons) {
  auto n = ParseTessName("YAF_germ_ps.wav");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->speaker, "YAF");
  EXPECT_EQ(n->word, "germ");
  EXPECT_EQ(TessEmotions()[n->emotion], "pleasant_surprise");
  ExpectRejected(ParseTessName, {{"MAF_back_angry.wav", "speaker 'MAF' is not one of OAF YAF"},
                                 {"OAF_Back_angry.wav", "word 'Back' is not lower-case letters"},
                                 {"OAF__angry.wav", "word '' is not lower-case letters"},
                                 {"OAF_back_surprised.wav", "emotion 'surprised' is not one of"},
                                 {"OAF_back.wav", "2 '_'-separated fields instead of 3"},
                                 {"OAF_back_angry_2.wav", "4 '_'-separated fields"}});
}

TEST(SaveeNameTest, FieldsAndReasons) {
  auto n = ParseSaveeName("KL_su15.wav");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->speaker, "KL");
  EXPECT_EQ(SaveeEmotions()[n->emotion], "surprise");
  EXPECT_EQ(n->sentence, 15);
  EXPECT_TRUE(ParseSaveeName("DC_n30.wav").ok());
  ExpectRejected(ParseSaveeName, {{"XX_a01.wav", "speaker 'XX' is not one of DC JE JK KL"},
                                  {"DC_a16.wav", "sentence 16 of emotion 'a' is outside 1..15"},
                                  {"DC_n31.wav", "sentence 31 of emotion 'n' is outside 1..30"},
                                  {"DC_a00.wav", "sentence 0"},
                                  {"DC_x01.wav", "emotion 'x' is not one of a d f h n sa su"},
                                  {"DC_a1.wav", "'a1' does not end in a two-digit sentence number"},
                                  {"a01.wav", "1 '_'-separated fields instead of 2"}});
}

TEST(EmoDbNameTest, FieldsAndReasons) {
  auto n = ParseEmoDbName("16b10Ld.wav");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->speaker, 16);
  EXPECT_EQ(n->text, "b10");
  EXPECT_EQ(EmoDbEmotions()[n->emotion], "boredom");
  EXPECT_EQ(n->version, 'd');
  ExpectRejected(ParseEmoDbName, {{"05a01Fa.wav", "speaker '05' is not one of"},
                                  {"03a03Fa.wav", "text 'a03' is not one of"},
                                  {"03a01Xa.wav", "emotion 'X' is not one of W L E A F T N"},
                                  {"03a01FA.wav", "version 'A' is not a..z"},
                                  {"03a01Fab.wav", "8 characters instead of 7"},
                                  {"03a01F.wav", "6 characters"}});
}

}  // namespace
}  // namespace ftune::data
