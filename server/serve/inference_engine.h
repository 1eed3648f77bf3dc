// The serving core of ftune, free of RPC: loaded model versions and a dynamic batcher per
// model. Requests are queued (bounded), grouped up to max_batch or max_delay, padded with a
// lengths vector, run in one forward pass, and answered through a callback on the batch
// thread. A reload builds the new version off to the side and swaps it in between batches.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/model/checkpoint.h"

namespace ftune::serve {

// What one forward pass did; reported to EngineOptions::on_batch.
struct BatchReport {
  std::string model_id;
  int size = 0;
  absl::Duration forward;
};

struct EngineOptions {
  // Largest batch one forward pass takes.
  int max_batch = 8;
  // How long the first request of a batch waits for company.
  absl::Duration max_delay = absl::Milliseconds(5);
  // Requests waiting per model beyond which new ones get RESOURCE_EXHAUSTED.
  int queue_limit = 64;
  // "cpu", "cuda", "cuda:N" or "auto".
  std::string device = "auto";
  // auto | fp32 | bf16 | fp16 (auto: bf16 on CPUs with native bf16, fp16 on CUDA, else fp32).
  std::string precision = "auto";
  // Intra-op threads; 0 = all cores.
  int threads = 0;
  // Called on the batch thread after each forward pass (metrics); must not block.
  std::function<void(const BatchReport&)> on_batch;
};

struct ModelSource {
  std::string id;
  std::string path;
};

// One loaded version of a model; immutable once published.
struct ServedModel {
  std::string id;
  std::string path;
  uint32_t version = 0;
  model::LoadedModel loaded;
  std::string precision;  // fp32 | bf16 | fp16
  std::string device;
  absl::Time load_time;
  // How long loading the folder took.
  absl::Duration load_duration;
  uint64_t parameters = 0;
};

struct Classification {
  // Probability per label, in the model's id order.
  std::vector<float> probabilities;
  // The version that answered (labels, id, version).
  std::shared_ptr<const ServedModel> model;
};

struct ModelStatus {
  std::shared_ptr<const ServedModel> current;
  std::string last_reload_error;
  // Clips waiting for a forward pass.
  int queued = 0;
};

class InferenceEngine {
 public:
  using Callback = std::function<void(absl::StatusOr<Classification>)>;

  // Loads every model; fails naming the first folder that does not load.
  static absl::StatusOr<std::unique_ptr<InferenceEngine>> Create(
      const EngineOptions& options, const std::vector<ModelSource>& models);
  ~InferenceEngine();

  // Queues one clip: 16 kHz mono samples, not yet normalised. `done` runs exactly once, on
  // the batch thread (or inline for an immediate error): NOT_FOUND for an unknown model
  // (empty id = the only model), RESOURCE_EXHAUSTED when the queue is full,
  // DEADLINE_EXCEEDED when `deadline` passed before the clip's turn came.
  void Classify(const std::string& model_id, std::vector<float> samples, absl::Time deadline,
                Callback done);

  std::vector<ModelStatus> ListModels() const;

  // The id that `model_id` names (empty = the only model), or NOT_FOUND listing the ids.
  absl::StatusOr<std::string> ResolveModel(const std::string& model_id) const;
  // The version of `model_id` serving now, or NOT_FOUND.
  absl::StatusOr<std::shared_ptr<const ServedModel>> Current(const std::string& model_id) const;
  // False once Shutdown has begun.
  bool ready() const;

  // Loads the model's folder again; on success later batches use the new version, on failure
  // the old one keeps serving and the error is returned and remembered.
  absl::StatusOr<std::shared_ptr<const ServedModel>> Reload(const std::string& model_id);

  // Answers everything still queued with UNAVAILABLE and stops the batch threads.
  void Shutdown();

 private:
  struct Request {
    std::vector<float> samples;
    absl::Time deadline;
    Callback done;
  };
  struct Slot;

  InferenceEngine(const EngineOptions& options, torch::Device device);
  absl::StatusOr<std::shared_ptr<const ServedModel>> Load(const ModelSource& source,
                                                         uint32_t version) const;
  void BatchLoop(Slot* slot);
  void RunBatch(const std::shared_ptr<const ServedModel>& model, std::vector<Request>& batch);
  Slot* FindSlot(const std::string& model_id) const;

  const EngineOptions options_;
  const torch::Device device_;
  bool use_autocast_ = false;
  torch::Dtype reduced_dtype_ = torch::kBFloat16;  // with use_autocast_
  std::string precision_name_ = "fp32";
  std::map<std::string, std::unique_ptr<Slot>> slots_;
  std::atomic<bool> shut_down_{false};
};

}  // namespace ftune::serve
