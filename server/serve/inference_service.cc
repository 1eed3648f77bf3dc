#include "server/serve/inference_service.h"

#include <algorithm>

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
                                           std::shared_ptr<const Authorizer> authorizer,
                                           ServeMetrics* metrics)
    : engine_(engine), limits_(limits), authorizer_(std::move(authorizer)), metrics_(metrics) {}

absl::StatusOr<std::vector<float>> InferenceServiceImpl::DecodeAudio(
    const ftune::v1::ClassifyRequest& request) const {
  switch (request.audio_case()) {
    case ftune::v1::ClassifyRequest::kAudioFile:
      return PrepareAudioFile(request.audio_file(), limits_, "audio_file");
    case ftune::v1::ClassifyRequest::kPcm:
      return PreparePcm(request.pcm().samples().data(), request.pcm().samples_size(),
                        request.pcm().sample_rate(), limits_, "pcm.samples", "pcm.sample_rate");
    case ftune::v1::ClassifyRequest::AUDIO_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("the request has no audio (audio_file or pcm)");
}

grpc::ServerUnaryReactor* InferenceServiceImpl::Classify(
    grpc::CallbackServerContext* context, const ftune::v1::ClassifyRequest* request,
    ftune::v1::ClassifyResponse* response) {
  const absl::Time received = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // Every answer goes through here, so each is counted once.
  auto finish = [this, reactor, received,
                 model_id = request->model_id()](const absl::Status& status) {
    if (metrics_ != nullptr) {
      metrics_->RecordRequest(kProtocolGrpc, model_id, status, absl::Now() - received);
    }
    reactor->Finish(ToGrpcStatus(status));
  };
  if (absl::Status auth = authorizer_->Check(*context, Scope::kClient); !auth.ok()) {
    finish(auth);
    return reactor;
  }
  absl::StatusOr<std::vector<float>> samples = DecodeAudio(*request);
  if (!samples.ok()) {
    finish(samples.status());
    return reactor;
  }
  const double audio_seconds = static_cast<double>(samples->size()) / data::kSampleRate;
  const int top_k = request->top_k() > 0 ? static_cast<int>(request->top_k()) : 3;

  const absl::Time deadline = absl::FromChrono(context->deadline());
  engine_->Classify(
      request->model_id(), std::move(*samples), deadline,
      [finish, response, received, audio_seconds, top_k](absl::StatusOr<Classification> result) {
        if (!result.ok()) {
          finish(result.status());
          return;
        }
        const std::vector<std::string>& labels = result->model->loaded.config.id2label;
        const std::vector<float>& p = result->probabilities;
        const std::vector<int> order = RankLabels(p);
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
        finish(absl::OkStatus());
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
