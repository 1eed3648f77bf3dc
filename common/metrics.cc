#include "common/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "spdlog/spdlog.h"

namespace ftune {
namespace {

bool IsNameChar(char c, bool first, bool colon_ok) {
  const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  const bool digit = c >= '0' && c <= '9';
  return letter || (colon_ok && c == ':') || (!first && digit);
}

bool IsValidName(const std::string& name, bool colon_ok) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsNameChar(name[i], i == 0, colon_ok)) return false;
  }
  return true;
}

// Registration mistakes are programming errors in constant names: stop at once, like a
// failed assertion, so the first test run finds them.
[[noreturn]] void BadRegistration(const std::string& what) {
  std::fprintf(stderr, "metrics registry: %s\n", what.c_str());
  std::abort();
}

void CheckNames(const std::string& name, const std::string& type,
                const std::vector<std::string>& label_names) {
  if (!IsValidName(name, /*colon_ok=*/true)) BadRegistration("invalid metric name '" + name + "'");
  if (type == "counter" && !absl::EndsWith(name, "_total")) {
    BadRegistration("counter '" + name + "' must end in _total");
  }
  for (const std::string& label : label_names) {
    if (!IsValidName(label, /*colon_ok=*/false) || absl::StartsWith(label, "__") ||
        (type == "histogram" && label == "le")) {
      BadRegistration("metric '" + name + "' has an invalid label name '" + label + "'");
    }
  }
}

// HELP text: backslash and newline escaped.
std::string EscapeHelp(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// Label values: backslash, double quote and newline escaped.
std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[64];
  const std::to_chars_result r = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, r.ptr);
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) bounds.push_back(bound);
  return bounds;
}

std::vector<double> LatencyBuckets() { return ExponentialBuckets(0.001, 2, 15); }

// --- MetricFamily ---

MetricFamily::MetricFamily(std::string name, std::string help, std::string type,
                           std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(std::move(type)),
      label_names_(std::move(label_names)) {
  CheckNames(name_, type_, label_names_);
}

void MetricFamily::Render(std::string* out) const {
  absl::StrAppend(out, "# HELP ", name_, " ", EscapeHelp(help_), "\n");
  absl::StrAppend(out, "# TYPE ", name_, " ", type_, "\n");
  RenderSeries(out);
}

bool MetricFamily::CheckArity(const LabelValues& labels) const {
  if (labels.size() == label_names_.size()) return true;
  spdlog::error("metric {}: {} label values given for labels ({}); sample dropped", name_,
                labels.size(), absl::StrJoin(label_names_, ", "));
  return false;
}

void MetricFamily::AppendSample(std::string* out, const std::string& name,
                                const LabelValues& labels, const std::string& extra,
                                double value) const {
  out->append(name);
  if (!labels.empty() || !extra.empty()) {
    out->push_back('{');
    for (size_t i = 0; i < labels.size(); ++i) {
      absl::StrAppend(out, i == 0 ? "" : ",", label_names_[i], "=\"", EscapeLabelValue(labels[i]),
                      "\"");
    }
    if (!extra.empty()) absl::StrAppend(out, labels.empty() ? "" : ",", extra);
    out->push_back('}');
  }
  absl::StrAppend(out, " ", FormatMetricValue(value), "\n");
}

// --- counters and gauges ---

double ScalarFamily::Value(const LabelValues& labels) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = values_.find(labels);
  return it == values_.end() ? 0 : it->second;
}

void ScalarFamily::AddTo(const LabelValues& labels, double delta) {
  if (!CheckArity(labels)) return;
  std::lock_guard<std::mutex> lock(mu_);
  values_[labels] += delta;
}

void ScalarFamily::SetTo(const LabelValues& labels, double value) {
  if (!CheckArity(labels)) return;
  std::lock_guard<std::mutex> lock(mu_);
  values_[labels] = value;
}

void ScalarFamily::Erase(const LabelValues& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  values_.erase(labels);
}

void ScalarFamily::RenderSeries(std::string* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [labels, value] : values_) AppendSample(out, name_, labels, "", value);
}

Counter::Counter(std::string name, std::string help, std::vector<std::string> label_names)
    : ScalarFamily(std::move(name), std::move(help), "counter", std::move(label_names)) {}

Gauge::Gauge(std::string name, std::string help, std::vector<std::string> label_names)
    : ScalarFamily(std::move(name), std::move(help), "gauge", std::move(label_names)) {}

// --- histograms ---

