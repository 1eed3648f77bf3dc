// Datasets: each layout found and read, RAVDESS names parsed strictly, bad files skipped with
// their reasons, splits that never share a speaker, and failures that name the problem.
#include "worker/data/dataset.h"

#include <sndfile.h>

#include <filesystem>
#include <set>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/data/audio_files.h"
#include "tests/support/process.h"

namespace ftune::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::ToneSpec;
using testing::WriteText;
using testing::WriteTone;
using v1::DatasetSpec;

std::string Ravdess(int emotion, int actor, int statement = 1, int rep = 1, int channel = 1,
                    int intensity = 1) {
  return absl::StrFormat("03-%02d-%02d-%02d-%02d-%02d-%02d.wav", channel, emotion, intensity,
                         statement, rep, actor);
}

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = ftune::testing::MakeTempDir("dataset_test"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // A short tone whose length varies with `n`, so durations differ.
  void Tone(const std::string& rel, int n = 0, ToneSpec spec = {}) {
    spec.seconds = 0.1 + 0.01 * (n % 10);
    WriteTone(dir_ + "/" + rel, spec);
  }

  // `actors` actors, each with every emotion in `emotions` twice (statements 1 and 2).
  void MakeRavdess(int actors, std::vector<int> emotions = {1, 2, 3, 4, 5, 6, 7, 8}) {
    int n = 0;
    for (int a = 1; a <= actors; ++a) {
      for (int e : emotions) {
        for (int s = 1; s <= 2; ++s) {
          Tone(absl::StrFormat("Actor_%02d/%s", a, Ravdess(e, a, s)), n++);
        }
      }
    }
  }

  DatasetSpec Spec(const std::string& rel = "") const {
    DatasetSpec spec;
    spec.set_path(rel.empty() ? dir_ : dir_ + "/" + rel);
    return spec;
  }

  absl::StatusOr<Dataset> Load(const DatasetSpec& spec, std::vector<std::string> labels = {},
                               uint64_t seed = 42) {
    return LoadDataset(spec, labels, seed, &cache_, 2);
  }

  static std::map<std::string, std::string> Skipped(const Dataset& ds) {
    std::map<std::string, std::string> out;
    for (const auto& s : ds.summary.skipped()) out[s.path()] = s.reason();
    return out;
  }

  std::string dir_;
  AudioCache cache_;
};

TEST(RavdessNameTest, ParsesAllFields) {
  auto n = ParseRavdessName("03-01-06-02-01-02-12.wav");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->modality, 3);
  EXPECT_EQ(n->vocal_channel, 1);
  EXPECT_EQ(n->emotion, 6);
  EXPECT_EQ(RavdessEmotions()[n->emotion - 1], "fearful");
  EXPECT_EQ(n->intensity, 2);
  EXPECT_EQ(n->statement, 1);
  EXPECT_EQ(n->repetition, 2);
  EXPECT_EQ(n->actor, 12);
}

TEST(RavdessNameTest, RejectsMalformedNamesSayingWhy) {
  struct Case {
    const char* name;
    const char* why;
  } cases[] = {
      {"03-01-06-02-01-02.wav", "6 fields instead of 7"},
      {"03-01-06-02-01-02-12-01.wav", "8 fields instead of 7"},
      {"03-01-6-02-01-02-12.wav", "field 3 is '6'"},
      {"03-01-xx-02-01-02-12.wav", "field 3 is 'xx'"},
      {"03-01-09-02-01-02-12.wav", "emotion 9 is outside 1..8"},
      {"03-01-00-02-01-02-12.wav", "emotion 0"},
      {"03-03-01-01-01-01-01.wav", "vocal channel 3"},
      {"03-01-01-03-01-01-01.wav", "intensity 3"},
      {"03-01-01-01-01-01-00.wav", "actor 0"},
      {"04-01-01-01-01-01-01.wav", "modality 4"},
      {"03_01_01_01_01_01_01.wav", "field 1"},
      {"hello.wav", "field 1 is 'hello'"},
      {"", "field 1 is ''"},
  };
  for (const Case& c : cases) {
    auto n = ParseRavdessName(c.name);
    ASSERT_FALSE(n.ok()) << c.name;
    EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(n.status().message()), HasSubstr(c.why)) << c.name;
  }
}

