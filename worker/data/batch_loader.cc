#include "worker/data/batch_loader.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "worker/data/random.h"

namespace ftune::data {
namespace {

// Hugging Face's LengthGroupedSampler megabatch: 50 batches.
constexpr int kMegabatchBatches = 50;
// Salts that keep the shuffle and crop streams independent.
constexpr uint64_t kShuffleSalt = 0x53485546ULL;
constexpr uint64_t kCropSalt = 0x43524f50ULL;

int64_t MaxSamples(const LoaderOptions& options) {
  return options.max_seconds > 0 ? int64_t(std::llround(options.max_seconds * kSampleRate)) : 0;
}

}  // namespace

std::vector<std::vector<int64_t>> PlanEpoch(const std::vector<Clip>& clips,
                                            const LoaderOptions& options) {
  const int64_t n = int64_t(clips.size());
  const int64_t per_rank = std::max(1, options.batch_size);
  const int64_t ranks = std::max(1, options.shard_count);
  const int64_t batch = per_rank * ranks;
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  if (options.shuffle) {
    Rng rng(DeriveSeed(options.seed, kShuffleSalt, uint64_t(options.epoch)));
    Shuffle(order, rng);
  }
  if (options.group_by_length) {
    const double cap = options.max_seconds > 0 ? options.max_seconds : 1e300;
    auto longer = [&](int64_t a, int64_t b) {
      return std::min(clips[a].seconds, cap) > std::min(clips[b].seconds, cap);
    };
    const int64_t mega = options.shuffle ? batch * kMegabatchBatches : std::max<int64_t>(n, 1);
    for (int64_t start = 0; start < n; start += mega) {
      std::stable_sort(order.begin() + start, order.begin() + std::min(n, start + mega), longer);
    }
  }
  std::vector<std::vector<int64_t>> plan;
  for (int64_t start = 0; start < n; start += batch) {
    const int64_t end = std::min(n, start + batch);
    const int64_t from = std::min(end, start + per_rank * options.shard_rank);
    plan.emplace_back(order.begin() + from, order.begin() + std::min(end, from + per_rank));
  }
  return plan;
}

CropWindow ChooseCrop(int64_t samples, int64_t clip_index, const LoaderOptions& options) {
  const int64_t max = MaxSamples(options);
  if (max <= 0 || samples <= max) return {0, samples};
  const int64_t slack = samples - max;
  if (!options.random_crop) return {slack / 2, max};
  Rng rng(DeriveSeed(options.seed, kCropSalt, uint64_t(options.epoch), uint64_t(clip_index)));
  return {int64_t(rng.Uniform(uint64_t(slack) + 1)), max};
}

BatchLoader::BatchLoader(std::vector<Clip> clips, AudioCache* cache, LoaderOptions options)
    : clips_(std::move(clips)),
      cache_(cache),
      options_(options),
      plan_(PlanEpoch(clips_, options_)) {
  next_build_ = next_consume_ =
      std::clamp<int64_t>(options_.start_batch, 0, int64_t(plan_.size()));
  const int64_t remaining = int64_t(plan_.size()) - next_build_;
  num_threads_ = int(std::min<int64_t>(std::max(0, options_.threads), remaining));
  for (int t = 0; t < num_threads_; ++t) threads_.emplace_back([this] { Work(); });
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

int64_t BatchLoader::num_batches() const { return int64_t(plan_.size()); }

absl::StatusOr<std::optional<Batch>> BatchLoader::Next() {
  if (!failed_.ok()) return failed_;
  std::unique_lock<std::mutex> lock(mu_);
  if (next_consume_ >= int64_t(plan_.size())) return std::optional<Batch>();
  const int64_t b = next_consume_++;
  absl::StatusOr<Batch> result = absl::UnknownError("unset");
  if (num_threads_ == 0) {
    lock.unlock();
    result = Build(b);
  } else {
    cv_.wait(lock, [&] { return ready_.count(b) > 0; });
    auto it = ready_.find(b);
    result = std::move(it->second);
    ready_.erase(it);
    lock.unlock();
    cv_.notify_all();  // a prefetch slot is free
  }
  if (!result.ok()) {
    failed_ = result.status();
    return failed_;
  }
  return std::optional<Batch>(std::move(result).value());
}

void BatchLoader::Work() {
  const int64_t window = std::max(options_.prefetch, num_threads_);
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] {
      return stop_ || next_build_ >= int64_t(plan_.size()) ||
             next_build_ < next_consume_ + window;
    });
    if (stop_ || next_build_ >= int64_t(plan_.size())) return;
    const int64_t b = next_build_++;
    lock.unlock();
    absl::StatusOr<Batch> batch = Build(b);
    lock.lock();
    ready_.emplace(b, std::move(batch));
    cv_.notify_all();
  }
}

absl::StatusOr<Batch> BatchLoader::Build(int64_t b) const {
  const std::vector<int64_t>& members = plan_[b];
  std::vector<std::shared_ptr<const std::vector<float>>> audio;
  std::vector<CropWindow> windows;
  int64_t t_max = 0;
  for (int64_t i : members) {
    auto a = cache_->Get(clips_[i].path);
    if (!a.ok()) {
      return absl::Status(a.status().code(), absl::StrCat("batch ", b, ": ", a.status().message()));
    }
    windows.push_back(ChooseCrop(int64_t((*a)->size()), i, options_));
    t_max = std::max(t_max, windows.back().length);
    audio.push_back(*std::move(a));
  }
  const int64_t n = int64_t(members.size());
  try {
    Batch batch;
    batch.audio = torch::zeros({n, t_max}, torch::kFloat32);
    batch.lengths = torch::empty({n}, torch::kInt64);
    batch.labels = torch::empty({n}, torch::kInt64);
    float* out = batch.audio.data_ptr<float>();
    int64_t* lengths = batch.lengths.data_ptr<int64_t>();
    int64_t* labels = batch.labels.data_ptr<int64_t>();
    for (int64_t r = 0; r < n; ++r) {
      float* row = out + r * t_max;
      std::memcpy(row, audio[r]->data() + windows[r].offset, windows[r].length * sizeof(float));
      if (options_.normalize) Normalize(row, windows[r].length);
      lengths[r] = windows[r].length;
      labels[r] = clips_[members[r]].label;
    }
    batch.clip_indices = members;
    return batch;
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("batch ", b, ": ", e.what()));
  }
}

}  // namespace ftune::data
