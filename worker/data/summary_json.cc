#include "worker/data/summary_json.h"

#include <map>
#include <string>

namespace ftune::data {
namespace {

// Proto maps iterate in no particular order; JSON output is sorted by key.
template <typename Map>
nlohmann::json SortedObject(const Map& map) {
  std::map<std::string, uint32_t> sorted;
  for (const auto& [k, v] : map) sorted[std::to_string(k)] = v;
  return sorted;
}

template <>
nlohmann::json SortedObject(const google::protobuf::Map<std::string, uint32_t>& map) {
  return std::map<std::string, uint32_t>(map.begin(), map.end());
}

}  // namespace

nlohmann::json SummaryToJson(const ftune::v1::DatasetSummary& s) {
  nlohmann::json skipped = nlohmann::json::array();
  for (const auto& f : s.skipped()) skipped.push_back({{"path", f.path()}, {"reason", f.reason()}});
  nlohmann::json out = {
      {"path", s.path()},
      {"layout", s.layout()},
      {"split", s.split()},
      {"total_files", s.total_files()},
      {"usable_files", s.usable_files()},
      {"skipped", skipped},
      {"labels", std::vector<std::string>(s.labels().begin(), s.labels().end())},
      {"classes", SortedObject(s.classes())},
      {"speakers", SortedObject(s.speakers())},
      {"splits",
       {{"train", std::vector<std::string>(s.train_speakers().begin(), s.train_speakers().end())},
        {"eval", std::vector<std::string>(s.eval_speakers().begin(), s.eval_speakers().end())}}},
      {"train_files", s.train_files()},
      {"eval_files", s.eval_files()},
      {"train_classes", SortedObject(s.train_classes())},
      {"eval_classes", SortedObject(s.eval_classes())},
      {"seconds",
       {{"min", s.min_seconds()},
        {"median", s.median_seconds()},
        {"max", s.max_seconds()},
        {"total", s.total_seconds()}}},
      {"sample_rates", SortedObject(s.sample_rates())},
      {"channels", SortedObject(s.channels())},
  };
  if (!s.tag().empty()) out["tag"] = s.tag();
  if (s.corpora_size() > 0) {
    out["corpora"] = nlohmann::json::array();
    for (const auto& corpus : s.corpora()) out["corpora"].push_back(SummaryToJson(corpus));
  }
  return out;
}

}  // namespace ftune::data