TEST_F(DatasetTest, RavdessIsDetectedAndReadWithSkips) {
  MakeRavdess(5, {1, 3, 4, 5});
  WriteText(dir_ + "/Actor_01/README.txt", "hi");
  Tone("Actor_01/03-01-09-01-01-01-01.wav");            // emotion 09
  Tone("Actor_02/" + Ravdess(3, 7));                    // actor 07 in Actor_02/
  Tone("Actor_03/" + Ravdess(3, 3, 1, 1, /*song=*/2));  // song, excluded by default
  WriteText(dir_ + "/Actor_04/" + Ravdess(4, 4, 1, 2), "not audio at all");
  WriteText(dir_ + "/Actor_05/.DS_Store", "hidden files are ignored");
  auto ds = Load(Spec());
  ASSERT_TRUE(ds.ok()) << ds.status();
  const auto& s = ds->summary;
  EXPECT_EQ(s.layout(), "ravdess");
  EXPECT_EQ(s.split(), "speaker");
  EXPECT_THAT(ds->labels, ElementsAre("neutral", "happy", "sad", "angry"));
  EXPECT_EQ(s.total_files(), 5u * 4 * 2 + 5);
  EXPECT_EQ(s.usable_files(), 5u * 4 * 2);
  EXPECT_EQ(s.classes().at("happy"), 10u);
  EXPECT_EQ(s.speakers().at("Actor_03"), 8u);
  auto skipped = Skipped(*ds);
  ASSERT_EQ(skipped.size(), 5u);
  EXPECT_THAT(skipped["Actor_01/README.txt"], HasSubstr("not an audio file"));
  EXPECT_THAT(skipped["Actor_01/03-01-09-01-01-01-01.wav"], HasSubstr("emotion 9"));
  EXPECT_THAT(skipped["Actor_02/" + Ravdess(3, 7)], HasSubstr("Actor_02"));
  EXPECT_THAT(skipped["Actor_03/" + Ravdess(3, 3, 1, 1, 2)], HasSubstr("song"));
  EXPECT_THAT(skipped["Actor_04/" + Ravdess(4, 4, 1, 2)], HasSubstr("cannot decode"));
  EXPECT_EQ(s.sample_rates().at(16000), 40u);
  EXPECT_EQ(s.channels().at(1), 40u);
  EXPECT_NEAR(s.min_seconds(), 0.1, 1e-3);
  EXPECT_NEAR(s.max_seconds(), 0.19, 1e-3);
  EXPECT_GT(s.median_seconds(), s.min_seconds());
  for (const Clip& c : ds->train) {
    EXPECT_GE(c.label, 0);
    EXPECT_NEAR(c.seconds, 0.1, 0.1);
    EXPECT_EQ(c.path.rfind(dir_, 0), 0u);
  }
}

// A clip shorter than one frame of the model (the 10 ms at 48 kHz) is skipped when the
// corpus is read, with its length in the reason, instead of failing the job in training; one
// just long enough is kept.
TEST_F(DatasetTest, ClipsTooShortForOneFrameAreSkippedAtScanTime) {
  MakeRavdess(3, {1, 2});
  ToneSpec too_short;
  too_short.rate = 48000;
  too_short.seconds = 0.010;
  WriteTone(dir_ + "/Actor_01/" + Ravdess(1, 1, 1, 2), too_short);
  ToneSpec just_enough;
  just_enough.seconds = 0.025;
  WriteTone(dir_ + "/Actor_02/" + Ravdess(2, 2, 1, 2), just_enough);
  auto ds = Load(Spec());
  ASSERT_TRUE(ds.ok()) << ds.status();
  auto skipped = Skipped(*ds);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_THAT(skipped["Actor_01/" + Ravdess(1, 1, 1, 2)],
              HasSubstr("too short: 10.0 ms, the model needs at least 25 ms"));
  EXPECT_EQ(ds->summary.usable_files(), 3u * 2 * 2 + 1);
  EXPECT_NEAR(ds->summary.min_seconds(), 0.025, 1e-3);
}

