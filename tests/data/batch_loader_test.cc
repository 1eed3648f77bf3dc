// BatchLoader over a fake decoder whose audio is a ramp (sample i of clip k holds k * 1e5 + i),
// so crops, padding and order can be read back from the tensors.
#include "worker/data/batch_loader.h"

#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ftune::data {
namespace {

using ::testing::HasSubstr;

constexpr float kClipStride = 1e5f;

// Paths are "K:N": clip K with N samples. "bad" paths fail.
absl::StatusOr<std::vector<float>> RampDecoder(const std::string& path, AudioInfo* info) {
  if (path.find("bad") != std::string::npos) {
    return absl::InvalidArgumentError(path + ": cannot decode: fake failure");
  }
  const size_t colon = path.find(':');
  const int k = std::stoi(path.substr(0, colon));
  const int n = std::stoi(path.substr(colon + 1));
  std::vector<float> audio(n);
  for (int i = 0; i < n; ++i) audio[i] = k * kClipStride + float(i);
  if (info) *info = AudioInfo{kSampleRate, 1, n / double(kSampleRate)};
  return audio;
}

AudioCacheOptions RampCache() {
  AudioCacheOptions options;
  options.decode = RampDecoder;
  return options;
}

// Clip k has 1000 + (k * 7919 % 13) * 500 samples and label k % 3.
std::vector<Clip> MakeClips(int n) {
  std::vector<Clip> clips;
  for (int k = 0; k < n; ++k) {
    const int samples = 1000 + (k * 7919 % 13) * 500;
    clips.push_back({std::to_string(k) + ":" + std::to_string(samples), k % 3, "",
                     samples / double(kSampleRate)});
  }
  return clips;
}

std::vector<Batch> Drain(const std::vector<Clip>& clips, AudioCache* cache,
                         const LoaderOptions& options) {
  BatchLoader loader(clips, cache, options);
  std::vector<Batch> out;
  while (true) {
    auto next = loader.Next();
    EXPECT_TRUE(next.ok()) << next.status();
    if (!next.ok() || !next->has_value()) break;
    out.push_back(std::move(**next));
  }
  return out;
}

void ExpectSameBatches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].clip_indices, b[i].clip_indices) << "batch " << i;
    EXPECT_TRUE(torch::equal(a[i].audio, b[i].audio)) << "batch " << i;
    EXPECT_TRUE(torch::equal(a[i].lengths, b[i].lengths)) << "batch " << i;
    EXPECT_TRUE(torch::equal(a[i].labels, b[i].labels)) << "batch " << i;
  }
}

