// How jobs, workers and events are written for scripts and people, shared by ftctl, the
// controller's REST API and the report pages: protobuf JSON, durations, times.
#pragma once

#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>

#include <string>

namespace ftune {

// One line of protobuf JSON with the proto field names and every field, set or not.
std::string ToJson(const google::protobuf::Message& message);

// "12s", "3m05s", "1h02m"; "-" when negative.
std::string FormatSeconds(double seconds);

// "2026-11-24 00:41:27" (UTC) or "-" when unset.
std::string FormatTime(const google::protobuf::Timestamp& time);

}  // namespace ftune
