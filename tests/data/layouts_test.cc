// The dataset layouts people already have, each built from synthetic audio: Hugging Face
// audiofolder (metadata.csv or label folders, split folders), CREMA-D, TESS, SAVEE and EmoDB
// (auto-detected and explicit, each with its speaker rule), and multi-corpus jobs with a label
// map and speakers kept apart per corpus.
#include <filesystem>
#include <set>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/data/audio_files.h"
#include "tests/support/process.h"
#include "worker/data/dataset.h"

namespace ftune::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::WriteText;
using v1::DatasetSpec;

class LayoutsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = ftune::testing::MakeTempDir("layouts_test"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void Tone(const std::string& rel) {
    testing::ToneSpec spec;
    spec.seconds = 0.1 + 0.01 * (n_++ % 10);
    testing::WriteTone(dir_ + "/" + rel, spec);
  }

  DatasetSpec Spec(const std::string& rel = "",
                   v1::DatasetLayout layout = v1::DATASET_LAYOUT_AUTO) const {
    DatasetSpec spec;
    spec.set_path(rel.empty() ? dir_ : dir_ + "/" + rel);
    spec.set_layout(layout);
    return spec;
  }

  absl::StatusOr<Dataset> Load(const DatasetSpec& spec, std::vector<std::string> labels = {}) {
    return LoadDataset(spec, labels, 42, &cache_, 2);
  }
  absl::StatusOr<Dataset> Load(DatasetRequest request) { return LoadDataset(request, &cache_, 2); }

  static std::map<std::string, std::string> Skipped(const Dataset& ds) {
    std::map<std::string, std::string> out;
    for (const auto& s : ds.summary.skipped()) out[s.path()] = s.reason();
    return out;
  }

  // Train and eval never share a speaker, and every usable clip is in one of them.
  static void ExpectSpeakerIndependent(const Dataset& ds) {
    std::set<std::string> train, eval;
    for (const Clip& c : ds.train) train.insert(c.speaker);
    for (const Clip& c : ds.eval) eval.insert(c.speaker);
    EXPECT_FALSE(eval.empty());
    for (const auto& s : eval) EXPECT_EQ(train.count(s), 0u) << s;
    EXPECT_EQ(ds.train.size() + ds.eval.size(), ds.summary.usable_files());
  }

  // CREMA-D under `folder`: `actors` actors from 1001, each emotion code once.
  void MakeCremaD(const std::string& folder, int actors,
                  std::vector<std::string> emotions = {"ANG", "DIS", "FEA", "HAP", "NEU", "SAD"}) {
    for (int a = 0; a < actors; ++a) {
      for (const std::string& e : emotions) {
        Tone(absl::StrFormat("%s/%d_IEO_%s_%s.wav", folder, 1001 + a, e, a % 2 ? "HI" : "XX"));
      }
    }
  }

  std::string dir_;
  AudioCache cache_;
  int n_ = 0;
};

TEST_F(LayoutsTest, CremaDIsDetectedAndSplitBySpeaker) {
  MakeCremaD("AudioWAV", 5);
  Tone("AudioWAV/1001_IEO_ANG.wav");                      // a field short
  WriteText(dir_ + "/AudioWAV/1002_DFA_NEU_XX.wav", "");  // empty file, as in the real corpus
  auto ds = Load(Spec());
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->summary.layout(), "crema-d");
  EXPECT_EQ(ds->summary.split(), "speaker");
  EXPECT_THAT(ds->labels, ElementsAre("anger", "disgust", "fear", "happy", "neutral", "sad"));
  EXPECT_EQ(ds->summary.usable_files(), 30u);
  EXPECT_EQ(ds->summary.speakers().at("1003"), 6u);
  EXPECT_EQ(ds->summary.eval_speakers_size(), 1);  // 20% of 5
  ExpectSpeakerIndependent(*ds);
  auto skipped = Skipped(*ds);
  ASSERT_EQ(skipped.size(), 2u);
  EXPECT_THAT(skipped["AudioWAV/1001_IEO_ANG.wav"], HasSubstr("not a CREMA-D name"));
  EXPECT_FALSE(skipped["AudioWAV/1002_DFA_NEU_XX.wav"].empty());
}

