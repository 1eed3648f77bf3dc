#include "server/serve/rest_api.h"

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/version.h"
#include "nlohmann/json.hpp"
#include "server/serve/oip.h"
#include "worker/data/audio.h"

namespace ftune::serve {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

// Triton's binary tensor data extension: the JSON header is this many bytes of the body and
// the tensors follow it as raw little-endian bytes.
constexpr char kBinaryHeaderLength[] = "Inference-Header-Content-Length";

std::string Dump(const ordered_json& value) {
  return value.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
}

// `name` from the object's `parameters`, or nullptr.
const json* Parameter(const json& holder, const char* name) {
  auto parameters = holder.find("parameters");
  if (parameters == holder.end() || !parameters->is_object()) return nullptr;
  auto value = parameters->find(name);
  return value == parameters->end() ? nullptr : &*value;
}

// An input parameter, else the request's.
const json* InputOrRequestParameter(const json& input, const json& root, const char* name) {
  const json* value = Parameter(input, name);
  return value != nullptr ? value : Parameter(root, name);
}

bool IsTrue(const json* value) {
  return value != nullptr && value->is_boolean() && value->get<bool>();
}

// The numbers of a flat or nested (row-major) JSON array; tensors here have rank <= 2.
absl::Status Flatten(const json& value, int depth, std::vector<float>* out) {
  if (value.is_array()) {
    if (depth == 2)
      return absl::InvalidArgumentError("input 'waveform' data nests deeper than its shape");
    for (const json& element : value) RETURN_IF_ERROR(Flatten(element, depth + 1, out));
    return absl::OkStatus();
  }
  if (!value.is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'waveform' data holds a non-number: ", value.dump().substr(0, 40)));
  }
  out->push_back(value.get<float>());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> IntegerArray(const json& value, absl::string_view field) {
  std::vector<int64_t> out;
  if (!value.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be an array of integers"));
  }
  for (const json& element : value) {
    if (!element.is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat(field, " must be an array of integers"));
    }
    out.push_back(element.get<int64_t>());
  }
  return out;
}

// The parsed body of an infer request, plus how the client wants the outputs.
struct ParsedInfer {
  OipInferRequest request;
  bool binary_probabilities = false;
  bool binary_label = false;
};

absl::StatusOr<ParsedInfer> ParseInfer(const HttpRequest& http) {
  absl::string_view header_text = http.body;
  absl::string_view binary;
  if (const std::string* length = http.Header(kBinaryHeaderLength); length != nullptr) {
    size_t json_bytes = 0;
    if (!absl::SimpleAtoi(*length, &json_bytes) || json_bytes > http.body.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(kBinaryHeaderLength, " '", *length, "' is not a length within the body"));
    }
    header_text = absl::string_view(http.body).substr(0, json_bytes);
    binary = absl::string_view(http.body).substr(json_bytes);
  }
  json root;
  try {
    root = json::parse(header_text.begin(), header_text.end());
  } catch (const json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat("the body is not JSON: ", e.what()));
  }
  if (!root.is_object()) return absl::InvalidArgumentError("the body must be a JSON object");

  ParsedInfer parsed;
  OipInferRequest& request = parsed.request;
  if (auto id = root.find("id"); id != root.end()) {
    if (!id->is_string()) return absl::InvalidArgumentError("id must be a string");
    request.id = id->get<std::string>();
  }
  auto inputs = root.find("inputs");
  if (inputs == root.end() || !inputs->is_array() || inputs->size() != 1 ||
      !(*inputs)[0].is_object()) {
    return absl::InvalidArgumentError(
        "inputs must be an array of one tensor, 'waveform' (FP32, shape [B, N])");
  }
  const json& input = (*inputs)[0];
  auto field = [&input](const char* name) -> const json* {
    auto it = input.find(name);
    return it == input.end() ? nullptr : &*it;
  };
  const json* name = field("name");
  const json* datatype = field("datatype");
  const json* shape = field("shape");
  if (name == nullptr || !name->is_string() || datatype == nullptr || !datatype->is_string() ||
      shape == nullptr) {
    return absl::InvalidArgumentError("inputs[0] needs name, datatype and shape");
  }
  request.input_name = name->get<std::string>();
  request.datatype = datatype->get<std::string>();
  ASSIGN_OR_RETURN(request.shape, IntegerArray(*shape, "inputs[0].shape"));

  if (const json* size = Parameter(input, "binary_data_size"); size != nullptr) {
    if (!size->is_number_unsigned() || size->get<uint64_t>() != binary.size() ||
        binary.size() % sizeof(float) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs[0].parameters.binary_data_size must be the ", binary.size(),
                       " bytes of FP32 data after the JSON header"));
    }
    request.data.resize(binary.size() / sizeof(float));
    std::memcpy(request.data.data(), binary.data(), binary.size());  // little-endian, as sent
  } else if (const json* data = field("data"); data != nullptr) {
    RETURN_IF_ERROR(Flatten(*data, 0, &request.data));
  } else {
    return absl::InvalidArgumentError("inputs[0] has no data (nor binary_data_size)");
  }

  if (const json* rate = InputOrRequestParameter(input, root, "sample_rate"); rate != nullptr) {
    if (!rate->is_number())
      return absl::InvalidArgumentError("parameters.sample_rate must be a number");
    request.sample_rate = rate->get<double>();
  }
  if (const json* lengths = InputOrRequestParameter(input, root, "lengths"); lengths != nullptr) {
    ASSIGN_OR_RETURN(request.lengths, IntegerArray(*lengths, "parameters.lengths"));
  }
  const bool binary_all = IsTrue(Parameter(root, "binary_data_output"));
  parsed.binary_probabilities = parsed.binary_label = binary_all;
  if (auto outputs = root.find("outputs"); outputs != root.end()) {
    if (!outputs->is_array()) return absl::InvalidArgumentError("outputs must be an array");
    for (const json& output : *outputs) {
      auto output_name = output.find("name");
      if (!output.is_object() || output_name == output.end() || !output_name->is_string()) {
        return absl::InvalidArgumentError("each of outputs needs a name");
      }
      const std::string requested = output_name->get<std::string>();
      request.outputs.push_back(requested);
      const bool binary_output = binary_all || IsTrue(Parameter(output, "binary_data"));
      if (requested == kOipProbabilities) parsed.binary_probabilities = binary_output;
      if (requested == kOipLabel) parsed.binary_label = binary_output;
    }
  }
  return parsed;
}