TEST(BatchLoaderTest, PadsToTheLongestWithLengths) {
  AudioCache cache(RampCache());
  const auto clips = MakeClips(10);
  LoaderOptions options;
  options.batch_size = 4;
  options.normalize = false;
  auto batches = Drain(clips, &cache, options);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[2].audio.size(0), 2);
  for (const Batch& b : batches) {
    ASSERT_EQ(b.audio.dim(), 2);
    ASSERT_EQ(b.audio.dtype(), torch::kFloat32);
    ASSERT_EQ(b.lengths.dtype(), torch::kInt64);
    ASSERT_EQ(b.labels.dtype(), torch::kInt64);
    int64_t longest = 0;
    for (size_t r = 0; r < b.clip_indices.size(); ++r) {
      const int64_t k = b.clip_indices[r];
      const int64_t len = b.lengths[r].item<int64_t>();
      EXPECT_EQ(len, int64_t(std::llround(clips[k].seconds * kSampleRate)));
      EXPECT_EQ(b.labels[r].item<int64_t>(), clips[k].label);
      EXPECT_EQ(b.audio[r][0].item<float>(), k * kClipStride);
      EXPECT_EQ(b.audio[r][len - 1].item<float>(), k * kClipStride + float(len - 1));
      if (len < b.audio.size(1)) {
        EXPECT_EQ(b.audio[r].slice(0, len).abs().sum().item<float>(), 0.f) << "padding not zero";
      }
      longest = std::max(longest, len);
    }
    EXPECT_EQ(b.audio.size(1), longest);
  }
  // Without shuffle the order is the clip order.
  EXPECT_EQ(batches[0].clip_indices, (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(BatchLoaderTest, NormalisesValidSamplesAndKeepsPaddingZero) {
  AudioCache cache(RampCache());
  const auto clips = MakeClips(6);
  LoaderOptions options;
  options.batch_size = 6;
  auto batches = Drain(clips, &cache, options);
  ASSERT_EQ(batches.size(), 1u);
  const Batch& b = batches[0];
  for (int64_t r = 0; r < b.audio.size(0); ++r) {
    const int64_t len = b.lengths[r].item<int64_t>();
    auto valid = b.audio[r].slice(0, 0, len).to(torch::kFloat64);
    EXPECT_NEAR(valid.mean().item<double>(), 0, 1e-5);
    EXPECT_NEAR(valid.var(/*unbiased=*/false).item<double>(), 1, 1e-4);
    if (len < b.audio.size(1)) {
      EXPECT_EQ(b.audio[r].slice(0, len).abs().sum().item<float>(), 0.f);
    }
  }
}

TEST(BatchLoaderTest, CropsCentredInEvaluation) {
  AudioCache cache(RampCache());
  std::vector<Clip> clips = {{"0:8000", 0, "", 0.5}, {"1:1000", 1, "", 1000 / 16000.0}};
  LoaderOptions options;
  options.batch_size = 2;
  options.normalize = false;
  options.max_seconds = 0.25;  // 4000 samples
  auto batches = Drain(clips, &cache, options);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].audio.size(1), 4000);
  EXPECT_EQ(batches[0].lengths[0].item<int64_t>(), 4000);
  EXPECT_EQ(batches[0].lengths[1].item<int64_t>(), 1000);
  EXPECT_EQ(batches[0].audio[0][0].item<float>(), 2000.f);  // (8000 - 4000) / 2
}

TEST(BatchLoaderTest, RandomCropsFollowSeedAndEpoch) {
  LoaderOptions options;
  options.max_seconds = 0.1;  // 1600 samples
  options.random_crop = true;
  std::set<int64_t> offsets;
  for (int epoch = 0; epoch < 20; ++epoch) {
    options.epoch = epoch;
    const CropWindow w = ChooseCrop(16000, 5, options);
    EXPECT_EQ(w.length, 1600);
    EXPECT_GE(w.offset, 0);
    EXPECT_LE(w.offset, 16000 - 1600);
    EXPECT_EQ(ChooseCrop(16000, 5, options).offset, w.offset);
    offsets.insert(w.offset);
  }
  EXPECT_GT(offsets.size(), 15u);
  options.epoch = 0;
  const int64_t at_seed_42 = ChooseCrop(16000, 5, options).offset;
  options.seed = 43;
  EXPECT_NE(ChooseCrop(16000, 5, options).offset, at_seed_42);
  EXPECT_EQ(ChooseCrop(1000, 5, options).offset, 0);  // shorter than the limit: whole clip
  EXPECT_EQ(ChooseCrop(1000, 5, options).length, 1000);
}

TEST(BatchLoaderTest, ShuffleIsAPermutationFixedBySeedAndEpoch) {
  const auto clips = MakeClips(50);
  LoaderOptions options;
  options.batch_size = 7;
  options.shuffle = true;
  auto plan = PlanEpoch(clips, options);
  ASSERT_EQ(plan.size(), 8u);
  std::vector<int64_t> flat;
  for (const auto& b : plan) flat.insert(flat.end(), b.begin(), b.end());
  EXPECT_EQ(std::set<int64_t>(flat.begin(), flat.end()).size(), 50u);
  EXPECT_EQ(PlanEpoch(clips, options), plan);
  options.epoch = 1;
  EXPECT_NE(PlanEpoch(clips, options), plan);
  options.epoch = 0;
  options.seed = 7;
  EXPECT_NE(PlanEpoch(clips, options), plan);
}

int64_t PaddedSamples(const std::vector<std::vector<int64_t>>& plan, const std::vector<Clip>& clips) {
  int64_t padded = 0;
  for (const auto& batch : plan) {
    double longest = 0;
    for (int64_t k : batch) longest = std::max(longest, clips[k].seconds);
    for (int64_t k : batch) padded += std::llround((longest - clips[k].seconds) * kSampleRate);
  }
  return padded;
}