TEST_F(LayoutsTest, TessIsDetectedInItsEmotionFoldersAndHoldsOneTalkerOut) {
  for (const char* speaker : {"OAF", "YAF"}) {
    for (const char* emotion : {"angry", "fear", "ps", "neutral"}) {
      for (const char* word : {"back", "bar", "base"}) {
        Tone(absl::StrFormat("TESS/%s_%s/%s_%s_%s.wav", speaker, emotion, speaker, word, emotion));
      }
    }
  }
  auto ds = Load(Spec("TESS"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->summary.layout(), "tess");
  EXPECT_THAT(ds->labels, ElementsAre("angry", "fear", "neutral", "pleasant_surprise"));
  // Two talkers: the speaker split holds one out.
  EXPECT_EQ(ds->summary.eval_speakers_size(), 1);
  EXPECT_EQ(ds->eval.size(), 12u);
  ExpectSpeakerIndependent(*ds);
}

TEST_F(LayoutsTest, SaveeInBothItsForms) {
  for (const char* speaker : {"DC", "JE", "JK", "KL"}) {
    for (const char* code : {"a", "h", "n", "sa"}) {
      for (int sentence = 1; sentence <= 2; ++sentence) {
        // Two speakers as the flat DC_a01.wav, two as the original AudioData/JE/a01.wav.
        const bool flat = std::string(speaker) < "JF";
        Tone(flat ? absl::StrFormat("ALL/%s_%s%02d.wav", speaker, code, sentence)
                  : absl::StrFormat("AudioData/%s/%s%02d.wav", speaker, code, sentence));
      }
    }
  }
  Tone("AudioData/XY/a01.wav");  // not a SAVEE speaker folder
  auto ds = Load(Spec());
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->summary.layout(), "savee");
  EXPECT_THAT(ds->labels, ElementsAre("anger", "happiness", "neutral", "sadness"));
  EXPECT_EQ(ds->summary.speakers_size(), 4);
  EXPECT_EQ(ds->summary.speakers().at("JK"), 8u);
  EXPECT_EQ(ds->summary.eval_speakers_size(), 1);  // round(0.2 * 4)
  ExpectSpeakerIndependent(*ds);
  EXPECT_THAT(Skipped(*ds)["AudioData/XY/a01.wav"], HasSubstr("not a SAVEE name"));
}

TEST_F(LayoutsTest, EmoDbIsDetectedAndSplitBySpeaker) {
  for (const char* speaker : {"03", "08", "09", "10", "11", "12", "13", "14", "15", "16"}) {
    for (const char* emotion : {"W", "L", "N"})
      Tone(absl::StrFormat("wav/%sa01%sa.wav", speaker, emotion));
  }
  auto ds = Load(Spec());
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->summary.layout(), "emodb");
  EXPECT_THAT(ds->labels, ElementsAre("anger", "boredom", "neutral"));
  EXPECT_EQ(ds->summary.eval_speakers_size(), 2);
  ExpectSpeakerIndependent(*ds);
}

TEST_F(LayoutsTest, AnExplicitLayoutIsReadByItsRulesOnly) {
  MakeCremaD("c", 2, {"ANG", "SAD"});
  // Read as EmoDB, nothing fits: every file is skipped naming EmoDB's rule.
  auto as_emodb = Load(Spec("c", v1::DATASET_LAYOUT_EMODB));
  ASSERT_FALSE(as_emodb.ok());
  EXPECT_THAT(std::string(as_emodb.status().message()), HasSubstr("not a EmoDB name"));
  // An explicit layout also overrides detection.
  Tone("d/x/one.wav");
  Tone("d/x/two.wav");
  Tone("d/y/three.wav");
  Tone("d/y/four.wav");
  auto folders = Load(Spec("d", v1::DATASET_LAYOUT_FOLDERS));
  ASSERT_TRUE(folders.ok()) << folders.status();
  EXPECT_EQ(folders->summary.layout(), "folders");
}

TEST_F(LayoutsTest, MostlyForeignNamesAreNotANamedCorpus) {
  // One CREMA-D name among three others is not enough to read the folder as CREMA-D.
  Tone("happy/1001_IEO_HAP_XX.wav");
  Tone("happy/a.wav");
  Tone("sad/b.wav");
  Tone("sad/c.wav");
  auto ds = Load(Spec());
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->summary.layout(), "folders");
}

// ---- Hugging Face audiofolder ----

