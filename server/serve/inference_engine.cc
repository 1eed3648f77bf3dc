#include "server/serve/inference_engine.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"
#include "worker/data/audio.h"
#include "worker/model/device.h"
#include "worker/train/precision.h"

namespace ftune::serve {

struct InferenceEngine::Slot {
  ModelSource source;
  std::thread thread;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<Request> queue;
  bool stopping = false;
  std::shared_ptr<const ServedModel> current;
  std::string last_reload_error;

  // One reload of this model at a time.
  std::mutex reload_mu;
};


InferenceEngine::InferenceEngine(const EngineOptions& options, torch::Device device)
    : options_(options), device_(device) {}

absl::StatusOr<std::unique_ptr<InferenceEngine>> InferenceEngine::Create(
    const EngineOptions& options, const std::vector<ModelSource>& models) {
  if (models.empty()) return absl::InvalidArgumentError("no model to serve (--model DIR)");
  if (options.max_batch < 1) return absl::InvalidArgumentError("max_batch must be >= 1");
  if (options.queue_limit < 1) return absl::InvalidArgumentError("queue_limit must be >= 1");
  ASSIGN_OR_RETURN(torch::Device device, model::ParseDevice(options.device));
  ASSIGN_OR_RETURN(train::RequestedPrecision requested,
                   train::ParseRequestedPrecision(options.precision));
  ASSIGN_OR_RETURN(train::PrecisionChoice choice,
                   train::ChoosePrecision(requested, device.is_cuda(), train::HostCpuFeatures(),
                                          /*cuda_bf16=*/device.is_cuda()));

  std::unique_ptr<InferenceEngine> engine(new InferenceEngine(options, device));
  engine->use_autocast_ = choice.dtype != train::ComputeDtype::kFp32;
  engine->reduced_dtype_ = train::TorchDtype(choice.dtype);
  engine->precision_name_ = train::ComputeDtypeName(choice.dtype);
  for (const ModelSource& source : models) {
    if (engine->slots_.count(source.id) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("two models share the id '", source.id, "'"));
    }
    ASSIGN_OR_RETURN(std::shared_ptr<const ServedModel> loaded, engine->Load(source, 1));
    auto slot = std::make_unique<Slot>();
    slot->source = source;
    slot->current = std::move(loaded);
    engine->slots_[source.id] = std::move(slot);
  }
  for (auto& [id, slot] : engine->slots_) {
    Slot* raw = slot.get();
    slot->thread = std::thread([engine = engine.get(), raw] { engine->BatchLoop(raw); });
  }
  spdlog::info("serving {} model(s) on {} in {} ({})", engine->slots_.size(), device.str(),
               engine->precision_name_, choice.reason);
  return engine;
}

InferenceEngine::~InferenceEngine() { Shutdown(); }

absl::StatusOr<std::shared_ptr<const ServedModel>> InferenceEngine::Load(
    const ModelSource& source, uint32_t version) const {
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(model::LoadedModel loaded, model::LoadModel(source.path, {}, /*seed=*/0));
  if (loaded.config.num_labels() < 1) {
    return absl::FailedPreconditionError(
        absl::StrCat(source.path, ": config.json has no id2label; not a classifier"));
  }
  auto served = std::make_shared<ServedModel>();
  served->id = source.id;
  served->path = source.path;
  served->version = version;
  try {
    loaded.model->to(device_);
    loaded.model->eval();
    for (const auto& p : loaded.model->parameters()) served->parameters += p.numel();
    // Weights at the compute dtype once, not cast by autocast on every forward pass (1.45x
    // faster for hubert-base at bf16, model_hubert_bench).
    if (use_autocast_) loaded.model->prepare_for_inference(reduced_dtype_);
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat(source.path, ": cannot move the model to ", device_.str(), ": ",
                     e.what_without_backtrace()));
  }
  served->loaded = std::move(loaded);
  served->precision = precision_name_;
  served->device = device_.str();
  served->load_time = absl::Now();
  served->load_duration = served->load_time - start;
  return std::shared_ptr<const ServedModel>(std::move(served));
}

InferenceEngine::Slot* InferenceEngine::FindSlot(const std::string& model_id) const {
  if (model_id.empty() && slots_.size() == 1) return slots_.begin()->second.get();
  auto it = slots_.find(model_id);
  return it == slots_.end() ? nullptr : it->second.get();
}

