#include "server/serve/oip_grpc_service.h"

#include <cstring>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "common/version.h"
#include "server/serve/oip.h"

namespace ftune::serve {
namespace {

using Parameters = google::protobuf::Map<std::string, inference::InferParameter>;

grpc::ServerUnaryReactor* FinishWith(grpc::CallbackServerContext* context,
                                     const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// `name` from the input's parameters, else the request's.
const inference::InferParameter* FindParameter(const Parameters& input, const Parameters& request,
                                               const std::string& name) {
  if (auto it = input.find(name); it != input.end()) return &it->second;
  if (auto it = request.find(name); it != request.end()) return &it->second;
  return nullptr;
}

absl::StatusOr<OipInferRequest> FromProto(const inference::ModelInferRequest& proto) {
  OipInferRequest request;
  request.id = proto.id();
  request.model = proto.model_name();
  request.version = proto.model_version();
  if (proto.inputs_size() != 1) {
    return absl::InvalidArgumentError(
        "inputs must hold one tensor, 'waveform' (FP32, shape [B, N])");
  }
  const inference::ModelInferRequest::InferInputTensor& input = proto.inputs(0);
  request.input_name = input.name();
  request.datatype = input.datatype();
  request.shape.assign(input.shape().begin(), input.shape().end());
  if (proto.raw_input_contents_size() > 0) {
    const std::string& raw = proto.raw_input_contents(0);
    if (proto.raw_input_contents_size() != 1 || raw.size() % sizeof(float) != 0) {
      return absl::InvalidArgumentError(
          "raw_input_contents must hold one FP32 tensor (a multiple of 4 bytes)");
    }
    request.data.resize(raw.size() / sizeof(float));
    std::memcpy(request.data.data(), raw.data(), raw.size());  // little-endian, as sent
  } else {
    request.data.assign(input.contents().fp32_contents().begin(),
                        input.contents().fp32_contents().end());
  }
  if (const inference::InferParameter* rate =
          FindParameter(input.parameters(), proto.parameters(), "sample_rate")) {
    switch (rate->parameter_choice_case()) {
      case inference::InferParameter::kInt64Param:
        request.sample_rate = static_cast<double>(rate->int64_param());
        break;
      case inference::InferParameter::kUint64Param:
        request.sample_rate = static_cast<double>(rate->uint64_param());
        break;
      case inference::InferParameter::kDoubleParam:
        request.sample_rate = rate->double_param();
        break;
      default:
        return absl::InvalidArgumentError("parameters.sample_rate must be a number");
    }
  }
  if (const inference::InferParameter* lengths =
          FindParameter(input.parameters(), proto.parameters(), "lengths")) {
    for (absl::string_view part : absl::StrSplit(lengths->string_param(), ',')) {
      int64_t length = 0;
      if (!absl::SimpleAtoi(part, &length)) {
        return absl::InvalidArgumentError(
            "parameters.lengths must be a string of whole numbers, \"n1,n2,...\"");
      }
      request.lengths.push_back(length);
    }
  }
  for (const auto& output : proto.outputs()) request.outputs.push_back(output.name());
  return request;
}

void ToProto(const OipInferResult& result, const std::string& id, bool raw,
             inference::ModelInferResponse* proto) {
  proto->set_model_name(result.model->id);
  proto->set_model_version(std::to_string(result.model->version));
  proto->set_id(id);
  const int64_t classes = result.model->loaded.config.num_labels();
  if (result.probabilities_requested) {
    auto* output = proto->add_outputs();
    output->set_name(kOipProbabilities);
    output->set_datatype("FP32");
    output->add_shape(result.rows);
    output->add_shape(classes);
    if (raw) {
      proto->add_raw_output_contents(reinterpret_cast<const char*>(result.probabilities.data()),
                                     result.probabilities.size() * sizeof(float));
    } else {
      *output->mutable_contents()->mutable_fp32_contents() = {result.probabilities.begin(),
                                                              result.probabilities.end()};
    }
  }
  if (result.label_requested) {
    auto* output = proto->add_outputs();
    output->set_name(kOipLabel);
    output->set_datatype("BYTES");
    output->add_shape(result.rows);
    if (raw) {
      proto->add_raw_output_contents(SerializeBytesTensor(result.labels));
    } else {
      for (const std::string& label : result.labels) {
        output->mutable_contents()->add_bytes_contents(label);
      }
    }
  }
}

}  // namespace

OipGrpcService::OipGrpcService(InferenceEngine* engine, ServiceLimits limits,
                               std::shared_ptr<const Authorizer> authorizer, ServeMetrics* metrics)
    : engine_(engine), limits_(limits), authorizer_(std::move(authorizer)), metrics_(metrics) {}

grpc::ServerUnaryReactor* OipGrpcService::ServerLive(grpc::CallbackServerContext* context,
                                                     const inference::ServerLiveRequest*,
                                                     inference::ServerLiveResponse* response) {
  response->set_live(true);
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* OipGrpcService::ServerReady(grpc::CallbackServerContext* context,
                                                      const inference::ServerReadyRequest*,
                                                      inference::ServerReadyResponse* response) {
  response->set_ready(engine_->ready());
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* OipGrpcService::ModelReady(grpc::CallbackServerContext* context,
                                                     const inference::ModelReadyRequest* request,
                                                     inference::ModelReadyResponse* response) {
  if (absl::Status auth = authorizer_->Check(*context, Scope::kClient); !auth.ok()) {
    return FinishWith(context, auth);
  }
  auto model = FindOipModel(*engine_, request->name(), request->version());
  if (!model.ok()) return FinishWith(context, model.status());
  response->set_ready(engine_->ready());
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* OipGrpcService::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  if (absl::Status auth = authorizer_->Check(*context, Scope::kClient); !auth.ok()) {
    return FinishWith(context, auth);
  }
  response->set_name("ftserve");
  response->set_version(kVersion);
  for (const std::string& extension : OipExtensions()) response->add_extensions(extension);
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* OipGrpcService::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  if (absl::Status auth = authorizer_->Check(*context, Scope::kClient); !auth.ok()) {
    return FinishWith(context, auth);
  }
  auto model = FindOipModel(*engine_, request->name(), request->version());
  if (!model.ok()) return FinishWith(context, model.status());
  response->set_name((*model)->id);
  response->add_versions(std::to_string((*model)->version));
  response->set_platform(kOipPlatform);
  auto fill = [](const std::vector<OipTensorSpec>& specs, auto* tensors) {
    for (const OipTensorSpec& spec : specs) {
      auto* tensor = tensors->Add();
      tensor->set_name(spec.name);
      tensor->set_datatype(spec.datatype);
      for (int64_t d : spec.shape) tensor->add_shape(d);
    }
  };
  fill(OipInputs(**model), response->mutable_inputs());
  fill(OipOutputs(**model), response->mutable_outputs());
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* OipGrpcService::ModelInfer(grpc::CallbackServerContext* context,
                                                     const inference::ModelInferRequest* request,
                                                     inference::ModelInferResponse* response) {
  const absl::Time received = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto finish = [this, reactor, received,
                 model = request->model_name()](const absl::Status& status) {
    if (metrics_ != nullptr) {
      metrics_->RecordRequest(kProtocolGrpc, model, status, absl::Now() - received);
    }
    reactor->Finish(ToGrpcStatus(status));
  };
  if (absl::Status auth = authorizer_->Check(*context, Scope::kClient); !auth.ok()) {
    finish(auth);
    return reactor;
  }
  absl::StatusOr<OipInferRequest> parsed = FromProto(*request);
  if (!parsed.ok()) {
    finish(parsed.status());
    return reactor;
  }
  const bool raw = request->raw_input_contents_size() > 0;
  RunOipInferAsync(
      *engine_, *parsed, limits_, absl::FromChrono(context->deadline()),
      [finish, response, raw, id = request->id()](absl::StatusOr<OipInferResult> result) {
        if (result.ok()) ToProto(*result, id, raw, response);
        finish(result.status());
      });
  return reactor;
}

}  // namespace ftune::serve
