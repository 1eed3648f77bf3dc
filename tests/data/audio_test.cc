// Decode, resample and normalise: the signal that reaches the model keeps its frequency and
// level, channels are averaged, and broken files are errors that say what is wrong.
#include "worker/data/audio.h"

#include <sndfile.h>

#include <cmath>
#include <filesystem>
#include <numeric>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/data/audio_files.h"
#include "tests/support/process.h"

namespace ftune::data {
namespace {

using ::testing::HasSubstr;
using testing::ToneSpec;
using testing::WriteTone;

// Tolerances for a 1 kHz float tone after conversion to 16 kHz, judged on the middle 80% of
// the clip: frequency within 0.01 Hz, RMS level within 0.1% (0.009 dB). soxr HQ measures about
// 1e-7 on both.
constexpr double kFrequencyToleranceHz = 0.01;
constexpr double kLevelTolerance = 0.001;

class AudioTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = ftune::testing::MakeTempDir("audio_test"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string dir_;
};

// Frequency from interpolated upward zero crossings over [begin, end).
double MeasureFrequency(const std::vector<float>& x, size_t begin, size_t end) {
  double first = -1, last = -1;
  int crossings = 0;
  for (size_t i = begin + 1; i < end; ++i) {
    if (x[i - 1] < 0 && x[i] >= 0) {
      const double t = double(i - 1) + x[i - 1] / (x[i - 1] - x[i]);
      if (first < 0) first = t;
      last = t;
      ++crossings;
    }
  }
  return crossings < 2 ? 0 : (crossings - 1) * kSampleRate / (last - first);
}

double Rms(const std::vector<float>& x, size_t begin, size_t end) {
  double sq = 0;
  for (size_t i = begin; i < end; ++i) sq += double(x[i]) * x[i];
  return std::sqrt(sq / double(end - begin));
}

class ToneRateTest : public AudioTest, public ::testing::WithParamInterface<int> {};

TEST_P(ToneRateTest, KeepsFrequencyAndLevelAt16k) {
  const int rate = GetParam();
  ToneSpec spec;
  spec.rate = rate;
  spec.seconds = 1.0;
  spec.amplitudes = {0.5};
  spec.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
  WriteTone(Path("tone.wav"), spec);
  AudioInfo info;
  auto audio = DecodeFile(Path("tone.wav"), &info);
  ASSERT_TRUE(audio.ok()) << audio.status();
  EXPECT_EQ(info.source_rate, rate);
  EXPECT_EQ(info.channels, 1);
  EXPECT_NEAR(info.seconds, 1.0, 1e-3);
  EXPECT_NEAR(double(audio->size()), kSampleRate, 1);
  const size_t begin = audio->size() / 10, end = audio->size() * 9 / 10;
  EXPECT_NEAR(MeasureFrequency(*audio, begin, end), 1000, kFrequencyToleranceHz);
  EXPECT_NEAR(Rms(*audio, begin, end), 0.5 / std::sqrt(2.0), 0.5 / std::sqrt(2.0) * kLevelTolerance);
}

INSTANTIATE_TEST_SUITE_P(Rates, ToneRateTest, ::testing::Values(8000, 16000, 22050, 44100, 48000));

TEST_F(AudioTest, ResampleDropsContentAboveNyquist) {
  // A 10 kHz tone at 48 kHz cannot exist at 16 kHz: the high-quality filter removes it.
  ToneSpec spec{48000, 1, 1.0, 10000, {0.5}, SF_FORMAT_WAV | SF_FORMAT_FLOAT};
  WriteTone(Path("high.wav"), spec);
  auto audio = DecodeFile(Path("high.wav"));
  ASSERT_TRUE(audio.ok()) << audio.status();
  EXPECT_LT(Rms(*audio, 1600, 14400), 1e-3);
}

TEST_F(AudioTest, StereoIsAveragedToMono) {
  ToneSpec spec{16000, 2, 0.5, 1000, {0.6, 0.2}, SF_FORMAT_WAV | SF_FORMAT_FLOAT};
  WriteTone(Path("stereo.wav"), spec);
  AudioInfo info;
  auto audio = DecodeFile(Path("stereo.wav"), &info);
  ASSERT_TRUE(audio.ok()) << audio.status();
  EXPECT_EQ(info.channels, 2);
  ASSERT_EQ(audio->size(), 8000u);
  for (size_t i = 0; i < audio->size(); i += 37) {
    EXPECT_NEAR((*audio)[i], 0.4 * std::sin(2 * M_PI * 1000 * double(i) / 16000), 1e-6);
  }
}

TEST_F(AudioTest, OppositeChannelsCancel) {
  ToneSpec spec{44100, 2, 0.5, 440, {0.5, -0.5}, SF_FORMAT_WAV | SF_FORMAT_FLOAT};
  WriteTone(Path("cancel.wav"), spec);
  auto audio = DecodeFile(Path("cancel.wav"));
  ASSERT_TRUE(audio.ok()) << audio.status();
  EXPECT_LT(Rms(*audio, 0, audio->size()), 1e-6);
}

TEST_F(AudioTest, SixChannelFileIsMixed) {
  ToneSpec spec{48000, 6, 0.25, 1000, {0.3}, 0};
  WriteTone(Path("surround.wav"), spec);
  AudioInfo info;
  auto audio = DecodeFile(Path("surround.wav"), &info);
  ASSERT_TRUE(audio.ok()) << audio.status();
  EXPECT_EQ(info.channels, 6);
  EXPECT_NEAR(Rms(*audio, 400, 3600), 0.3 / std::sqrt(2.0), 0.003);
}

struct FormatCase {
  const char* name;
  int format;
  double level_tolerance;
};

class FormatTest : public AudioTest, public ::testing::WithParamInterface<FormatCase> {};

TEST_P(FormatTest, DecodesToTheSameTone) {
  const FormatCase& c = GetParam();
  ToneSpec spec{22050, 1, 0.5, 1000, {0.5}, c.format};
  const std::string path = Path(std::string("tone.") + c.name);
  WriteTone(path, spec);
  auto audio = DecodeFile(path);
  ASSERT_TRUE(audio.ok()) << audio.status();
  EXPECT_NEAR(double(audio->size()), 8000, 1);
  EXPECT_NEAR(MeasureFrequency(*audio, 800, 7200), 1000, 1.0);
  EXPECT_NEAR(Rms(*audio, 800, 7200), 0.5 / std::sqrt(2.0), c.level_tolerance);
}

INSTANTIATE_TEST_SUITE_P(
    Formats, FormatTest,
    ::testing::Values(FormatCase{"u8.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_U8, 0.01},
                      FormatCase{"s16.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 0.002},
                      FormatCase{"s24.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_24, 0.002},
                      FormatCase{"s32.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_32, 0.002},
                      FormatCase{"f64.wav", SF_FORMAT_WAV | SF_FORMAT_DOUBLE, 0.002},
                      FormatCase{"flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 0.002},
                      FormatCase{"ogg", SF_FORMAT_OGG | SF_FORMAT_VORBIS, 0.02}),
    [](const auto& info) {
      std::string n = info.param.name;
      std::replace(n.begin(), n.end(), '.', '_');
      return n;
    });

TEST_F(AudioTest, BytesDecodeLikeTheFile) {
  ToneSpec spec{44100, 2, 0.3, 700, {0.4, 0.1}, SF_FORMAT_FLAC | SF_FORMAT_PCM_24};
  WriteTone(Path("t.flac"), spec);
  AudioInfo file_info, bytes_info;
  auto from_file = DecodeFile(Path("t.flac"), &file_info);
  auto from_bytes = DecodeBytes(testing::ReadBytes(Path("t.flac")), &bytes_info);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  ASSERT_TRUE(from_bytes.ok()) << from_bytes.status();
  EXPECT_EQ(*from_file, *from_bytes);
  EXPECT_EQ(bytes_info.source_rate, 44100);
  EXPECT_EQ(bytes_info.channels, 2);
}

TEST_F(AudioTest, MissingFileNamesThePath) {
  auto audio = DecodeFile(Path("nope.wav"));
  ASSERT_FALSE(audio.ok());
  EXPECT_THAT(std::string(audio.status().message()), HasSubstr(Path("nope.wav")));
}

TEST_F(AudioTest, EmptyFileIsAnError) {
  testing::WriteText(Path("empty.wav"), "");
  auto audio = DecodeFile(Path("empty.wav"));
  ASSERT_FALSE(audio.ok());
  EXPECT_THAT(std::string(audio.status().message()), HasSubstr("empty.wav"));
  EXPECT_FALSE(DecodeBytes("").ok());
}

TEST_F(AudioTest, NonAudioIsAnError) {
  testing::WriteText(Path("notes.wav"), "these are not the samples you are looking for\n");
  auto audio = DecodeFile(Path("notes.wav"));
  ASSERT_FALSE(audio.ok());
  EXPECT_EQ(audio.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(audio.status().message()), HasSubstr("cannot decode"));
  EXPECT_FALSE(DecodeBytes("RIFF\x10\0\0\0WAVEjunk").ok());
}

TEST_F(AudioTest, HeaderWithoutFramesIsAnError) {
  WriteTone(Path("silent.wav"), ToneSpec{16000, 1, 0.0, 1000, {0.5}, 0});
  auto audio = DecodeFile(Path("silent.wav"));
  ASSERT_FALSE(audio.ok());
  EXPECT_THAT(std::string(audio.status().message()), HasSubstr("no audio frames"));
}

TEST_F(AudioTest, TruncatedWavIsAnError) {
  WriteTone(Path("full.wav"), ToneSpec{16000, 1, 1.0, 1000, {0.5}, 0});
  const std::string bytes = testing::ReadBytes(Path("full.wav"));
  testing::WriteText(Path("cut.wav"), bytes.substr(0, bytes.size() / 2));
  auto audio = DecodeFile(Path("cut.wav"));
  ASSERT_FALSE(audio.ok());
  EXPECT_THAT(std::string(audio.status().message()), HasSubstr("truncated"));
  auto from_bytes = DecodeBytes(bytes.substr(0, bytes.size() / 2));
  ASSERT_FALSE(from_bytes.ok());
  EXPECT_THAT(std::string(from_bytes.status().message()), HasSubstr("truncated"));
  // Cut inside the header: not decodable at all.
  testing::WriteText(Path("header.wav"), bytes.substr(0, 30));
  EXPECT_FALSE(DecodeFile(Path("header.wav")).ok());
}

TEST_F(AudioTest, TruncatedFlacIsAnError) {
  WriteTone(Path("full.flac"), ToneSpec{44100, 2, 1.0, 1000, {0.5}, SF_FORMAT_FLAC | SF_FORMAT_PCM_16});
  const std::string bytes = testing::ReadBytes(Path("full.flac"));
  testing::WriteText(Path("cut.flac"), bytes.substr(0, bytes.size() / 2));
  auto audio = DecodeFile(Path("cut.flac"));
  ASSERT_FALSE(audio.ok());
  EXPECT_THAT(std::string(audio.status().message()), HasSubstr("truncated"));
}

TEST_F(AudioTest, NonFiniteSamplesAreAnError) {
  std::vector<float> samples(1000, 0.1f);
  samples[500] = std::nanf("");
  testing::WriteSamples(Path("nan.wav"), samples, 16000);
  auto audio = DecodeFile(Path("nan.wav"));
  ASSERT_FALSE(audio.ok());
  EXPECT_THAT(std::string(audio.status().message()), HasSubstr("NaN"));
}

TEST(ResampleTest, LengthFollowsTheRatio) {
  std::vector<float> in(44100, 0.25f);
  auto out = Resample(in, 44100, 16000);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->size(), 16000u);
  auto odd = Resample(std::vector<float>(1001, 0.f), 22050, 16000);
  ASSERT_TRUE(odd.ok());
  EXPECT_EQ(odd->size(), size_t(std::llround(1001 * 16000.0 / 22050)));
  auto same = Resample(in, 16000, 16000);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(*same, in);
  EXPECT_EQ(Resample(in, 0, 16000).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Resample(in, 16000, -1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(NormalizeTest, ZeroMeanUnitVarianceLikeWav2Vec2FeatureExtractor) {
  std::vector<float> x = {1, 2, 3, 4, 10};
  const double mean = 4.0;
  double var = 0;
  for (float v : x) var += (v - mean) * (v - mean);
  var /= x.size();
  std::vector<float> expected;
  for (float v : x) expected.push_back(float((v - mean) / std::sqrt(var + 1e-7)));
  Normalize(x.data(), int64_t(x.size()));
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(x[i], expected[i], 1e-6);
  double m = std::accumulate(x.begin(), x.end(), 0.0) / x.size();
  EXPECT_NEAR(m, 0, 1e-6);
}

TEST(NormalizeTest, ConstantSignalBecomesZeroNotNaN) {
  std::vector<float> x(100, 0.3f);
  Normalize(x.data(), int64_t(x.size()));
  for (float v : x) EXPECT_NEAR(v, 0.f, 1e-6);
  Normalize(x.data(), 0);  // no samples: nothing to do
}

}  // namespace
}  // namespace ftune::data
