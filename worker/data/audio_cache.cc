#include "worker/data/audio_cache.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ftune::data {
namespace {

// Disk cache file: magic, version, source rate, channels, seconds, sample count, samples.
constexpr char kDiskMagic[8] = {'F', 'T', 'A', 'U', 'D', 'I', 'O', '1'};

struct DiskHeader {
  char magic[8];
  int32_t source_rate;
  int32_t channels;
  double seconds;
  uint64_t samples;
};

size_t EntryBytes(const std::vector<float>& audio) { return audio.size() * sizeof(float); }

}  // namespace

AudioCache::AudioCache(size_t max_memory_bytes, std::string disk_dir)
    : AudioCache(AudioCacheOptions{max_memory_bytes, std::move(disk_dir), 0, nullptr}) {}

AudioCache::AudioCache(AudioCacheOptions options) : options_(std::move(options)) {
  if (!options_.decode) options_.decode = [](const std::string& p, AudioInfo* i) {
    return DecodeFile(p, i);
  };
  if (!options_.disk_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options_.disk_dir, ec);
  }
}

absl::StatusOr<std::shared_ptr<const std::vector<float>>> AudioCache::Get(const std::string& path,
                                                                          AudioInfo* info) {
  std::shared_future<Result> future;
  bool owner = false;
  std::promise<Result> promise;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = memory_.find(path); it != memory_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.lru_pos);
      ++stats_.memory_hits;
      if (info != nullptr) *info = it->second.entry.info;
      return it->second.entry.audio;
    }
    if (auto it = in_flight_.find(path); it != in_flight_.end()) {
      future = it->second;
    } else {
      future = promise.get_future().share();
      in_flight_.emplace(path, future);
      owner = true;
    }
  }
  if (owner) {
    Result result = Load(path);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (result.ok()) InsertLocked(path, *result);
      in_flight_.erase(path);
    }
    promise.set_value(std::move(result));
  }
  const Result& result = future.get();
  if (!result.ok()) return result.status();
  if (info != nullptr) *info = result->info;
  return result->audio;
}

AudioCacheStats AudioCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

AudioCache::Result AudioCache::Load(const std::string& path) {
  std::string disk_file;
  if (!options_.disk_dir.empty()) {
    disk_file = DiskPath(path);
    Entry entry;
    if (!disk_file.empty() && ReadDisk(disk_file, &entry)) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.disk_hits;
      return entry;
    }
  }
  Entry entry;
  auto audio = options_.decode(path, &entry.info);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.decodes;
  }
  if (!audio.ok()) return audio.status();
  entry.audio = std::make_shared<const std::vector<float>>(std::move(audio).value());
  if (!disk_file.empty()) WriteDisk(disk_file, entry);
  return entry;
}

// Named by a hash of the path, size and modification time, so an edited file is decoded again.
std::string AudioCache::DiskPath(const std::string& path) const {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return "";
  std::string key = absl::StrCat(path, "|", st.st_size, "|", st.st_mtim.tv_sec, ".",
                                 st.st_mtim.tv_nsec);
  return absl::StrFormat("%s/%016x.f32", options_.disk_dir, std::hash<std::string>{}(key));
}

bool AudioCache::ReadDisk(const std::string& file, Entry* entry) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return false;
  DiskHeader header;
  if (!in.read(reinterpret_cast<char*>(&header), sizeof(header))) return false;
  if (std::memcmp(header.magic, kDiskMagic, sizeof(kDiskMagic)) != 0) return false;
  std::vector<float> audio(header.samples);
  if (!in.read(reinterpret_cast<char*>(audio.data()), EntryBytes(audio))) return false;
  entry->info = AudioInfo{header.source_rate, header.channels, header.seconds};
  entry->audio = std::make_shared<const std::vector<float>>(std::move(audio));
  return true;
}

// Written under a temporary name and renamed, so a reader never sees half a file. A failed
// write only costs a later decode, so it is not an error.
void AudioCache::WriteDisk(const std::string& file, const Entry& entry) {
  DiskHeader header;
  std::memcpy(header.magic, kDiskMagic, sizeof(kDiskMagic));
  header.source_rate = entry.info.source_rate;
  header.channels = entry.info.channels;
  header.seconds = entry.info.seconds;
  header.samples = entry.audio->size();
  const std::string tmp = absl::StrCat(file, ".tmp", std::hash<std::thread::id>{}(
                                                         std::this_thread::get_id()));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(&header), sizeof(header));
    out.write(reinterpret_cast<const char*>(entry.audio->data()), EntryBytes(*entry.audio));
    if (!out) {
      out.close();
      std::remove(tmp.c_str());
      return;
    }
  }
  if (std::rename(tmp.c_str(), file.c_str()) != 0) {
    std::remove(tmp.c_str());
    return;
  }
  const size_t bytes = sizeof(header) + EntryBytes(*entry.audio);
  std::lock_guard<std::mutex> lock(mu_);
  disk_files_.emplace_back(file, bytes);
  stats_.disk_bytes += bytes;
  while (options_.max_disk_bytes > 0 && stats_.disk_bytes > options_.max_disk_bytes &&
         disk_files_.size() > 1) {
    std::remove(disk_files_.front().first.c_str());
    stats_.disk_bytes -= disk_files_.front().second;
    disk_files_.pop_front();
  }
}

void AudioCache::InsertLocked(const std::string& path, const Entry& entry) {
  const size_t bytes = EntryBytes(*entry.audio);
  // An entry larger than the whole budget is returned but not kept.
  if (options_.max_memory_bytes > 0 && bytes > options_.max_memory_bytes) return;
  lru_.push_front(path);
  memory_[path] = Slot{entry, lru_.begin()};
  stats_.memory_bytes += bytes;
  while (options_.max_memory_bytes > 0 && stats_.memory_bytes > options_.max_memory_bytes) {
    const std::string& victim = lru_.back();
    auto it = memory_.find(victim);
    stats_.memory_bytes -= EntryBytes(*it->second.entry.audio);
    memory_.erase(it);
    lru_.pop_back();
    ++stats_.evictions;
  }
}

}  // namespace ftune::data