// With allowed roots, a manifest row or a link that leads out of them is skipped with one and
// the same reason, whether or not its target exists: the reasons tell nothing of what lies
// outside. Rows and links that stay inside are read.
TEST_F(DatasetTest, FilesOutsideTheAllowedRootsAreSkippedWithoutSayingMore) {
  namespace fs = std::filesystem;
  const std::string data = dir_ + "/data";
  const std::string outside = ftune::testing::MakeTempDir("outside");
  WriteTone(outside + "/secret.wav", {});
  for (const char* rel : {"clips/a.wav", "clips/b.wav", "clips/c.wav", "clips/d.wav"}) {
    WriteTone(data + "/" + rel, {});
  }
  fs::create_symlink(outside + "/secret.wav", data + "/clips/linked.wav");
  fs::create_symlink(outside + "/gone.wav", data + "/clips/dangling.wav");
  fs::create_symlink(data + "/clips/a.wav", data + "/clips/inside-link.wav");
  WriteText(data + "/manifest.csv",
            "path,label\n"
            "clips/a.wav,yes\n"
            "clips/b.wav,no\n"
            "clips/c.wav,yes\n"
            "clips/d.wav,no\n"
            "clips/inside-link.wav,yes\n" +
                outside + "/secret.wav,no\n" +
                outside + "/absent.wav,no\n"
                "../outside-no-such/x.wav,no\n"
                "clips/linked.wav,yes\n"
                "clips/dangling.wav,yes\n");
  DatasetRequest request;
  DatasetSpec spec;
  spec.set_path(data);
  request.corpora = {spec};
  request.allowed_roots = {data};
  auto ds = LoadDataset(request, &cache_, 2);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->summary.usable_files(), 5u);
  auto skipped = Skipped(*ds);
  ASSERT_EQ(skipped.size(), 5u);
  for (const auto& [path, reason] : skipped) EXPECT_EQ(reason, "outside the allowed roots") << path;

  // A folder layout finds the links itself.
  fs::remove(data + "/manifest.csv");
  request.corpora[0].set_layout(v1::DATASET_LAYOUT_FOLDERS);
  auto folders = LoadDataset(request, &cache_, 2);
  ASSERT_TRUE(folders.ok()) << folders.status();
  skipped = Skipped(*folders);
  EXPECT_EQ(skipped["clips/linked.wav"], "outside the allowed roots");
  EXPECT_EQ(skipped["clips/dangling.wav"], "outside the allowed roots");
  EXPECT_FALSE(skipped.count("clips/inside-link.wav"));

  // The dataset itself outside the roots.
  request.allowed_roots = {outside};
  EXPECT_EQ(LoadDataset(request, &cache_, 2).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(DatasetTest, RavdessSongsWhenAsked) {
  MakeRavdess(2, {1, 2});
  Tone("Actor_01/" + Ravdess(2, 1, 1, 1, /*song=*/2));
  DatasetSpec spec = Spec();
  spec.set_include_song(true);
  auto ds = Load(spec);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->summary.usable_files(), 9u);
  EXPECT_EQ(ds->summary.skipped_size(), 0);
}

TEST_F(DatasetTest, SpeakerSplitNeverSharesASpeaker) {
  MakeRavdess(10, {1, 2, 3});
  for (uint64_t seed : {1, 2, 3, 42}) {
    auto ds = Load(Spec(), {}, seed);
    ASSERT_TRUE(ds.ok()) << ds.status();
    std::set<std::string> train, eval;
    for (const Clip& c : ds->train) train.insert(c.speaker);
    for (const Clip& c : ds->eval) eval.insert(c.speaker);
    EXPECT_EQ(eval.size(), 2u);  // 20% of 10 speakers
    EXPECT_EQ(train.size(), 8u);
    for (const auto& s : eval) EXPECT_EQ(train.count(s), 0u) << s;
    EXPECT_EQ(ds->summary.eval_speakers_size(), 2);
    EXPECT_EQ(ds->summary.train_files() + ds->summary.eval_files(), 60u);
    for (const auto& label : ds->labels) EXPECT_EQ(ds->summary.eval_classes().at(label), 4u);
  }
}