absl::StatusOr<std::string> InferenceEngine::ResolveModel(const std::string& model_id) const {
  if (Slot* slot = FindSlot(model_id); slot != nullptr) return slot->source.id;
  std::vector<std::string> ids;
  for (const auto& [id, s] : slots_) ids.push_back(id);
  return absl::NotFoundError(
      model_id.empty()
          ? absl::StrCat("several models are served; name one of: ", absl::StrJoin(ids, ", "))
          : absl::StrCat("no model '", model_id, "'; served: ", absl::StrJoin(ids, ", ")));
}

absl::StatusOr<std::shared_ptr<const ServedModel>> InferenceEngine::Current(
    const std::string& model_id) const {
  ASSIGN_OR_RETURN(std::string id, ResolveModel(model_id));
  Slot* slot = slots_.at(id).get();
  std::lock_guard<std::mutex> lock(slot->mu);
  return slot->current;
}

bool InferenceEngine::ready() const { return !shut_down_.load(); }

void InferenceEngine::Classify(const std::string& model_id, std::vector<float> samples,
                               absl::Time deadline, Callback done) {
  Slot* slot = FindSlot(model_id);
  if (slot == nullptr) {
    done(ResolveModel(model_id).status());
    return;
  }
  {
    std::lock_guard<std::mutex> lock(slot->mu);
    // A clip shorter than the feature encoder's receptive field has no frame to classify.
    const int64_t frames = slot->current->loaded.model->num_frames(
        static_cast<int64_t>(samples.size()));
    if (frames < 1) {
      done(absl::InvalidArgumentError(absl::StrCat(
          "the clip has ", samples.size(), " samples at 16 kHz, too short for one frame of ",
          "model '", slot->source.id, "'")));
      return;
    }
    if (slot->stopping) {
      done(absl::UnavailableError("the server is shutting down"));
      return;
    }
    if (static_cast<int>(slot->queue.size()) >= options_.queue_limit) {
      done(absl::ResourceExhaustedError(absl::StrCat(
          "model '", slot->source.id, "' has ", slot->queue.size(),
          " requests waiting (the limit); retry later")));
      return;
    }
    slot->queue.push_back(Request{std::move(samples), deadline, std::move(done)});
  }
  slot->cv.notify_one();
}

void InferenceEngine::BatchLoop(Slot* slot) {
  // OpenMP thread counts are per thread: set them where the forward passes run.
  model::SetIntraOpThreads(options_.threads);
  for (;;) {
    std::vector<Request> batch;
    std::shared_ptr<const ServedModel> model;
    {
      std::unique_lock<std::mutex> lock(slot->mu);
      slot->cv.wait(lock, [slot] { return slot->stopping || !slot->queue.empty(); });
      if (slot->stopping) break;
      // The first request waits up to max_delay for others to share its forward pass.
      const auto until = std::chrono::steady_clock::now() +
                         absl::ToChronoNanoseconds(options_.max_delay);
      while (static_cast<int>(slot->queue.size()) < options_.max_batch && !slot->stopping) {
        if (slot->cv.wait_until(lock, until) == std::cv_status::timeout) break;
      }
      const size_t take = std::min<size_t>(slot->queue.size(), options_.max_batch);
      for (size_t i = 0; i < take; ++i) {
        batch.push_back(std::move(slot->queue.front()));
        slot->queue.pop_front();
      }
      model = slot->current;
    }
    RunBatch(model, batch);
  }
  // Shutting down: answer whatever is left.
  std::deque<Request> left;
  {
    std::lock_guard<std::mutex> lock(slot->mu);
    left.swap(slot->queue);
  }
  for (Request& r : left) r.done(absl::UnavailableError("the server is shutting down"));
}