TEST_F(LayoutsTest, AudioFolderMetadataWithSplitFolders) {
  WriteText(dir_ + "/metadata.csv",
            "file_name,label,speaker,transcription\n"
            "train/a1.wav,yes,s1,hello\n"
            "train/a2.wav,no,s1,\n"
            "train/a3.wav,yes,s2,\"a, b\"\n"
            "train/a4.wav,no,s2,x\n"
            "validation/b1.wav,yes,s3,x\n"
            "validation/b2.wav,no,s3,x\n"
            "test/c1.wav,yes,s4,x\n"
            "train/missing.wav,no,s1,x\n"
            "elsewhere/d1.wav,yes,s5,x\n");
  for (const char* f :
       {"train/a1.wav", "train/a2.wav", "train/a3.wav", "train/a4.wav", "validation/b1.wav",
        "validation/b2.wav", "test/c1.wav", "elsewhere/d1.wav", "train/unlisted.wav"}) {
    Tone(f);
  }
  auto ds = Load(Spec());
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->summary.layout(), "audiofolder");
  EXPECT_EQ(ds->summary.split(), "manifest");
  EXPECT_THAT(ds->labels, ElementsAre("no", "yes"));
  EXPECT_EQ(ds->train.size(), 4u);
  EXPECT_EQ(ds->eval.size(), 2u);
  EXPECT_EQ(ds->summary.speakers().at("s3"), 2u);
  auto skipped = Skipped(*ds);
  EXPECT_THAT(skipped["test/c1.wav"], HasSubstr("test split, which is left out"));
  EXPECT_THAT(skipped["train/missing.wav"], HasSubstr("file not found"));
  EXPECT_THAT(skipped["elsewhere/d1.wav"], HasSubstr("not inside a split folder"));
  EXPECT_THAT(skipped["train/unlisted.wav"], HasSubstr("not listed in metadata.csv"));
}

TEST_F(LayoutsTest, AudioFolderLabelFoldersWithTestAsTheEvaluationSet) {
  for (const char* split : {"train", "test"}) {
    for (const char* label : {"cat", "dog"}) {
      for (int i = 0; i < (std::string(split) == "train" ? 3 : 1); ++i) {
        Tone(absl::StrFormat("%s/%s/%d.wav", split, label, i));
      }
    }
  }
  WriteText(dir_ + "/README.md", "about");
  auto ds = Load(Spec());
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->summary.layout(), "audiofolder");
  EXPECT_THAT(ds->labels, ElementsAre("cat", "dog"));
  // Without validation/, test/ is the evaluation set.
  EXPECT_EQ(ds->train.size(), 6u);
  EXPECT_EQ(ds->eval.size(), 2u);
  EXPECT_THAT(Skipped(*ds)["README.md"], HasSubstr("not inside a split folder"));
}