HttpResponse InferResponse(const OipInferRequest& request, const OipInferResult& result,
                           const ParsedInfer& parsed) {
  const ServedModel& model = *result.model;
  const int64_t classes = model.loaded.config.num_labels();
  ordered_json body = {{"model_name", model.id}, {"model_version", std::to_string(model.version)}};
  if (!request.id.empty()) body["id"] = request.id;
  ordered_json outputs = ordered_json::array();
  std::string binary;
  if (result.probabilities_requested) {
    ordered_json output = {{"name", kOipProbabilities},
                           {"datatype", "FP32"},
                           {"shape", ordered_json::array({result.rows, classes})}};
    if (parsed.binary_probabilities) {
      const size_t bytes = result.probabilities.size() * sizeof(float);
      binary.append(reinterpret_cast<const char*>(result.probabilities.data()), bytes);
      output["parameters"] = {{"binary_data_size", bytes}};
    } else {
      output["data"] = result.probabilities;
    }
    outputs.push_back(std::move(output));
  }
  if (result.label_requested) {
    ordered_json output = {
        {"name", kOipLabel}, {"datatype", "BYTES"}, {"shape", ordered_json::array({result.rows})}};
    if (parsed.binary_label) {
      const std::string bytes = SerializeBytesTensor(result.labels);
      binary += bytes;
      output["parameters"] = {{"binary_data_size", bytes.size()}};
    } else {
      output["data"] = result.labels;
    }
    outputs.push_back(std::move(output));
  }
  body["outputs"] = std::move(outputs);
  HttpResponse response = JsonResponse(Dump(body));
  if (!binary.empty()) {
    response.headers.emplace_back(kBinaryHeaderLength, std::to_string(response.body.size()));
    response.content_type = "application/octet-stream";
    response.body += binary;
  }
  return response;
}

ordered_json TensorsJson(const std::vector<OipTensorSpec>& tensors) {
  ordered_json out = ordered_json::array();
  for (const OipTensorSpec& tensor : tensors) {
    out.push_back({{"name", tensor.name}, {"datatype", tensor.datatype}, {"shape", tensor.shape}});
  }
  return out;
}

