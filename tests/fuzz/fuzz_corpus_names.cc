// Any bytes as a CREMA-D, TESS, SAVEE and EmoDB file name: each parser either errs or returns
// fields in range that print back to the start of the name (the extension aside).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "worker/data/corpus_names.h"

namespace {

using namespace ftune::data;

bool InRange(int index, const std::vector<std::string>& labels) {
  return index >= 0 && index < static_cast<int>(labels.size());
}

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

// Compared case-insensitively: TESS names come in both cases.
bool Prefix(const std::string& name, const std::string& printed) {
  return absl::AsciiStrToLower(name).rfind(absl::AsciiStrToLower(printed), 0) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string name(reinterpret_cast<const char*>(data), size);
  if (auto c = ParseCremaDName(name); c.ok()) {
    Check(InRange(c->emotion, CremaDEmotions()) && c->actor >= 1001 && c->actor <= 1091);
    Check(Prefix(name, absl::StrCat(c->actor, "_", c->sentence, "_")));
  }
  if (auto t = ParseTessName(name); t.ok()) {
    Check(InRange(t->emotion, TessEmotions()));
    Check(Prefix(name, absl::StrCat(t->speaker, "_", t->word, "_")));
  }
  if (auto s = ParseSaveeName(name); s.ok()) {
    Check(InRange(s->emotion, SaveeEmotions()) && IsSaveeSpeaker(s->speaker));
    Check(s->sentence >= 1 && s->sentence <= 30);
    Check(Prefix(name, s->speaker + "_"));
  }
  if (auto e = ParseEmoDbName(name); e.ok()) {
    Check(InRange(e->emotion, EmoDbEmotions()) && e->version >= 'a' && e->version <= 'z');
    char printed[8];
    std::snprintf(printed, sizeof(printed), "%02d", e->speaker);
    Check(Prefix(name, std::string(printed) + e->text));
  }
  return 0;
}
