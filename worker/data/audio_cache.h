// Decoded 16 kHz audio by path, shared by dataset scanning and every loader thread so each file
// is decoded once. Memory may be bounded (least recently used entries are dropped) and backed
// by a disk folder of decoded float32 files, itself optionally bounded.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/audio.h"

namespace ftune::data {

struct AudioCacheOptions {
  // Bytes of decoded audio kept in memory; 0 = unbounded.
  size_t max_memory_bytes = 0;
  // Folder for decoded audio that falls out of memory (or survives the process); "" = none.
  std::string disk_dir;
  // Bytes kept in disk_dir; 0 = unbounded. Oldest files written by this cache go first.
  size_t max_disk_bytes = 0;
  // Decoder; DecodeFile unless a test substitutes a fake.
  std::function<absl::StatusOr<std::vector<float>>(const std::string&, AudioInfo*)> decode;
};

struct AudioCacheStats {
  int64_t memory_hits = 0;
  int64_t disk_hits = 0;
  int64_t decodes = 0;
  int64_t evictions = 0;
  size_t memory_bytes = 0;
  size_t disk_bytes = 0;
};

class AudioCache {  // thread-safe
 public:
  explicit AudioCache(size_t max_memory_bytes = 0 /*0 = unbounded*/, std::string disk_dir = "");
  explicit AudioCache(AudioCacheOptions options);
  AudioCache(const AudioCache&) = delete;
  AudioCache& operator=(const AudioCache&) = delete;

  // Decoded audio of `path`, decoding it on first use; concurrent callers for the same path
  // share one decode. Decode errors are returned (and not cached). `info`, when given, gets the
  // source's rate, channels and duration.
  absl::StatusOr<std::shared_ptr<const std::vector<float>>> Get(const std::string& path,
                                                                AudioInfo* info = nullptr);

  AudioCacheStats stats() const;

 private:
  struct Entry {
    std::shared_ptr<const std::vector<float>> audio;
    AudioInfo info;
  };
  using Result = absl::StatusOr<Entry>;

  Result Load(const std::string& path);
  std::string DiskPath(const std::string& path) const;
  bool ReadDisk(const std::string& file, Entry* entry);
  void WriteDisk(const std::string& file, const Entry& entry);
  void InsertLocked(const std::string& path, const Entry& entry);

  AudioCacheOptions options_;
  mutable std::mutex mu_;
  // Most recently used at the front.
  std::list<std::string> lru_;
  struct Slot {
    Entry entry;
    std::list<std::string>::iterator lru_pos;
  };
  std::unordered_map<std::string, Slot> memory_;
  std::unordered_map<std::string, std::shared_future<Result>> in_flight_;
  // Disk files written by this cache, oldest first, with their sizes.
  std::list<std::pair<std::string, size_t>> disk_files_;
  AudioCacheStats stats_;
};

}  // namespace ftune::data