TEST_F(DatasetTest, SplitIsAFunctionOfTheSeed) {
  MakeRavdess(10, {1, 2});
  auto a = Load(Spec(), {}, 7);
  auto b = Load(Spec(), {}, 7);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->eval.size(), b->eval.size());
  for (size_t i = 0; i < a->eval.size(); ++i) EXPECT_EQ(a->eval[i].path, b->eval[i].path);
  EXPECT_THAT(a->summary.eval_speakers(), ::testing::ElementsAreArray(b->summary.eval_speakers()));
  std::set<std::string> seen;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    auto ds = Load(Spec(), {}, seed);
    ASSERT_TRUE(ds.ok());
    seen.insert(absl::StrJoin(ds->summary.eval_speakers(), ","));
  }
  EXPECT_GT(seen.size(), 1u);
}

TEST_F(DatasetTest, SpeakerSplitKeepsEveryClassInTraining) {
  // Only Actor_01 has "sad": holding it out would leave sad untrained, so it stays in train.
  MakeRavdess(5, {1, 2});
  Tone("Actor_01/" + Ravdess(4, 1));
  for (uint64_t seed = 0; seed < 10; ++seed) {
    auto ds = Load(Spec(), {}, seed);
    ASSERT_TRUE(ds.ok()) << ds.status();
    EXPECT_EQ(ds->summary.train_classes().at("sad"), 1u);
  }
}

TEST_F(DatasetTest, ClassFoldersWithMixedFormats) {
  Tone("angry/a1.wav", 1);
  Tone("angry/a2.flac", 2, ToneSpec{44100, 2, 0, 1000, {0.5}, SF_FORMAT_FLAC | SF_FORMAT_PCM_16});
  Tone("angry/sub/a3.ogg", 3, ToneSpec{48000, 1, 0, 1000, {0.5}, SF_FORMAT_OGG | SF_FORMAT_VORBIS});
  for (int i = 0; i < 5; ++i) Tone("calm/c" + std::to_string(i) + ".wav", i);
  Tone("happy/h1.WAV", 4, ToneSpec{8000, 1, 0, 1000, {0.5}, 0});
  Tone("happy/h2.wav", 5);
  WriteText(dir_ + "/happy/broken.wav", "");
  WriteText(dir_ + "/happy/notes.txt", "x");
  WriteText(dir_ + "/labels.txt", "x");
  auto ds = Load(Spec());
  ASSERT_TRUE(ds.ok()) << ds.status();
  const auto& s = ds->summary;
  EXPECT_EQ(s.layout(), "folders");
  EXPECT_EQ(s.split(), "random");
  EXPECT_THAT(ds->labels, ElementsAre("angry", "calm", "happy"));
  EXPECT_EQ(s.total_files(), 13u);
  EXPECT_EQ(s.usable_files(), 10u);
  EXPECT_EQ(s.classes().at("angry"), 3u);
  EXPECT_EQ(s.speakers_size(), 0);
  EXPECT_EQ(s.sample_rates().at(44100), 1u);
  EXPECT_EQ(s.sample_rates().at(48000), 1u);
  EXPECT_EQ(s.sample_rates().at(8000), 1u);
  EXPECT_EQ(s.channels().at(2), 1u);
  auto skipped = Skipped(*ds);
  EXPECT_THAT(skipped["happy/broken.wav"], HasSubstr("cannot decode"));
  EXPECT_THAT(skipped["happy/notes.txt"], HasSubstr("not an audio file"));
  EXPECT_THAT(skipped["labels.txt"], HasSubstr("not inside a class folder"));
  // Stratified: every class with two or more clips has one in each split.
  EXPECT_EQ(s.eval_classes().at("angry"), 1u);
  EXPECT_EQ(s.eval_classes().at("calm"), 1u);
  EXPECT_EQ(s.eval_classes().at("happy"), 1u);
  EXPECT_EQ(s.train_files(), 7u);
}

