#include "common/random_id.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <vector>

namespace ftune {

std::string RandomHexId(absl::string_view prefix, int hex_digits) {
  std::vector<uint8_t> bytes((hex_digits + 1) / 2);
  size_t filled = 0;
  while (filled < bytes.size()) {
    const ssize_t n = ::getrandom(bytes.data() + filled, bytes.size() - filled, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::abort();  // no entropy source at all: nothing safe to hand out
    }
    filled += static_cast<size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(prefix);
  for (int i = 0; i < hex_digits; ++i) {
    const uint8_t b = bytes[i / 2];
    out.push_back(kHex[i % 2 == 0 ? b >> 4 : b & 15]);
  }
  return out;
}

}  // namespace ftune
