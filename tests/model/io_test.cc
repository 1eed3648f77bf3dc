// Config parsing, presets and the safetensors reader/writer, including malformed files.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nlohmann/json.hpp"
#include "tests/support/process.h"
#include "worker/model/config.h"
#include "worker/model/device.h"
#include "worker/model/safetensors.h"

namespace ftune::model {
namespace {

using nlohmann::json;

// ---- Config ------------------------------------------------------------------------------

json BaseJson() {
  auto c = PresetConfig("hubert-base");
  EXPECT_TRUE(c.ok());
  c->id2label = {"neutral", "happy"};
  return c->ToJson();
}

TEST(ConfigTest, RoundTripsThroughJson) {
  json j = BaseJson();
  j["_name_or_path"] = "facebook/hubert-base-ls960";
  auto c = HubertConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 768);
  EXPECT_EQ(c->conv_kernel, (std::vector<int>{10, 3, 3, 3, 3, 2, 2}));
  EXPECT_EQ(c->id2label, (std::vector<std::string>{"neutral", "happy"}));
  EXPECT_EQ(c->extra["_name_or_path"], "facebook/hubert-base-ls960");
  json again = c->ToJson();
  EXPECT_EQ(again, HubertConfig::FromJson(again)->ToJson());
  EXPECT_EQ(again["architectures"][0], "HubertForSequenceClassification");
  EXPECT_EQ(again["label2id"]["happy"], 1);
  EXPECT_EQ(again["id2label"]["0"], "neutral");
}

TEST(ConfigTest, LabelsFromLabel2IdWhenNoId2Label) {
  json j = BaseJson();
  j.erase("id2label");
  j["label2id"] = {{"b", 1}, {"a", 0}};
  auto c = HubertConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->id2label, (std::vector<std::string>{"a", "b"}));
}

TEST(ConfigTest, LabelsFromNumLabelsAreNotEchoed) {
  json j = BaseJson();
  j.erase("id2label");
  j.erase("label2id");
  j["num_labels"] = 3;
  auto c = HubertConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->id2label, (std::vector<std::string>{"LABEL_0", "LABEL_1", "LABEL_2"}));
  c->id2label = {"x"};
  EXPECT_FALSE(c->ToJson().contains("num_labels"));
}

struct BadField {
  const char* field;
  json value;
};

class ConfigErrorTest : public ::testing::TestWithParam<BadField> {};

TEST_P(ConfigErrorTest, NamesTheField) {
  json j = BaseJson();
  j[GetParam().field] = GetParam().value;
  auto c = HubertConfig::FromJson(j);
  ASSERT_FALSE(c.ok()) << GetParam().field;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(c.status().message()).find(GetParam().field), std::string::npos) << c.status();
}

INSTANTIATE_TEST_SUITE_P(
    Fields, ConfigErrorTest,
    ::testing::Values(BadField{"conv_pos_batch_norm", true}, BadField{"hidden_act", "mish"},
                      BadField{"feat_extract_activation", "elu"}, BadField{"feat_extract_norm", "batch"},
                      BadField{"hidden_size", "768"}, BadField{"num_attention_heads", 5},
                      BadField{"conv_kernel", json::array({10, 3})}, BadField{"model_type", "wav2vec2"},
                      BadField{"num_feat_extract_layers", 5}, BadField{"mask_time_prob", 1.5},
                      BadField{"id2label", json{{"0", "a"}, {"2", "b"}}},
                      BadField{"do_stable_layer_norm", "yes"},
                      BadField{"num_conv_pos_embedding_groups", 7}));

TEST(ConfigTest, Presets) {
  auto base = PresetConfig("hubert-base");
  auto large = PresetConfig("hubert-large");
  auto tiny = PresetConfig("tiny");
  ASSERT_TRUE(base.ok() && large.ok() && tiny.ok());
  EXPECT_EQ(base->feat_extract_norm, "group");
  EXPECT_FALSE(base->do_stable_layer_norm);
  EXPECT_EQ(large->hidden_size, 1024);
  EXPECT_EQ(large->num_hidden_layers, 24);
  EXPECT_TRUE(large->do_stable_layer_norm);
  EXPECT_TRUE(large->conv_bias);
  EXPECT_TRUE(tiny->Validate().ok());
  EXPECT_EQ(PresetConfig("huge").status().code(), absl::StatusCode::kNotFound);
}

TEST(PreprocessorConfigTest, ParsesAndRejects) {
  auto p = PreprocessorConfig::FromJson(
      {{"do_normalize", false}, {"return_attention_mask", true}, {"sampling_rate", 16000},
       {"padding_value", 0.0}, {"feature_extractor_type", "Wav2Vec2FeatureExtractor"}});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->do_normalize);
  EXPECT_TRUE(p->return_attention_mask);
  EXPECT_EQ(PreprocessorConfig::FromJson(p->ToJson())->ToJson(), p->ToJson());
  EXPECT_FALSE(PreprocessorConfig::FromJson({{"padding_side", "left"}}).ok());
  EXPECT_FALSE(PreprocessorConfig::FromJson({{"feature_size", 2}}).ok());
  EXPECT_FALSE(PreprocessorConfig::FromJson({{"sampling_rate", "16k"}}).ok());
}

// ---- Devices -----------------------------------------------------------------------------

