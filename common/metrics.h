// A small Prometheus metrics registry: counters, gauges and histograms with labels, and the
// text exposition format (version 0.0.4) that `GET /metrics` serves. Written here rather than
// taken from prometheus-cpp, which Debian 12 does not package; the format is a page of rules.
//
// Families are registered once at start-up (names are constants; a bad or repeated name is a
// programming error and aborts) and live as long as the registry. Updating a series takes the
// family's mutex only. Values that already live elsewhere (queue depth, jobs by state) are
// registered as callbacks and read when the registry is rendered.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace ftune {

// Label values, in the order of the family's label names.
using LabelValues = std::vector<std::string>;

// One series of a callback family.
struct MetricSample {
  LabelValues labels;
  double value = 0;
};

class MetricFamily {
 public:
  MetricFamily(std::string name, std::string help, std::string type,
               std::vector<std::string> label_names);
  virtual ~MetricFamily() = default;
  MetricFamily(const MetricFamily&) = delete;
  MetricFamily& operator=(const MetricFamily&) = delete;

  const std::string& name() const { return name_; }
  // Appends `# HELP`, `# TYPE` and every series.
  void Render(std::string* out) const;

 protected:
  virtual void RenderSeries(std::string* out) const = 0;
  // Appends `name{labels,extra} value\n`; `extra` is an already formatted `le="..."` or empty.
  void AppendSample(std::string* out, const std::string& name, const LabelValues& labels,
                    const std::string& extra, double value) const;
  // False (and logs once) when `labels` does not match the label names.
  bool CheckArity(const LabelValues& labels) const;

  const std::string name_;
  const std::string help_;
  const std::string type_;
  const std::vector<std::string> label_names_;
};

// One number per series: the storage of counters and gauges.
class ScalarFamily : public MetricFamily {
 public:
  using MetricFamily::MetricFamily;
  double Value(const LabelValues& labels = {}) const;

 protected:
  void AddTo(const LabelValues& labels, double delta);
  void SetTo(const LabelValues& labels, double value);
  void Erase(const LabelValues& labels);

 private:
  void RenderSeries(std::string* out) const override;
  mutable std::mutex mu_;
  std::map<LabelValues, double> values_;
};

// A value that only goes up (a restart resets it). Names end in _total.
class Counter final : public ScalarFamily {
 public:
  Counter(std::string name, std::string help, std::vector<std::string> label_names);
  void Increment(const LabelValues& labels = {}, double by = 1) { AddTo(labels, by); }
};

class Gauge final : public ScalarFamily {
 public:
  Gauge(std::string name, std::string help, std::vector<std::string> label_names);
  void Set(const LabelValues& labels, double value) { SetTo(labels, value); }
  void Set(double value) { SetTo({}, value); }
  void Add(const LabelValues& labels, double delta) { AddTo(labels, delta); }
  // Drops the series (a finished job's, say), so it is no longer exported.
  void Remove(const LabelValues& labels) { Erase(labels); }
};

class Histogram final : public MetricFamily {
 public:
  // `bounds`: ascending upper bounds of the buckets; +Inf is implied.
  Histogram(std::string name, std::string help, std::vector<std::string> label_names,
            std::vector<double> bounds);
  void Observe(const LabelValues& labels, double value);
  void Observe(double value) { Observe({}, value); }
  uint64_t Count(const LabelValues& labels = {}) const;
  double Sum(const LabelValues& labels = {}) const;

 private:
  struct Series {
    std::vector<uint64_t> buckets;  // not cumulative; one per bound, the last one is +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  void RenderSeries(std::string* out) const override;
  const std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::map<LabelValues, Series> series_;
};

// A gauge or counter whose series are read from `collect` each time the registry renders.
class CallbackFamily final : public MetricFamily {
 public:
  using Collect = std::function<std::vector<MetricSample>()>;
  CallbackFamily(std::string name, std::string help, std::string type,
                 std::vector<std::string> label_names, Collect collect);

 private:
  void RenderSeries(std::string* out) const override;
  const Collect collect_;
};

class MetricsRegistry {
 public:
  Counter& AddCounter(const std::string& name, const std::string& help,
                      std::vector<std::string> label_names = {});
  Gauge& AddGauge(const std::string& name, const std::string& help,
                  std::vector<std::string> label_names = {});
  Histogram& AddHistogram(const std::string& name, const std::string& help,
                          std::vector<std::string> label_names, std::vector<double> bounds);
  // `collect` runs on the rendering thread with no registry lock held; it may take its
  // owner's locks but must not call back into the registry.
  void AddGaugeCallback(const std::string& name, const std::string& help,
                        std::vector<std::string> label_names, CallbackFamily::Collect collect);
  void AddCounterCallback(const std::string& name, const std::string& help,
                          std::vector<std::string> label_names, CallbackFamily::Collect collect);

  // The text exposition format, families in registration order.
  std::string Render() const;

 private:
  template <typename T>
  T& Register(std::unique_ptr<T> family);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<MetricFamily>> families_;
};

// Content-Type of Render()'s output.
inline constexpr char kPrometheusContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// Bucket bounds: `start`, start*factor, ... (`count` of them).
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// Request latencies from 1 ms to about 16 s.
std::vector<double> LatencyBuckets();

// A number as the format writes it: shortest round-trip form, +Inf, -Inf, NaN.
std::string FormatMetricValue(double value);

}  // namespace ftune
