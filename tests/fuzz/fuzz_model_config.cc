// Any bytes as config.json or preprocessor_config.json: parsed and validated into an error
// naming the field, or a config whose round trip parses to the same config.
#include <cstddef>
#include <cstdint>
#include <string>

#include "nlohmann/json.hpp"
#include "worker/model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  auto config = ftune::model::HubertConfig::FromJson(j);
  if (config.ok()) {
    auto again = ftune::model::HubertConfig::FromJson(config->ToJson());
    if (!again.ok() || again->ToJson() != config->ToJson()) __builtin_trap();
  }
  auto preprocessor = ftune::model::PreprocessorConfig::FromJson(j);
  if (preprocessor.ok()) {
    auto again = ftune::model::PreprocessorConfig::FromJson(preprocessor->ToJson());
    if (!again.ok()) __builtin_trap();
  }
  return 0;
}