ordered_json MetadataJson(const ServedModel& model, const ServiceLimits& limits) {
  ordered_json parameters = {{"labels", model.loaded.config.id2label},
                             {"sample_rate", model.loaded.preprocessor.sampling_rate},
                             {"max_audio_seconds", limits.max_audio_seconds},
                             {"precision", model.precision},
                             {"device", model.device},
                             {"parameters", model.parameters}};
  return {{"name", model.id},
          {"versions", ordered_json::array({std::to_string(model.version)})},
          {"platform", kOipPlatform},
          {"inputs", TensorsJson(OipInputs(model))},
          {"outputs", TensorsJson(OipOutputs(model))},
          {"parameters", std::move(parameters)}};
}

// The audio of a :classify request and its name in errors: the body, or the form's file part.
std::pair<absl::string_view, std::string> ClassifyAudio(const HttpRequest& request) {
  if (request.parts.empty()) return {request.body, "the body"};
  const HttpRequest::Part* chosen = &request.parts.front();
  for (const HttpRequest::Part& part : request.parts) {
    if (part.name == "file" || part.name == "audio") {
      chosen = &part;
      break;
    }
  }
  return {chosen->content, absl::StrCat("form part '", chosen->name, "'")};
}

}  // namespace

RestApi::RestApi(InferenceEngine* engine, RestOptions options, ServeMetrics* metrics)
    : engine_(engine), options_(options), metrics_(metrics) {}

std::vector<HttpRoute> RestApi::Routes() {
  auto bind = [this](HttpResponse (RestApi::*method)(const HttpRequest&)) {
    return [this, method](const HttpRequest& request) { return (this->*method)(request); };
  };
  auto bind_const = [this](HttpResponse (RestApi::*method)(const HttpRequest&) const) {
    return [this, method](const HttpRequest& request) { return (this->*method)(request); };
  };
  // Ids may hold '/' (runs/job-7/best is served as "job-7/best"), hence the lazy groups;
  // the more specific routes come first.
  const std::string model = "/v2/models/(.+?)(?:/versions/([^/]+))?";
  return {
      {"GET", "/v2/health/live", Scope::kNone, bind_const(&RestApi::Live)},
      {"GET", "/v2/health/ready", Scope::kNone, bind_const(&RestApi::Ready)},
      {"GET", "/v2", Scope::kClient, bind_const(&RestApi::ServerMetadata)},
      {"POST", model + "/infer", Scope::kClient, bind(&RestApi::Infer)},
      {"GET", model + "/ready", Scope::kClient, bind_const(&RestApi::ModelReady)},
      {"GET", model, Scope::kClient, bind_const(&RestApi::ModelMetadata)},
      {"POST", "/v1/models/(.+):classify", Scope::kClient, bind(&RestApi::Classify)},
  };
}

HttpResponse RestApi::Live(const HttpRequest&) const { return JsonResponse(R"({"live":true})"); }

HttpResponse RestApi::Ready(const HttpRequest&) const {
  if (!engine_->ready()) return ErrorResponse(503, "not ready: the server is shutting down");
  return JsonResponse(R"({"ready":true})");
}

HttpResponse RestApi::ServerMetadata(const HttpRequest&) const {
  return JsonResponse(
      Dump({{"name", "ftserve"}, {"version", kVersion}, {"extensions", OipExtensions()}}));
}

HttpResponse RestApi::ModelMetadata(const HttpRequest& request) const {
  auto model = FindOipModel(*engine_, request.path_params.at(0), request.path_params.at(1));
  if (!model.ok()) return ErrorResponse(model.status());
  return JsonResponse(Dump(MetadataJson(**model, options_.limits)));
}

HttpResponse RestApi::ModelReady(const HttpRequest& request) const {
  auto model = FindOipModel(*engine_, request.path_params.at(0), request.path_params.at(1));
  if (!model.ok()) return ErrorResponse(model.status());
  if (!engine_->ready()) return ErrorResponse(503, "not ready: the server is shutting down");
  return JsonResponse(Dump({{"name", (*model)->id}, {"ready", true}}));
}