Histogram::Histogram(std::string name, std::string help, std::vector<std::string> label_names,
                     std::vector<double> bounds)
    : MetricFamily(std::move(name), std::move(help), "histogram", std::move(label_names)),
      bounds_(std::move(bounds)) {
  if (bounds_.empty() || !std::is_sorted(bounds_.begin(), bounds_.end()) ||
      std::adjacent_find(bounds_.begin(), bounds_.end()) != bounds_.end()) {
    BadRegistration("histogram '" + name_ + "' needs strictly ascending bucket bounds");
  }
}

void Histogram::Observe(const LabelValues& labels, double value) {
  if (!CheckArity(labels)) return;
  // The first bucket whose bound holds the value; past the last bound it is +Inf's.
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  std::lock_guard<std::mutex> lock(mu_);
  Series& series = series_[labels];
  if (series.buckets.empty()) series.buckets.assign(bounds_.size() + 1, 0);
  ++series.buckets[bucket];
  series.sum += value;
  ++series.count;
}

uint64_t Histogram::Count(const LabelValues& labels) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = series_.find(labels);
  return it == series_.end() ? 0 : it->second.count;
}

double Histogram::Sum(const LabelValues& labels) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = series_.find(labels);
  return it == series_.end() ? 0 : it->second.sum;
}

void Histogram::RenderSeries(std::string* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [labels, series] : series_) {
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= bounds_.size(); ++i) {
      cumulative += series.buckets[i];
      const double bound =
          i < bounds_.size() ? bounds_[i] : std::numeric_limits<double>::infinity();
      AppendSample(out, name_ + "_bucket", labels,
                   absl::StrCat("le=\"", FormatMetricValue(bound), "\""),
                   static_cast<double>(cumulative));
    }
    AppendSample(out, name_ + "_sum", labels, "", series.sum);
    AppendSample(out, name_ + "_count", labels, "", static_cast<double>(series.count));
  }
}

// --- callbacks ---

CallbackFamily::CallbackFamily(std::string name, std::string help, std::string type,
                               std::vector<std::string> label_names, Collect collect)
    : MetricFamily(std::move(name), std::move(help), std::move(type), std::move(label_names)),
      collect_(std::move(collect)) {}

void CallbackFamily::RenderSeries(std::string* out) const {
  std::vector<MetricSample> samples = collect_();
  // A stable order, like the stored families (std::map).
  std::sort(samples.begin(), samples.end(),
            [](const MetricSample& a, const MetricSample& b) { return a.labels < b.labels; });
  for (const MetricSample& sample : samples) {
    if (CheckArity(sample.labels)) AppendSample(out, name_, sample.labels, "", sample.value);
  }
}

// --- registry ---

template <typename T>
T& MetricsRegistry::Register(std::unique_ptr<T> family) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& existing : families_) {
    if (existing->name() == family->name()) {
      BadRegistration("metric '" + family->name() + "' registered twice");
    }
  }
  T& ref = *family;
  families_.push_back(std::move(family));
  return ref;
}

Counter& MetricsRegistry::AddCounter(const std::string& name, const std::string& help,
                                     std::vector<std::string> label_names) {
  return Register(std::make_unique<Counter>(name, help, std::move(label_names)));
}

Gauge& MetricsRegistry::AddGauge(const std::string& name, const std::string& help,
                                 std::vector<std::string> label_names) {
  return Register(std::make_unique<Gauge>(name, help, std::move(label_names)));
}

Histogram& MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                         std::vector<std::string> label_names,
                                         std::vector<double> bounds) {
  return Register(
      std::make_unique<Histogram>(name, help, std::move(label_names), std::move(bounds)));
}

void MetricsRegistry::AddGaugeCallback(const std::string& name, const std::string& help,
                                       std::vector<std::string> label_names,
                                       CallbackFamily::Collect collect) {
  Register(std::make_unique<CallbackFamily>(name, help, "gauge", std::move(label_names),
                                            std::move(collect)));
}

void MetricsRegistry::AddCounterCallback(const std::string& name, const std::string& help,
                                         std::vector<std::string> label_names,
                                         CallbackFamily::Collect collect) {
  Register(std::make_unique<CallbackFamily>(name, help, "counter", std::move(label_names),
                                            std::move(collect)));
}

std::string MetricsRegistry::Render() const {
  std::vector<const MetricFamily*> families;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& family : families_) families.push_back(family.get());
  }
  std::string out;
  for (const MetricFamily* family : families) family->Render(&out);
  return out;
}

}  // namespace ftune