TEST_F(DatasetTest, ManifestWithSpeakersAndSplits) {
  Tone("clips/a.wav", 1);
  Tone("clips/b.wav", 2);
  Tone("clips/c, with comma.wav", 3);
  Tone("clips/d.wav", 4);
  Tone("clips/e.wav", 5);
  WriteText(dir_ + "/manifest.csv",
            "path,label,speaker,split\n"
            "clips/a.wav,yes,s1,train\n"
            "clips/b.wav,no,s1,train\n"
            "\"clips/c, with comma.wav\",yes,s2,validation\n"
            "clips/d.wav,no,s2,eval\n"
            "clips/missing.wav,no,s2,eval\n"
            "clips/e.wav,no,s3,holdout\n"
            "clips/e.wav\n"
            "\n");
  auto ds = Load(Spec());
  ASSERT_TRUE(ds.ok()) << ds.status();
  const auto& s = ds->summary;
  EXPECT_EQ(s.layout(), "manifest");
  EXPECT_EQ(s.split(), "manifest");
  EXPECT_THAT(ds->labels, ElementsAre("no", "yes"));
  EXPECT_EQ(s.usable_files(), 4u);
  EXPECT_EQ(s.total_files(), 7u);
  ASSERT_EQ(ds->eval.size(), 2u);
  EXPECT_EQ(ds->eval[0].path, dir_ + "/clips/c, with comma.wav");
  EXPECT_EQ(ds->eval[0].speaker, "s2");
  EXPECT_THAT(s.eval_speakers(), ElementsAre("s2"));
  EXPECT_THAT(s.train_speakers(), ElementsAre("s1"));
  auto skipped = Skipped(*ds);
  EXPECT_THAT(skipped["clips/missing.wav"], HasSubstr("file not found"));
  EXPECT_THAT(skipped["clips/e.wav"], HasSubstr("holdout"));
  EXPECT_THAT(skipped["manifest.csv:8"], HasSubstr("path,label"));
}

TEST_F(DatasetTest, ManifestFileWithoutHeaderOrSplitUsesSpeakers) {
  for (int i = 0; i < 12; ++i) Tone("x/" + std::to_string(i) + ".wav", i);
  std::string csv;
  for (int i = 0; i < 12; ++i) {
    csv += absl::StrFormat("x/%d.wav,%s,spk%d\n", i, i % 2 ? "b" : "a", i % 4);
  }
  WriteText(dir_ + "/list.csv", csv);
  auto ds = Load(Spec("list.csv"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->summary.layout(), "manifest");
  EXPECT_EQ(ds->summary.split(), "speaker");
  EXPECT_EQ(ds->summary.eval_speakers_size(), 1);
  EXPECT_EQ(ds->eval.size(), 3u);
  // Asking for a manifest split without a split column skips every row.
  DatasetSpec spec = Spec("list.csv");
  spec.set_split(v1::SPLIT_STRATEGY_MANIFEST);
  auto none = Load(spec);
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("no usable audio"));
}

TEST_F(DatasetTest, FixedLabelsSetOrderAndSkipOthers) {
  MakeRavdess(4, {1, 3, 5});
  auto ds = Load(Spec(), {"angry", "neutral"});
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_THAT(ds->labels, ElementsAre("angry", "neutral"));
  EXPECT_EQ(ds->summary.usable_files(), 16u);
  EXPECT_EQ(ds->summary.skipped_size(), 8);
  EXPECT_THAT(ds->summary.skipped(0).reason(), HasSubstr("'happy' is not in the job's labels"));
  for (const Clip& c : ds->train) EXPECT_EQ(ds->labels[c.label], c.path.find("-05-") != std::string::npos ? "angry" : "neutral");
  auto missing = Load(Spec(), {"angry", "sad"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("class 'sad' has no usable audio"));
}

TEST_F(DatasetTest, ClassWithOnlyBrokenFilesFails) {
  Tone("a/1.wav");
  Tone("a/2.wav");
  WriteText(dir_ + "/b/1.wav", "garbage");
  auto ds = Load(Spec());
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(ds.status().message()), HasSubstr("class 'b' has no usable audio"));
  // ScanDataset still describes it, for inspect.
  auto scan = ScanDataset(Spec(), {}, 42, &cache_, 1);
  ASSERT_TRUE(scan.ok()) << scan.status();
  EXPECT_EQ(scan->summary.skipped_size(), 1);
  EXPECT_FALSE(ValidateDataset(*scan).ok());
  auto uncached = ScanDataset(Spec(), {}, 42, /*cache=*/nullptr, 0);
  ASSERT_TRUE(uncached.ok()) << uncached.status();
  EXPECT_EQ(uncached->summary.usable_files(), 2u);
}