TEST(DeviceTest, ParsesDeviceStrings) {
  EXPECT_EQ(*ParseDevice("cpu"), torch::Device(torch::kCPU));
  auto automatic = ParseDevice("auto");
  ASSERT_TRUE(automatic.ok());
  EXPECT_EQ(automatic->is_cuda(), torch::cuda::is_available());
  EXPECT_TRUE(ParseDevice("").ok());
  EXPECT_EQ(ParseDevice("gpu").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDevice("cuda:x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDevice("cuda:-1").status().code(), absl::StatusCode::kInvalidArgument);
  if (!torch::cuda::is_available()) {
    EXPECT_EQ(ParseDevice("cuda").status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(ParseDevice("cuda:1").status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

// ---- Safetensors -------------------------------------------------------------------------

class SafetensorsTest : public ::testing::Test {
 protected:
  std::string Path(const std::string& name) { return dir_ + "/" + name; }

  // A file from a raw header and data area.
  std::string WriteRaw(const std::string& name, const std::string& header, const std::string& data,
                       int64_t declared_header_size = -1) {
    const std::string path = Path(name);
    std::ofstream out(path, std::ios::binary);
    uint64_t n = declared_header_size >= 0 ? static_cast<uint64_t>(declared_header_size) : header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
    out << header << data;
    return path;
  }

  void ExpectError(const std::string& path, const std::string& fragment) {
    auto r = ReadSafetensors(path);
    ASSERT_FALSE(r.ok()) << path;
    EXPECT_NE(std::string(r.status().message()).find(fragment), std::string::npos) << r.status();
  }

  std::string dir_ = ftune::testing::MakeTempDir("safetensors");
};

TEST_F(SafetensorsTest, RoundTripsAllDtypesBitExact) {
  std::map<std::string, torch::Tensor> tensors = {
      {"a.f32", torch::randn({3, 5})},
      {"b.f16", torch::randn({7}).to(torch::kFloat16)},
      {"c.bf16", torch::randn({2, 2, 3}).to(torch::kBFloat16)},
      {"d.empty", torch::zeros({0, 4})},
      {"e.scalar", torch::tensor(3.5f).reshape({})},
      {"f.strided", torch::randn({4, 6}).t()},
  };
  ASSERT_TRUE(WriteSafetensors(tensors, Path("x.safetensors")).ok());
  auto back = ReadSafetensors(Path("x.safetensors"));
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const torch::Tensor& r = back->at(name);
    EXPECT_EQ(r.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(r.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(r, t)) << name;
  }
  // The header is 8-byte aligned and carries the metadata transformers checks.
  std::ifstream in(Path("x.safetensors"), std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
  std::string header(n, '\0');
  in.read(header.data(), n);
  EXPECT_EQ(json::parse(header)["__metadata__"]["format"], "pt");
}

TEST_F(SafetensorsTest, RejectsUnsupportedDtypeOnWrite) {
  EXPECT_FALSE(WriteSafetensors({{"i", torch::zeros({2}, torch::kLong)}}, Path("i.safetensors")).ok());
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  EXPECT_EQ(ReadSafetensors(Path("nope")).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, Truncated) {
  ASSERT_TRUE(WriteSafetensors({{"w", torch::randn({64})}}, Path("full")).ok());
  std::ifstream in(Path("full"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (size_t cut : {size_t{0}, size_t{5}, size_t{12}, bytes.size() / 2, bytes.size() - 1}) {
    std::ofstream out(Path("cut"), std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(cut));
    out.close();
    EXPECT_FALSE(ReadSafetensors(Path("cut")).ok()) << "cut at " << cut;
  }
}

TEST_F(SafetensorsTest, AbsurdHeaderSize) {
  ExpectError(WriteRaw("absurd", "{}", "", int64_t{1} << 62), "exceeds the limit");
  ExpectError(WriteRaw("past_end", "{}", "", 1000), "exceeds the file");
}

TEST_F(SafetensorsTest, NotJson) { ExpectError(WriteRaw("notjson", "{\"a\": [", ""), "not valid JSON"); }

TEST_F(SafetensorsTest, LyingHeader) {
  const std::string data(16, '\0');
  // Shape says 4 floats (16 bytes) but offsets give 8.
  ExpectError(WriteRaw("lying", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}})", data.substr(0, 8)),
              "shape x dtype");
  // Offsets past the data area.
  ExpectError(WriteRaw("past", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", data.substr(0, 8)),
              "past the data area");
  // Shape whose product overflows.
  ExpectError(WriteRaw("overflow",
                       R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}})", data),
              "absurdly large");
  ExpectError(WriteRaw("dtype", R"({"w":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})", data),
              "unsupported dtype");
  ExpectError(WriteRaw("neg", R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", data),
              "non-negative");
  ExpectError(WriteRaw("noofs", R"({"w":{"dtype":"F32","shape":[4]}})", data), "data_offsets");
  ExpectError(WriteRaw("trailing", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data),
              "trailing bytes");
}

TEST_F(SafetensorsTest, OverlappingAndGappedOffsets) {
  const std::string data(16, '\0');
  ExpectError(WriteRaw("overlap",
                       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                       data.substr(0, 12)),
              "overlaps");
  ExpectError(WriteRaw("same",
                       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                       data.substr(0, 8)),
              "overlaps");
  ExpectError(WriteRaw("gap",
                       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})",
                       data),
              "gap");
}

TEST_F(SafetensorsTest, DuplicateNames) {
  const std::string data(16, '\0');
  ExpectError(WriteRaw("dup",
                       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                       data),
              "duplicate tensor name 'a'");
}

TEST_F(SafetensorsTest, ReadsAFileWithMetadataAndAnyOrder) {
  std::string data(12, '\0');
  const float values[3] = {1.5f, -2.0f, 3.25f};
  std::memcpy(data.data(), values, 12);
  auto r = ReadSafetensors(WriteRaw("meta",
                                    R"({"__metadata__":{"format":"pt"},)"
                                    R"("z":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},)"
                                    R"("y":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                    data));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FLOAT_EQ(r->at("y").item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(r->at("z")[1].item<float>(), 3.25f);
}

}  // namespace
}  // namespace ftune::model
