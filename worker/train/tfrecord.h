// TFRecord framing, the container of TensorBoard event files. Each record is
//   uint64 length | uint32 masked CRC of the length bytes | data | uint32 masked CRC of data
// little-endian, where the CRC is CRC-32C (Castagnoli) masked as
// ((crc >> 15) | (crc << 17)) + 0xa282ead8.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ftune::train {

uint32_t Crc32c(absl::string_view data);
uint32_t MaskedCrc32c(absl::string_view data);

// Appends `data` to `out` as one framed record.
void AppendRecord(absl::string_view data, std::string* out);

struct RecordFile {
  std::vector<std::string> records;
  // False when reading stopped before the end of the file: a torn last record (a writer that
  // crashed mid-write) or a record whose CRC does not match. `problem` says which.
  bool clean = true;
  std::string problem;
};

// The records of `path` up to its end or its first damaged record; NotFound when it cannot be
// opened.
absl::StatusOr<RecordFile> ReadRecordFile(const std::string& path);

}  // namespace ftune::train
