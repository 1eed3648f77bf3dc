#include "worker/train/tfrecord.h"

#include <array>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"

namespace ftune::train {
namespace {

// Table of the reflected Castagnoli polynomial 0x82F63B78, one entry per byte value.
std::array<uint32_t, 256> MakeCrc32cTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (crc & 1 ? 0x82F63B78u : 0u);
    table[i] = crc;
  }
  return table;
}

void AppendLittleEndian(uint64_t value, int bytes, std::string* out) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint64_t ReadLittleEndian(absl::string_view bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    value |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  }
  return value;
}

constexpr size_t kHeaderBytes = 12;  // length + its CRC
constexpr size_t kFooterBytes = 4;   // data CRC

}  // namespace

uint32_t Crc32c(absl::string_view data) {
  static const std::array<uint32_t, 256> kTable = MakeCrc32cTable();
  uint32_t crc = 0xffffffffu;
  for (char c : data) crc = kTable[(crc ^ static_cast<unsigned char>(c)) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

uint32_t MaskedCrc32c(absl::string_view data) {
  const uint32_t crc = Crc32c(data);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

void AppendRecord(absl::string_view data, std::string* out) {
  std::string length;
  AppendLittleEndian(data.size(), 8, &length);
  out->append(length);
  AppendLittleEndian(MaskedCrc32c(length), 4, out);
  out->append(data.data(), data.size());
  AppendLittleEndian(MaskedCrc32c(data), 4, out);
}

absl::StatusOr<RecordFile> ReadRecordFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  RecordFile file;
  const absl::string_view all(bytes);
  size_t pos = 0;
  while (pos < all.size()) {
    const size_t left = all.size() - pos;
    if (left < kHeaderBytes) {
      file.clean = false;
      file.problem = absl::StrCat("torn record header at byte ", pos);
      break;
    }
    const absl::string_view length_bytes = all.substr(pos, 8);
    if (ReadLittleEndian(all.substr(pos + 8, 4)) != MaskedCrc32c(length_bytes)) {
      file.clean = false;
      file.problem = absl::StrCat("bad length CRC at byte ", pos);
      break;
    }
    const uint64_t length = ReadLittleEndian(length_bytes);
    if (length > left - kHeaderBytes || left - kHeaderBytes - length < kFooterBytes) {
      file.clean = false;
      file.problem = absl::StrCat("torn record at byte ", pos);
      break;
    }
    const absl::string_view data = all.substr(pos + kHeaderBytes, length);
    if (ReadLittleEndian(all.substr(pos + kHeaderBytes + length, 4)) != MaskedCrc32c(data)) {
      file.clean = false;
      file.problem = absl::StrCat("bad data CRC at byte ", pos);
      break;
    }
    file.records.emplace_back(data);
    pos += kHeaderBytes + length + kFooterBytes;
  }
  return file;
}

}  // namespace ftune::train