void InferenceEngine::RunBatch(const std::shared_ptr<const ServedModel>& model,
                               std::vector<Request>& batch) {
  const absl::Time now = absl::Now();
  std::vector<Request*> live;
  for (Request& r : batch) {
    if (r.deadline < now) {
      r.done(absl::DeadlineExceededError("the deadline passed while the clip was queued"));
    } else {
      live.push_back(&r);
    }
  }
  if (live.empty()) return;

  int64_t longest = 0;
  for (Request* r : live) longest = std::max<int64_t>(longest, r->samples.size());
  const int64_t rows = static_cast<int64_t>(live.size());
  torch::Tensor audio = torch::zeros({rows, longest}, torch::kFloat32);
  torch::Tensor lengths = torch::empty({rows}, torch::kInt64);
  float* audio_data = audio.data_ptr<float>();
  for (int64_t i = 0; i < rows; ++i) {
    const std::vector<float>& samples = live[i]->samples;
    float* row = audio_data + i * longest;
    std::copy(samples.begin(), samples.end(), row);
    if (model->loaded.preprocessor.do_normalize) {
      data::Normalize(row, static_cast<int64_t>(samples.size()));
    }
    lengths[i] = static_cast<int64_t>(samples.size());
  }

  absl::StatusOr<torch::Tensor> probabilities;
  const absl::Time forward_start = absl::Now();
  try {
    torch::NoGradGuard no_grad;
    model::AutocastGuard autocast(device_, use_autocast_);
    // A published version is immutable; forward() itself is non-const, so take a handle.
    model::HubertForSequenceClassification net = model->loaded.model;
    torch::Tensor logits;
    if (model->loaded.preprocessor.return_attention_mask) {
      logits = net->forward(audio.to(device_), lengths.to(device_));
    } else {
      // Group-norm feature encoders normalise over time, so padding would leak into every
      // frame: run the encoder on each clip alone, then batch the rest with a frame mask.
      // Each answer then equals the clip's unbatched one.
      std::vector<torch::Tensor> features;
      int64_t most_frames = 0;
      for (int64_t i = 0; i < rows; ++i) {
        torch::Tensor clip = audio[i].narrow(0, 0, lengths[i].item<int64_t>()).unsqueeze(0);
        features.push_back(net->extract_features(clip.to(device_)));
        most_frames = std::max(most_frames, features.back().size(1));
      }
      for (torch::Tensor& f : features) {
        f = torch::constant_pad_nd(f, {0, 0, 0, most_frames - f.size(1)});
      }
      logits = net->forward_features(torch::cat(features, 0), lengths.to(device_));
    }
    probabilities = torch::softmax(logits.to(torch::kFloat32), -1).cpu().contiguous();
  } catch (const c10::Error& e) {
    probabilities = absl::InternalError(
        absl::StrCat("forward pass failed: ", e.what_without_backtrace()));
  }
  if (options_.on_batch) {
    options_.on_batch(BatchReport{model->id, static_cast<int>(rows), absl::Now() - forward_start});
  }
  for (int64_t i = 0; i < rows; ++i) {
    if (!probabilities.ok()) {
      live[i]->done(probabilities.status());
      continue;
    }
    const float* p = probabilities->data_ptr<float>() + i * probabilities->size(1);
    Classification result;
    result.probabilities.assign(p, p + probabilities->size(1));
    result.model = model;
    live[i]->done(std::move(result));
  }
}

std::vector<ModelStatus> InferenceEngine::ListModels() const {
  std::vector<ModelStatus> out;
  for (const auto& [id, slot] : slots_) {
    std::lock_guard<std::mutex> lock(slot->mu);
    out.push_back(
        ModelStatus{slot->current, slot->last_reload_error, static_cast<int>(slot->queue.size())});
  }
  return out;
}

absl::StatusOr<std::shared_ptr<const ServedModel>> InferenceEngine::Reload(
    const std::string& model_id) {
  Slot* slot = FindSlot(model_id);
  if (slot == nullptr) return absl::NotFoundError(absl::StrCat("no model '", model_id, "'"));
  std::lock_guard<std::mutex> reload_lock(slot->reload_mu);
  uint32_t next_version;
  {
    std::lock_guard<std::mutex> lock(slot->mu);
    next_version = slot->current->version + 1;
  }
  absl::StatusOr<std::shared_ptr<const ServedModel>> loaded = Load(slot->source, next_version);
  std::lock_guard<std::mutex> lock(slot->mu);
  if (!loaded.ok()) {
    slot->last_reload_error = std::string(loaded.status().message());
    return loaded.status();
  }
  slot->current = *loaded;
  slot->last_reload_error.clear();
  return *loaded;
}

void InferenceEngine::Shutdown() {
  shut_down_.store(true);
  for (auto& [id, slot] : slots_) {
    {
      std::lock_guard<std::mutex> lock(slot->mu);
      slot->stopping = true;
    }
    slot->cv.notify_all();
  }
  for (auto& [id, slot] : slots_) {
    if (slot->thread.joinable()) slot->thread.join();
  }
}

}  // namespace ftune::serve
