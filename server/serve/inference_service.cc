#include "server/serve/inference_service.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "google/protobuf/util/time_util.h"
#include "worker/data/audio.h"

namespace ftune::serve {
namespace {

google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

grpc::ServerUnaryReactor* FinishWith(grpc::CallbackServerContext* context,
                                     const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

ftune::v1::ModelInfo ToModelInfo(const ServedModel& model, const std::string& last_reload_error) {
  ftune::v1::ModelInfo info;
  info.set_id(model.id);
  info.set_path(model.path);
  info.set_version(model.version);
  for (const std::string& label : model.loaded.config.id2label) info.add_labels(label);
  info.set_sample_rate(static_cast<uint32_t>(model.loaded.preprocessor.sampling_rate));
  info.set_precision(model.precision);
  info.set_device(model.device);
  *info.mutable_load_time() = ToTimestamp(model.load_time);
  info.set_parameters(model.parameters);
  info.set_last_reload_error(last_reload_error);
  return info;
}

InferenceServiceImpl::InferenceServiceImpl(InferenceEngine* engine, ServiceLimits limits,
                                           std::shared_ptr<const Authorizer> authorizer)
    : engine_(engine), limits_(limits), authorizer_(std::move(authorizer)) {}

absl::StatusOr<std::vector<float>> InferenceServiceImpl::DecodeAudio(
    const ftune::v1::ClassifyRequest& request) const {
  std::vector<float> samples;
  switch (request.audio_case()) {
    case ftune::v1::ClassifyRequest::kAudioFile: {
      const std::string& bytes = request.audio_file();
      if (bytes.empty()) return absl::InvalidArgumentError("audio_file is empty");
      if (static_cast<int64_t>(bytes.size()) > limits_.max_request_bytes) {
        return absl::InvalidArgumentError(absl::StrCat("audio_file has ", bytes.size(),
                                                       " bytes; the limit is ",
                                                       limits_.max_request_bytes));
      }
      absl::StatusOr<std::vector<float>> decoded = data::DecodeBytes(bytes);
      if (!decoded.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("audio_file cannot be decoded: ", decoded.status().message()));
      }
      samples = std::move(*decoded);
      break;
    }
    case ftune::v1::ClassifyRequest::kPcm: {
      const ftune::v1::PcmAudio& pcm = request.pcm();
      if (pcm.sample_rate() < 1000 || pcm.sample_rate() > 384000) {
        return absl::InvalidArgumentError(absl::StrCat(
            "pcm.sample_rate ", pcm.sample_rate(), " is outside 1000..384000 Hz"));
      }
      if (pcm.samples_size() == 0) return absl::InvalidArgumentError("pcm.samples is empty");
      if (static_cast<int64_t>(pcm.samples_size()) * 4 > limits_.max_request_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(
            "pcm.samples has ", pcm.samples_size(), " samples; the limit is ",
            limits_.max_request_bytes / 4));
      }
      const bool finite = std::all_of(pcm.samples().begin(), pcm.samples().end(),
                                      [](float x) { return std::isfinite(x); });
      if (!finite) return absl::InvalidArgumentError("pcm.samples holds NaN or infinity");
      std::vector<float> raw(pcm.samples().begin(), pcm.samples().end());
      if (static_cast<int>(pcm.sample_rate()) == data::kSampleRate) {
        samples = std::move(raw);
      } else {
        absl::StatusOr<std::vector<float>> resampled =
            data::Resample(raw, static_cast<int>(pcm.sample_rate()), data::kSampleRate);
        if (!resampled.ok()) return resampled.status();
        samples = std::move(*resampled);
      }
      break;
    }
    case ftune::v1::ClassifyRequest::AUDIO_NOT_SET:
      return absl::InvalidArgumentError("the request has no audio (audio_file or pcm)");
  }
  const double seconds = static_cast<double>(samples.size()) / data::kSampleRate;
  if (seconds > limits_.max_audio_seconds) {
    return absl::InvalidArgumentError(absl::StrCat("the clip lasts ", seconds,
                                                   " s; the limit is ",
                                                   limits_.max_audio_seconds, " s"));
  }
  if (samples.empty()) return absl::InvalidArgumentError("the audio holds no samples");
  return samples;
}

grpc::ServerUnaryReactor* InferenceServiceImpl::Classify(
    grpc::CallbackServerContext* context, const ftune::v1::ClassifyRequest* request,
    ftune::v1::ClassifyResponse* response) {
  const absl::Time received = absl::Now();
  if (absl::Status auth = authorizer_->Check(*context, Scope::kClient); !auth.ok()) {
    return FinishWith(context, auth);
  }
  absl::StatusOr<std::vector<float>> samples = DecodeAudio(*request);
  if (!samples.ok()) return FinishWith(context, samples.status());
  const double audio_seconds = static_cast<double>(samples->size()) / data::kSampleRate;
  const int top_k = request->top_k() > 0 ? static_cast<int>(request->top_k()) : 3;

  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::Time deadline = absl::FromChrono(context->deadline());
  engine_->Classify(
      request->model_id(), std::move(*samples), deadline,
      [reactor, response, received, audio_seconds, top_k](absl::StatusOr<Classification> result) {
        if (!result.ok()) {
          reactor->Finish(ToGrpcStatus(result.status()));
          return;
        }
        const std::vector<std::string>& labels = result->model->loaded.config.id2label;
        const std::vector<float>& p = result->probabilities;
        std::vector<int> order(p.size());
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&p](int a, int b) { return p[a] > p[b]; });
        for (size_t i = 0; i < p.size(); ++i) {
          ftune::v1::LabelScore* score = response->add_scores();
          score->set_label(labels[i]);
          score->set_probability(p[i]);
        }
        for (int i = 0; i < std::min<int>(top_k, static_cast<int>(order.size())); ++i) {
          ftune::v1::LabelScore* score = response->add_top();
          score->set_label(labels[order[i]]);
          score->set_probability(p[order[i]]);
        }
        response->set_label(labels[order[0]]);
        response->set_probability(p[order[0]]);
        response->set_model_id(result->model->id);
        response->set_model_version(result->model->version);
        response->set_audio_seconds(audio_seconds);
        response->set_latency_ms(absl::ToDoubleMilliseconds(absl::Now() - received));
        reactor->Finish(grpc::Status::OK);
      });
  return reactor;
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ListModels(
    grpc::CallbackServerContext* context, const ftune::v1::ListModelsRequest* request,
    ftune::v1::ListModelsResponse* response) {
  if (absl::Status auth = authorizer_->Check(*context, Scope::kClient); !auth.ok()) {
    return FinishWith(context, auth);
  }
  for (const ModelStatus& status : engine_->ListModels()) {
    *response->add_models() = ToModelInfo(*status.current, status.last_reload_error);
  }
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ReloadModel(
    grpc::CallbackServerContext* context, const ftune::v1::ReloadModelRequest* request,
    ftune::v1::ModelInfo* response) {
  if (absl::Status auth = authorizer_->Check(*context, Scope::kAdmin); !auth.ok()) {
    return FinishWith(context, auth);
  }
  // Loading takes a while; it runs on this gRPC thread, and requests keep flowing to the
  // old version through the batch threads meanwhile.
  absl::StatusOr<std::shared_ptr<const ServedModel>> reloaded =
      engine_->Reload(request->model_id());
  if (!reloaded.ok()) return FinishWith(context, reloaded.status());
  *response = ToModelInfo(**reloaded, "");
  return FinishWith(context, absl::OkStatus());
}

}  // namespace ftune::serve
