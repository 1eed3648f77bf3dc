// File-name conventions of the public speech-emotion corpora: RAVDESS, CREMA-D, TESS, SAVEE and
// EmoDB. Each parser is pure and strict: it takes a file name (no folder; the extension is
// ignored) and returns its fields, or InvalidArgument naming the field that is wrong. Emotions
// are indices into the corpus's label list, whose order is the corpus's own code order and
// whose names are the ones its documentation uses (map them onto one set with
// JobSpec.label_map).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ftune::data {

// RAVDESS: MM-VV-EE-II-SS-RR-AA, seven two-digit fields.
// Emotions by code 01..08: neutral calm happy sad angry fearful disgust surprised.
const std::vector<std::string>& RavdessEmotions();
struct RavdessName {
  int modality = 0;       // 01 audio-video, 02 video-only, 03 audio-only
  int vocal_channel = 0;  // 01 speech, 02 song
  int emotion = 0;        // 01..08, see RavdessEmotions()
  int intensity = 0;      // 01 normal, 02 strong
  int statement = 0;      // 01, 02
  int repetition = 0;     // 01, 02
  int actor = 0;          // 01..99
};
absl::StatusOr<RavdessName> ParseRavdessName(absl::string_view file_name);

// CREMA-D: AAAA_SSS_EEE_LL, e.g. 1001_DFA_ANG_XX: actor 1001..1091, one of the 12 sentence
// codes, emotion ANG DIS FEA HAP NEU SAD (anger disgust fear happy neutral sad), level LO MD HI
// or XX (unspecified).
const std::vector<std::string>& CremaDEmotions();
struct CremaDName {
  int actor = 0;
  std::string sentence;
  int emotion = 0;  // index into CremaDEmotions()
  std::string level;
};
absl::StatusOr<CremaDName> ParseCremaDName(absl::string_view file_name);

// TESS: SSS_word_emotion, e.g. OAF_back_angry: speaker OAF (older) or YAF (younger talker), the
// lower-case target word, emotion angry disgust fear happy neutral ps sad ("ps" = pleasant
// surprise, labelled pleasant_surprise).
const std::vector<std::string>& TessEmotions();
struct TessName {
  std::string speaker;
  std::string word;
  int emotion = 0;  // index into TessEmotions()
};
absl::StatusOr<TessName> ParseTessName(absl::string_view file_name);

// SAVEE: SS_eNN, e.g. DC_a01: speaker DC JE JK or KL, emotion a d f h n sa su (anger disgust
// fear happiness neutral sadness surprise), sentence 01..15 (neutral 01..30). The corpus's own
// AudioData/DC/a01.wav form is read by naming the speaker folder: "DC_" + "a01.wav".
const std::vector<std::string>& SaveeEmotions();
struct SaveeName {
  std::string speaker;
  int emotion = 0;  // index into SaveeEmotions()
  int sentence = 0;
};
absl::StatusOr<SaveeName> ParseSaveeName(absl::string_view file_name);
// True for DC, JE, JK and KL.
bool IsSaveeSpeaker(absl::string_view name);

// EmoDB: SSTTTEV, e.g. 03a01Fa: speaker 03 08 09 10 11 12 13 14 15 or 16, text a01 a02 a04 a05
// a07 b01 b02 b03 b09 or b10, emotion W L E A F T N (anger boredom disgust fear happiness
// sadness neutral; the German initials), version a..z.
const std::vector<std::string>& EmoDbEmotions();
struct EmoDbName {
  int speaker = 0;
  std::string text;
  int emotion = 0;  // index into EmoDbEmotions()
  char version = 0;
};
absl::StatusOr<EmoDbName> ParseEmoDbName(absl::string_view file_name);

}  // namespace ftune::data