TEST_F(LayoutsTest, AudioFolderMetadataPerSplitFolderAndWithoutSplits) {
  WriteText(dir_ + "/per-split/train/metadata.csv",
            "file_name,label\n1.wav,a\n2.wav,b\n3.wav,a\n4.wav,b\n");
  WriteText(dir_ + "/per-split/validation/metadata.csv", "label,file_name\nb,x/5.wav\na,6.wav\n");
  for (const char* f : {"train/1.wav", "train/2.wav", "train/3.wav", "train/4.wav",
                        "validation/x/5.wav", "validation/6.wav"}) {
    Tone(std::string("per-split/") + f);
  }
  auto ds = Load(Spec("per-split"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->summary.layout(), "audiofolder");
  EXPECT_EQ(ds->train.size(), 4u);
  EXPECT_EQ(ds->eval.size(), 2u);

  // One metadata.csv and no split folders: the job splits (stratified random: no speakers).
  std::string rows = "file_name,label\n";
  for (int i = 0; i < 10; ++i) {
    Tone(absl::StrFormat("flat/clips/%d.wav", i));
    rows += absl::StrFormat("clips/%d.wav,%s\n", i, i % 2 ? "up" : "down");
  }
  WriteText(dir_ + "/flat/metadata.csv", rows);
  auto flat = Load(Spec("flat"));
  ASSERT_TRUE(flat.ok()) << flat.status();
  EXPECT_EQ(flat->summary.layout(), "audiofolder");
  EXPECT_EQ(flat->summary.split(), "random");
  EXPECT_EQ(flat->eval.size(), 2u);
}

TEST_F(LayoutsTest, AudioFolderProblemsAreNamed) {
  WriteText(dir_ + "/nolabel/metadata.csv", "file_name,emotion\n1.wav,a\n");
  Tone("nolabel/1.wav");
  auto nolabel = Load(Spec("nolabel"));
  ASSERT_FALSE(nolabel.ok());
  EXPECT_EQ(nolabel.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(nolabel.status().message()),
              HasSubstr("needs a file_name and a label column"));

  WriteText(dir_ + "/jsonl/metadata.jsonl", "{\"file_name\": \"1.wav\", \"label\": \"a\"}\n");
  Tone("jsonl/1.wav");
  auto jsonl = Load(Spec("jsonl"));
  ASSERT_FALSE(jsonl.ok());
  EXPECT_THAT(std::string(jsonl.status().message()), HasSubstr("metadata.jsonl is not read"));

  // The split must be declared to be used as one.
  Tone("plain/a/1.wav");
  Tone("plain/b/1.wav");
  DatasetSpec spec = Spec("plain", v1::DATASET_LAYOUT_AUDIOFOLDER);
  spec.set_split(v1::SPLIT_STRATEGY_MANIFEST);
  auto undeclared = Load(spec);
  ASSERT_FALSE(undeclared.ok());
  EXPECT_THAT(std::string(undeclared.status().message()), HasSubstr("declares none"));
}

// ---- Several corpora ----

TEST_F(LayoutsTest, MultiCorpusMapsLabelsAndKeepsSpeakersApartPerCorpus) {
  // RAVDESS: 5 actors x (neutral, happy, angry, fearful) x 2 statements.
  for (int actor = 1; actor <= 5; ++actor) {
    for (int emotion : {1, 3, 5, 6}) {
      for (int statement = 1; statement <= 2; ++statement) {
        Tone(absl::StrFormat("ravdess/Actor_%02d/03-01-%02d-01-%02d-01-%02d.wav", actor, emotion,
                             statement, actor));
      }
    }
  }
  MakeCremaD("crema", 5, {"ANG", "FEA", "HAP", "NEU", "DIS"});
  DatasetRequest request;
  request.corpora = {Spec("ravdess"), Spec("crema")};
  request.label_map = {{"anger", "angry"}, {"fear", "fearful"}};
  auto ds = Load(request);
  ASSERT_TRUE(ds.ok()) << ds.status();
  // RAVDESS's order, then CREMA-D's labels that are new after mapping.
  EXPECT_THAT(ds->labels, ElementsAre("neutral", "happy", "angry", "fearful", "disgust"));
  const auto& s = ds->summary;
  EXPECT_EQ(s.layout(), "ravdess+crema-d");
  EXPECT_EQ(s.split(), "speaker");
  ASSERT_EQ(s.corpora_size(), 2);
  EXPECT_EQ(s.corpora(0).tag(), "ravdess");
  EXPECT_EQ(s.corpora(1).tag(), "crema-d");
  EXPECT_EQ(s.corpora(1).layout(), "crema-d");
  EXPECT_EQ(s.usable_files(), 40u + 25u);
  EXPECT_EQ(s.classes().at("angry"), 10u + 5u);
  EXPECT_EQ(s.classes().at("disgust"), 5u);
  EXPECT_EQ(s.speakers().at("ravdess/Actor_01"), 8u);
  EXPECT_EQ(s.speakers().at("crema-d/1001"), 5u);
  // Each corpus split on its own: one of 5 speakers held out from each.
  EXPECT_EQ(s.corpora(0).eval_speakers_size(), 1);
  EXPECT_EQ(s.corpora(1).eval_speakers_size(), 1);
  EXPECT_EQ(s.eval_speakers_size(), 2);
  EXPECT_EQ(s.train_files() + s.eval_files(), 65u);
  ExpectSpeakerIndependent(*ds);
  // Clips keep their own paths; ids are the joint labels.
  for (const Clip& c : ds->train) EXPECT_LT(c.label, 5);
}

TEST_F(LayoutsTest, MultiCorpusWithFixedLabelsAndRepeatedLayouts) {
  MakeCremaD("one", 3, {"ANG", "SAD"});
  MakeCremaD("two", 3, {"ANG", "SAD", "HAP"});
  Tone("two/broken_name.wav");
  DatasetRequest request;
  request.corpora = {Spec("one"), Spec("two")};
  request.labels = {"sad", "anger"};
  auto ds = Load(request);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_THAT(ds->labels, ElementsAre("sad", "anger"));
  EXPECT_EQ(ds->summary.corpora(1).tag(), "crema-d#2");
  EXPECT_EQ(ds->summary.speakers().at("crema-d#2/1001"), 2u);
  auto skipped = Skipped(*ds);
  EXPECT_THAT(skipped["crema-d#2/broken_name.wav"], HasSubstr("not a CREMA-D name"));
  EXPECT_THAT(skipped["crema-d#2/1001_IEO_HAP_XX.wav"], HasSubstr("not in the job's labels"));
}

TEST_F(LayoutsTest, ALabelMapKeyNoCorpusHasIsAnError) {
  MakeCremaD("crema", 2, {"ANG", "SAD"});
  DatasetRequest request;
  request.corpora = {Spec("crema")};
  request.label_map = {{"angry", "anger"}};
  auto ds = Load(request);
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ds.status().message()),
              HasSubstr("label_map: 'angry' is not a label of any dataset (found: anger,sad)"));
}

}  // namespace
}  // namespace ftune::data