TEST_F(DatasetTest, ClassAbsentFromTrainingFails) {
  Tone("a.wav", 1);
  Tone("b.wav", 2);
  Tone("c.wav", 3);
  WriteText(dir_ + "/manifest.csv", "a.wav,x,,train\nb.wav,x,,eval\nc.wav,y,,eval\n");
  auto ds = Load(Spec());
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(ds.status().message()),
              HasSubstr("class 'y' has no clips in the training split"));
}

TEST_F(DatasetTest, AllFilesBrokenFailsNamingTheFirst) {
  WriteText(dir_ + "/a/1.wav", "junk");
  WriteText(dir_ + "/a/2.wav", "");
  auto ds = Load(Spec());
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(ds.status().message()), HasSubstr("no usable audio"));
  EXPECT_THAT(std::string(ds.status().message()), HasSubstr("a/1.wav"));
}

TEST_F(DatasetTest, MissingOrUnrecognisablePaths) {
  auto missing = Load(Spec("nowhere"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nowhere"));
  auto empty = Load(Spec());
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(empty.status().message()), HasSubstr("cannot tell the layout"));
  Tone("x.wav");
  auto file = Load(Spec("x.wav"));
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  DatasetSpec ravdess = Spec();
  ravdess.set_layout(v1::DATASET_LAYOUT_RAVDESS);
  EXPECT_THAT(std::string(Load(ravdess).status().message()), HasSubstr("no Actor_NN folders"));
}

TEST_F(DatasetTest, BadOptionsAreInvalidArgument) {
  MakeRavdess(2, {1});
  DatasetSpec spec = Spec();
  spec.set_eval_fraction(1.0);
  EXPECT_EQ(Load(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec = Spec();
  spec.set_split(v1::SPLIT_STRATEGY_MANIFEST);
  EXPECT_EQ(Load(spec).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Load(Spec(), {"neutral", "neutral"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  Tone("folders/a/1.wav");
  Tone("folders/b/1.wav");
  spec = Spec("folders");
  spec.set_split(v1::SPLIT_STRATEGY_SPEAKER);
  EXPECT_EQ(Load(spec).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DatasetTest, DemoCorpusScriptMakesAUsableRavdessSet) {
  if (std::system("command -v espeak-ng >/dev/null && command -v sox >/dev/null") != 0) {
    GTEST_SKIP() << "espeak-ng or sox not installed";
  }
  // ctest's FTUNE_SOURCE_DIR, else the source folder this test was built from.
  const char* source = std::getenv("FTUNE_SOURCE_DIR");
  const std::string script =
      std::string(source ? source : FTUNE_DATA_TEST_SOURCE_DIR) + "/scripts/make-demo-dataset";
  auto run = ftune::testing::RunCommand(
      {script, dir_ + "/demo", "--actors", "3", "--statements", "1", "--repetitions", "1",
       "--intensities", "1", "--jobs", "2"},
      absl::Seconds(120));
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->exit_code, 0) << run->out;
  auto ds = Load(Spec("demo"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->summary.layout(), "ravdess");
  EXPECT_EQ(ds->summary.usable_files(), 24u);
  EXPECT_EQ(ds->summary.skipped_size(), 0);
  EXPECT_EQ(ds->labels, RavdessEmotions());
  EXPECT_EQ(ds->summary.speakers_size(), 3);
  EXPECT_EQ(ds->summary.sample_rates().at(16000), 24u);
  EXPECT_GT(ds->summary.min_seconds(), 0.5);
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/demo/Actor_02/03-01-06-01-01-01-02.wav"));
}

}  // namespace
}  // namespace ftune::data
