#include "worker/model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace ftune::model {
namespace {

using nlohmann::json;

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  int64_t size;
};
constexpr DtypeInfo kDtypes[] = {
    {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2}, {"BF16", torch::kBFloat16, 2}};

const DtypeInfo* FindDtype(const std::string& name) {
  for (const DtypeInfo& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}
const DtypeInfo* FindDtype(torch::ScalarType type) {
  for (const DtypeInfo& d : kDtypes) {
    if (type == d.type) return &d;
  }
  return nullptr;
}

struct Entry {
  std::string name;
  const DtypeInfo* dtype;
  std::vector<int64_t> shape;
  uint64_t begin;
  uint64_t end;
};

absl::Status Corrupt(const std::string& path, const std::string& what) {
  return absl::DataLossError(absl::StrCat("safetensors ", path, ": ", what));
}

absl::StatusOr<Entry> ParseEntry(const std::string& path, const std::string& name, const json& v) {
  auto bad = [&](const std::string& what) { return Corrupt(path, "tensor '" + name + "': " + what); };
  if (!v.is_object()) return bad("entry is not an object");
  if (!v.contains("dtype") || !v["dtype"].is_string()) return bad("missing dtype");
  if (!v.contains("shape") || !v["shape"].is_array()) return bad("missing shape");
  if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2) {
    return bad("data_offsets must be [begin, end]");
  }
  for (const auto& [key, unused] : v.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") return bad("unknown field '" + key + "'");
  }
  Entry e;
  e.name = name;
  e.dtype = FindDtype(v["dtype"].get<std::string>());
  if (e.dtype == nullptr) {
    return bad("unsupported dtype " + v["dtype"].get<std::string>() + " (F32, F16, BF16 supported)");
  }
  // numel with overflow checks: a lying shape must not wrap around to a small size.
  uint64_t numel = 1;
  for (const json& d : v["shape"]) {
    if (!d.is_number_unsigned()) return bad("shape entries must be non-negative integers");
    uint64_t dim = d.get<uint64_t>();
    if (dim > (uint64_t{1} << 40) || (dim != 0 && numel > (uint64_t{1} << 62) / dim)) {
      return bad("shape is absurdly large");
    }
    numel *= dim;
    e.shape.push_back(static_cast<int64_t>(dim));
  }
  for (const json& o : v["data_offsets"]) {
    if (!o.is_number_unsigned()) return bad("data_offsets must be non-negative integers");
  }
  e.begin = v["data_offsets"][0].get<uint64_t>();
  e.end = v["data_offsets"][1].get<uint64_t>();
  if (e.end < e.begin) return bad("data_offsets end before begin");
  if (e.end - e.begin != numel * static_cast<uint64_t>(e.dtype->size)) {
    return bad(absl::StrCat("holds ", e.end - e.begin, " bytes but shape x dtype needs ",
                            numel * e.dtype->size));
  }
  return e;
}

}  // namespace

absl::StatusOr<std::map<std::string, torch::Tensor>> ReadSafetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open safetensors file " + path);
  in.seekg(0, std::ios::end);
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  if (file_size < 8) return Corrupt(path, "shorter than the 8-byte header length");
  unsigned char size_bytes[8];
  in.read(reinterpret_cast<char*>(size_bytes), 8);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | size_bytes[i];
  if (header_size > kMaxSafetensorsHeaderBytes) {
    return Corrupt(path, absl::StrCat("header size ", header_size, " exceeds the limit of ",
                                      kMaxSafetensorsHeaderBytes));
  }
  if (header_size > file_size - 8) {
    return Corrupt(path, absl::StrCat("header size ", header_size, " exceeds the file (",
                                      file_size, " bytes)"));
  }
  std::string header(header_size, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_size));
  if (!in) return Corrupt(path, "cannot read the header");

  // nlohmann keeps the last of duplicate keys silently; a callback sees every top-level key.
  std::set<std::string> keys;
  std::string duplicate;
  json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) {
      std::string key = parsed.get<std::string>();
      if (!keys.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json root = json::parse(header, on_event, /*allow_exceptions=*/false);
  if (root.is_discarded()) return Corrupt(path, "header is not valid JSON");
  if (!duplicate.empty()) return Corrupt(path, "duplicate tensor name '" + duplicate + "'");
  if (!root.is_object()) return Corrupt(path, "header is not a JSON object");

  std::vector<Entry> entries;
  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) return Corrupt(path, "__metadata__ is not an object");
      continue;
    }
    auto entry = ParseEntry(path, name, value);
    if (!entry.ok()) return entry.status();
    entries.push_back(std::move(*entry));
  }

  // The tensors must tile the data area exactly: sorted by offset, each starts where the
  // previous ended, and the last ends at the end of the file.
  const uint64_t data_size = file_size - 8 - header_size;
  std::vector<const Entry*> by_offset;
  for (const Entry& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  for (const Entry* e : by_offset) {
    if (e->begin < cursor) {
      return Corrupt(path, "tensor '" + e->name + "' overlaps the previous tensor's bytes");
    }
    if (e->begin > cursor) {
      return Corrupt(path, absl::StrCat("gap of ", e->begin - cursor, " bytes before tensor '",
                                        e->name, "'"));
    }
    if (e->end > data_size) {
      return Corrupt(path, absl::StrCat("tensor '", e->name, "' ends at byte ", e->end,
                                        " past the data area (", data_size, " bytes): truncated?"));
    }
    cursor = e->end;
  }
  if (cursor != data_size) {
    return Corrupt(path, absl::StrCat(data_size - cursor, " trailing bytes after the last tensor"));
  }

  std::map<std::string, torch::Tensor> tensors;
  try {
    for (const Entry& e : entries) {
      torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype->type));
      const uint64_t bytes = e.end - e.begin;
      if (bytes > 0) {
        in.seekg(static_cast<std::streamoff>(8 + header_size + e.begin));
        in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(bytes));
        if (!in) return Corrupt(path, "cannot read the bytes of tensor '" + e.name + "'");
      }
      tensors.emplace(e.name, std::move(t));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("safetensors ", path, ": ", e.what_without_backtrace()));
  }
  return tensors;
}

absl::Status WriteSafetensors(const std::map<std::string, torch::Tensor>& tensors,
                              const std::string& path) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::vector<torch::Tensor> contiguous;
  uint64_t offset = 0;
  try {
    for (const auto& [name, tensor] : tensors) {
      if (name == "__metadata__") return absl::InvalidArgumentError("reserved tensor name __metadata__");
      if (!tensor.defined()) return absl::InvalidArgumentError("tensor '" + name + "' is undefined");
      const DtypeInfo* dtype = FindDtype(tensor.scalar_type());
      if (dtype == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has unsupported dtype ",
                                                       c10::toString(tensor.scalar_type())));
      }
      torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
      const uint64_t bytes = static_cast<uint64_t>(t.numel()) * dtype->size;
      header[name] = {{"dtype", dtype->name},
                      {"shape", t.sizes().vec()},
                      {"data_offsets", {offset, offset + bytes}}};
      offset += bytes;
      contiguous.push_back(std::move(t));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("safetensors ", path, ": ", e.what_without_backtrace()));
  }
  std::string text = header.dump();
  // Pad with spaces so the data area starts 8-byte aligned, as the reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError("cannot write " + path);
  unsigned char size_bytes[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) size_bytes[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
  out.write(reinterpret_cast<const char*>(size_bytes), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const torch::Tensor& t : contiguous) {
    out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  }
  out.flush();
  if (!out) return absl::DataLossError("failed writing " + path + " (disk full?)");
  return absl::OkStatus();
}

}  // namespace ftune::model