HttpResponse RestApi::Answer(const std::string& model, absl::Time received,
                             absl::StatusOr<HttpResponse> response, int http_status_for_error) {
  if (metrics_ != nullptr) {
    metrics_->RecordRequest(kProtocolRest, model, response.status(), absl::Now() - received);
  }
  if (response.ok()) return *std::move(response);
  if (http_status_for_error != 0) {
    return ErrorResponse(http_status_for_error, response.status().message());
  }
  return ErrorResponse(response.status());
}

HttpResponse RestApi::Infer(const HttpRequest& http) {
  const absl::Time received = absl::Now();
  const std::string& model = http.path_params.at(0);
  const std::string& version = http.path_params.at(1);
  if (auto found = FindOipModel(*engine_, model, version); !found.ok()) {
    return Answer(model, received, found.status());
  }
  const std::string type = http.MediaType();
  if (http.Header(kBinaryHeaderLength) == nullptr && !type.empty() && type != "application/json") {
    return Answer(model, received,
                  absl::InvalidArgumentError(
                      absl::StrCat("Content-Type '", type, "' is not application/json (or send ",
                                   kBinaryHeaderLength, " for binary tensors)")),
                  415);
  }
  absl::StatusOr<ParsedInfer> parsed = ParseInfer(http);
  if (!parsed.ok()) return Answer(model, received, parsed.status());
  parsed->request.model = model;
  parsed->request.version = version;
  absl::StatusOr<OipInferResult> result =
      RunOipInfer(*engine_, parsed->request, options_.limits, received + options_.request_timeout);
  if (!result.ok()) return Answer(model, received, result.status());
  return Answer(model, received, InferResponse(parsed->request, *result, *parsed));
}

HttpResponse RestApi::Classify(const HttpRequest& http) {
  const absl::Time received = absl::Now();
  const std::string& model = http.path_params.at(0);
  if (absl::StatusOr<std::string> id = engine_->ResolveModel(model); !id.ok()) {
    return Answer(model, received, id.status());
  }
  const std::string type = http.MediaType();
  if (http.parts.empty() && (type == "application/json" || absl::StartsWith(type, "text/"))) {
    return Answer(model, received,
                  absl::InvalidArgumentError(absl::StrCat(
                      "Content-Type '", type, "' is not audio: POST the audio file itself ",
                      "(curl --data-binary @clip.wav, or -F file=@clip.wav)")),
                  415);
  }
  int top_k = 3;
  if (auto it = http.query.find("top_k"); it != http.query.end()) {
    if (!absl::SimpleAtoi(it->second, &top_k) || top_k < 1) {
      return Answer(model, received,
                    absl::InvalidArgumentError("top_k must be a whole number >= 1"));
    }
  }
  auto [audio, field] = ClassifyAudio(http);
  absl::StatusOr<std::vector<float>> clip = PrepareAudioFile(audio, options_.limits, field);
  if (!clip.ok()) return Answer(model, received, clip.status());
  const double audio_seconds = static_cast<double>(clip->size()) / data::kSampleRate;
  std::vector<std::vector<float>> clips;
  clips.push_back(*std::move(clip));
  auto answers =
      ClassifyAll(*engine_, model, std::move(clips), received + options_.request_timeout);
  if (!answers.ok()) return Answer(model, received, answers.status());

  const Classification& answer = answers->front();
  const std::vector<std::string>& labels = answer.model->loaded.config.id2label;
  const std::vector<float>& p = answer.probabilities;
  const std::vector<int> order = RankLabels(p);
  ordered_json probabilities = ordered_json::object();
  for (size_t i = 0; i < p.size(); ++i) probabilities[labels[i]] = p[i];
  ordered_json top = ordered_json::array();
  for (int i = 0; i < std::min<int>(top_k, static_cast<int>(order.size())); ++i) {
    top.push_back({{"label", labels[order[i]]}, {"probability", p[order[i]]}});
  }
  ordered_json body = {{"model", answer.model->id},
                       {"model_version", answer.model->version},
                       {"label", labels[order[0]]},
                       {"probability", p[order[0]]},
                       {"probabilities", std::move(probabilities)},
                       {"top", std::move(top)},
                       {"latency_ms", absl::ToDoubleMilliseconds(absl::Now() - received)},
                       {"audio_seconds", audio_seconds}};
  return Answer(model, received, JsonResponse(Dump(body)));
}

}  // namespace ftune::serve
