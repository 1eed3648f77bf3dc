// AudioCache with a fake decoder: one decode per path however many threads ask, a memory bound
// that drops the least recently used audio, a disk cache that survives the process, and errors
// that are returned but not remembered.
#include "worker/data/audio_cache.h"

#include <atomic>
#include <filesystem>
#include <map>
#include <thread>

#include "gtest/gtest.h"
#include "tests/data/audio_files.h"
#include "tests/support/process.h"

namespace ftune::data {
namespace {

// Audio of "len:N" is N samples of value N; "fail" paths fail; every call is counted.
class FakeDecoder {
 public:
  absl::StatusOr<std::vector<float>> operator()(const std::string& path, AudioInfo* info) {
    ++calls_;
    if (path.find("fail") != std::string::npos) {
      return absl::InvalidArgumentError(path + ": cannot decode: fake failure");
    }
    const int n = std::stoi(path.substr(path.rfind(':') + 1));
    if (info) *info = AudioInfo{8000, 2, n / 16000.0};
    return std::vector<float>(n, float(n));
  }
  int calls() const { return calls_; }

 private:
  std::atomic<int> calls_{0};
};

AudioCacheOptions WithFake(FakeDecoder* fake, AudioCacheOptions options = {}) {
  options.decode = [fake](const std::string& p, AudioInfo* i) { return (*fake)(p, i); };
  return options;
}

TEST(AudioCacheTest, DecodesEachPathOnce) {
  FakeDecoder fake;
  AudioCache cache(WithFake(&fake));
  AudioInfo info;
  auto first = cache.Get("len:100", &info);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*first)->size(), 100u);
  EXPECT_EQ(info.source_rate, 8000);
  AudioInfo again;
  auto second = cache.Get("len:100", &again);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(first->get(), second->get());
  EXPECT_EQ(again.channels, 2);
  EXPECT_EQ(fake.calls(), 1);
  EXPECT_EQ(cache.stats().memory_hits, 1);
}

TEST(AudioCacheTest, ConcurrentCallersShareOneDecode) {
  FakeDecoder fake;
  AudioCache cache(WithFake(&fake));
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) ok += cache.Get("len:" + std::to_string(1000 + i)).ok();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, 400);
  EXPECT_EQ(fake.calls(), 50);
}

TEST(AudioCacheTest, ErrorsAreReturnedAndNotCached) {
  FakeDecoder fake;
  AudioCache cache(WithFake(&fake));
  auto a = cache.Get("fail:1");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(cache.Get("fail:1").ok());
  EXPECT_EQ(fake.calls(), 2);
}

TEST(AudioCacheTest, MemoryBoundDropsLeastRecentlyUsed) {
  FakeDecoder fake;
  AudioCacheOptions options;
  options.max_memory_bytes = 250 * sizeof(float);
  AudioCache cache(WithFake(&fake, options));
  ASSERT_TRUE(cache.Get("a:100").ok());
  ASSERT_TRUE(cache.Get("b:100").ok());
  ASSERT_TRUE(cache.Get("a:100").ok());  // a is now the most recent
  ASSERT_TRUE(cache.Get("c:100").ok());  // over budget: b goes
  EXPECT_EQ(fake.calls(), 3);
  EXPECT_LE(cache.stats().memory_bytes, options.max_memory_bytes);
  EXPECT_EQ(cache.stats().evictions, 1);
  ASSERT_TRUE(cache.Get("a:100").ok());
  EXPECT_EQ(fake.calls(), 3);
  ASSERT_TRUE(cache.Get("b:100").ok());
  EXPECT_EQ(fake.calls(), 4);
  // Audio handed out stays valid after its eviction.
  auto big = cache.Get("big:1000");
  ASSERT_TRUE(big.ok());
  EXPECT_EQ((**big)[999], 1000.f);
}

TEST(AudioCacheTest, DiskCacheServesASecondCache) {
  const std::string dir = ftune::testing::MakeTempDir("audio_cache");
  // Disk entries are keyed by the file's size and mtime, so use real files.
  const std::string a = dir + "/audio/len:300", b = dir + "/audio/len:500";
  testing::WriteText(a, "x");
  testing::WriteText(b, "y");
  FakeDecoder fake;
  AudioCacheOptions options;
  options.disk_dir = dir + "/cache";
  {
    AudioCache cache(WithFake(&fake, options));
    ASSERT_TRUE(cache.Get(a).ok());
    ASSERT_TRUE(cache.Get(b).ok());
    EXPECT_EQ(cache.stats().disk_bytes, 800 * sizeof(float) + 2 * 32);
  }
  EXPECT_EQ(fake.calls(), 2);
  AudioCache second(WithFake(&fake, options));
  AudioInfo info;
  auto audio = second.Get(a, &info);
  ASSERT_TRUE(audio.ok()) << audio.status();
  EXPECT_EQ((*audio)->size(), 300u);
  EXPECT_EQ((**audio)[0], 300.f);
  EXPECT_EQ(info.source_rate, 8000);
  EXPECT_EQ(fake.calls(), 2);
  EXPECT_EQ(second.stats().disk_hits, 1);
  // Editing the file invalidates its entry.
  testing::WriteText(a, "changed");
  AudioCache third(WithFake(&fake, options));
  ASSERT_TRUE(third.Get(a).ok());
  EXPECT_EQ(fake.calls(), 3);
  std::filesystem::remove_all(dir);
}

TEST(AudioCacheTest, DiskBoundRemovesOldestFiles) {
  const std::string dir = ftune::testing::MakeTempDir("audio_cache");
  FakeDecoder fake;
  AudioCacheOptions options;
  options.disk_dir = dir + "/cache";
  options.max_disk_bytes = 2 * (1000 * sizeof(float) + 32);
  AudioCache cache(WithFake(&fake, options));
  for (int i = 0; i < 5; ++i) {
    const std::string path = dir + "/audio" + std::to_string(i) + "/len:1000";
    testing::WriteText(path, "x");
    ASSERT_TRUE(cache.Get(path).ok());
  }
  EXPECT_LE(cache.stats().disk_bytes, options.max_disk_bytes);
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(options.disk_dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 2);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ftune::data