TEST(BatchLoaderTest, GroupingByLengthCutsPadding) {
  const auto clips = MakeClips(400);
  LoaderOptions options;
  options.batch_size = 8;
  options.shuffle = true;
  const auto plain = PlanEpoch(clips, options);
  options.group_by_length = true;
  const auto grouped = PlanEpoch(clips, options);
  EXPECT_LT(PaddedSamples(grouped, clips) * 4, PaddedSamples(plain, clips));
  std::multiset<int64_t> a, b;
  for (const auto& x : plain) a.insert(x.begin(), x.end());
  for (const auto& x : grouped) b.insert(x.begin(), x.end());
  EXPECT_EQ(a, b);
  // Unshuffled grouping sorts everything, longest first.
  options.shuffle = false;
  const auto sorted = PlanEpoch(clips, options);
  EXPECT_GE(clips[sorted.front().front()].seconds, clips[sorted.back().back()].seconds);
}

TEST(BatchLoaderTest, SameBatchesForAnyThreadCount) {
  const auto clips = MakeClips(45);
  LoaderOptions options;
  options.batch_size = 4;
  options.shuffle = true;
  options.seed = 3;
  options.epoch = 2;
  options.max_seconds = 0.3;
  options.random_crop = true;
  options.group_by_length = true;
  AudioCache cache(RampCache());
  options.threads = 0;
  const auto reference = Drain(clips, &cache, options);
  ASSERT_EQ(reference.size(), 12u);
  for (int threads : {1, 2, 5}) {
    for (int prefetch : {1, 3}) {
      AudioCache fresh(RampCache());  // cold cache: decoding races between threads
      options.threads = threads;
      options.prefetch = prefetch;
      ExpectSameBatches(reference, Drain(clips, &fresh, options));
    }
  }
}

TEST(BatchLoaderTest, ResumeMidEpochGivesTheRemainingBatches) {
  const auto clips = MakeClips(30);
  AudioCache cache(RampCache());
  LoaderOptions options;
  options.batch_size = 4;
  options.shuffle = true;
  options.max_seconds = 0.2;
  options.random_crop = true;
  const auto full = Drain(clips, &cache, options);
  options.start_batch = 5;
  BatchLoader loader(clips, &cache, options);
  EXPECT_EQ(loader.num_batches(), 8);
  const auto tail = Drain(clips, &cache, options);
  ExpectSameBatches(std::vector<Batch>(full.begin() + 5, full.end()), tail);
  options.start_batch = 100;
  EXPECT_TRUE(Drain(clips, &cache, options).empty());
}

TEST(BatchLoaderTest, DecodeFailureIsReturnedAndSticks) {
  std::vector<Clip> clips = MakeClips(8);
  clips[5].path = "bad:1000";
  AudioCache cache(RampCache());
  LoaderOptions options;
  options.batch_size = 2;
  BatchLoader loader(clips, &cache, options);
  auto first = loader.Next();
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(first->has_value());
  ASSERT_TRUE(loader.Next().ok());
  auto third = loader.Next();
  ASSERT_FALSE(third.ok());
  EXPECT_THAT(std::string(third.status().message()), HasSubstr("bad:1000"));
  EXPECT_FALSE(loader.Next().ok());
}

TEST(BatchLoaderTest, StopsCleanlyWithBatchesUnread) {
  const auto clips = MakeClips(40);
  AudioCache cache(RampCache());
  LoaderOptions options;
  options.batch_size = 2;
  options.threads = 3;
  BatchLoader loader(clips, &cache, options);
  EXPECT_EQ(loader.num_batches(), 20);
  ASSERT_TRUE(loader.Next().ok());
  // Destruction joins the threads that wait on the full prefetch window.
}

TEST(BatchLoaderTest, EmptyClipListEndsAtOnce) {
  AudioCache cache(RampCache());
  BatchLoader loader({}, &cache, LoaderOptions{});
  EXPECT_EQ(loader.num_batches(), 0);
  auto next = loader.Next();
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());
}

}  // namespace
}  // namespace ftune::data
