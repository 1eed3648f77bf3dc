#include "common/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>

#include "absl/strings/match.h"
#include "tests/support/promtool.h"

namespace ftune {
namespace {

using ::testing::HasSubstr;

TEST(MetricsTest, CounterWithLabelsRendersHelpTypeAndSortedSeries) {
  MetricsRegistry registry;
  Counter& requests =
      registry.AddCounter("ftune_test_requests_total", "Requests answered.", {"model", "code"});
  requests.Increment({"b", "OK"});
  requests.Increment({"a", "OK"}, 2);
  requests.Increment({"a", "OK"});
  EXPECT_EQ(requests.Value({"a", "OK"}), 3);
  EXPECT_EQ(requests.Value({"missing", "OK"}), 0);
  EXPECT_EQ(registry.Render(),
            "# HELP ftune_test_requests_total Requests answered.\n"
            "# TYPE ftune_test_requests_total counter\n"
            "ftune_test_requests_total{model=\"a\",code=\"OK\"} 3\n"
            "ftune_test_requests_total{model=\"b\",code=\"OK\"} 1\n");
}

TEST(MetricsTest, GaugeSetsAddsAndRemovesSeries) {
  MetricsRegistry registry;
  Gauge& loss = registry.AddGauge("ftune_test_loss", "Last loss.", {"job"});
  Gauge& running = registry.AddGauge("ftune_test_running", "Running jobs.");
  loss.Set({"job-1"}, 0.25);
  loss.Set({"job-2"}, 1.5);
  loss.Remove({"job-1"});
  running.Set(2);
  running.Add({}, -1);
  EXPECT_EQ(registry.Render(),
            "# HELP ftune_test_loss Last loss.\n"
            "# TYPE ftune_test_loss gauge\n"
            "ftune_test_loss{job=\"job-2\"} 1.5\n"
            "# HELP ftune_test_running Running jobs.\n"
            "# TYPE ftune_test_running gauge\n"
            "ftune_test_running 1\n");
}

TEST(MetricsTest, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  MetricsRegistry registry;
  Histogram& latency =
      registry.AddHistogram("ftune_test_seconds", "Latency.", {"protocol"}, {0.1, 1, 10});
  for (double v : {0.05, 0.1, 0.5, 20.0}) latency.Observe({"rest"}, v);
  EXPECT_EQ(latency.Count({"rest"}), 4u);
  EXPECT_DOUBLE_EQ(latency.Sum({"rest"}), 20.65);
  EXPECT_EQ(registry.Render(),
            "# HELP ftune_test_seconds Latency.\n"
            "# TYPE ftune_test_seconds histogram\n"
            "ftune_test_seconds_bucket{protocol=\"rest\",le=\"0.1\"} 2\n"
            "ftune_test_seconds_bucket{protocol=\"rest\",le=\"1\"} 3\n"
            "ftune_test_seconds_bucket{protocol=\"rest\",le=\"10\"} 3\n"
            "ftune_test_seconds_bucket{protocol=\"rest\",le=\"+Inf\"} 4\n"
            "ftune_test_seconds_sum{protocol=\"rest\"} 20.65\n"
            "ftune_test_seconds_count{protocol=\"rest\"} 4\n");
}

TEST(MetricsTest, LabelValuesAndHelpAreEscaped) {
  MetricsRegistry registry;
  Gauge& gauge = registry.AddGauge("ftune_test_escaped", "Back\\slash and\nnewline.", {"path"});
  gauge.Set({"C:\\dir \"quoted\"\nnext"}, 1);
  EXPECT_EQ(registry.Render(),
            "# HELP ftune_test_escaped Back\\\\slash and\\nnewline.\n"
            "# TYPE ftune_test_escaped gauge\n"
            "ftune_test_escaped{path=\"C:\\\\dir \\\"quoted\\\"\\nnext\"} 1\n");
}

TEST(MetricsTest, CallbacksAreReadAtRenderTime) {
  MetricsRegistry registry;
  int depth = 3;
  registry.AddGaugeCallback("ftune_test_queue_depth", "Waiting requests.", {"model"}, [&] {
    return std::vector<MetricSample>{{{"z"}, 1}, {{"a"}, static_cast<double>(depth)}};
  });
  registry.AddCounterCallback("ftune_test_leases_total", "Leases.", {}, [] {
    return std::vector<MetricSample>{{{}, 7}};
  });
  depth = 5;
  const std::string text = registry.Render();
  EXPECT_THAT(text, HasSubstr("ftune_test_queue_depth{model=\"a\"} 5\n"
                              "ftune_test_queue_depth{model=\"z\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE ftune_test_leases_total counter\n"
                              "ftune_test_leases_total 7\n"));
}

TEST(MetricsTest, ValuesUseTheShortestExactForm) {
  EXPECT_EQ(FormatMetricValue(0.1), "0.1");
  EXPECT_EQ(FormatMetricValue(3), "3");
  EXPECT_EQ(FormatMetricValue(123456789012.0), "123456789012");
  EXPECT_EQ(FormatMetricValue(1e-7), "1e-07");
  EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatMetricValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatMetricValue(std::nan("")), "NaN");
}

TEST(MetricsTest, WrongNumberOfLabelValuesIsDropped) {
  MetricsRegistry registry;
  Counter& counter = registry.AddCounter("ftune_test_total", "Counted.", {"a", "b"});
  counter.Increment({"only-one"});
  EXPECT_FALSE(absl::StrContains(registry.Render(), "only-one"));
}

TEST(MetricsDeathTest, BadRegistrationsAbort) {
  EXPECT_DEATH(MetricsRegistry().AddCounter("ftune_test", "no _total suffix"), "_total");
  EXPECT_DEATH(MetricsRegistry().AddGauge("1bad", "starts with a digit"), "invalid metric name");
  EXPECT_DEATH(MetricsRegistry().AddGauge("ftune_ok", "bad label", {"bad-label"}),
               "invalid label name");
  EXPECT_DEATH(MetricsRegistry().AddHistogram("ftune_h", "le is reserved", {"le"}, {1}),
               "invalid label name");
  EXPECT_DEATH(MetricsRegistry().AddHistogram("ftune_h", "unsorted", {}, {2, 1}), "ascending");
  EXPECT_DEATH(
      {
        MetricsRegistry registry;
        registry.AddGauge("ftune_twice", "first");
        registry.AddGauge("ftune_twice", "second");
      },
      "registered twice");
}

TEST(MetricsTest, ConcurrentUpdatesAreAllCounted) {
  MetricsRegistry registry;
  Counter& counter = registry.AddCounter("ftune_test_total", "Counted.", {"thread"});
  Histogram& histogram = registry.AddHistogram("ftune_test_seconds", "Observed.", {}, {1});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i) {
        counter.Increment({std::to_string(t % 2)});
        histogram.Observe(0.5);
        if (i % 100 == 0) registry.Render();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter.Value({"0"}) + counter.Value({"1"}), 4000);
  EXPECT_EQ(histogram.Count(), 4000u);
}

// Every kind of family, with escaping, passes Prometheus' own linter.
TEST(MetricsTest, OutputPassesPromtool) {
  MetricsRegistry registry;
  registry.AddCounter("ftune_test_requests_total", "Requests.", {"code"}).Increment({"OK"});
  registry.AddGauge("ftune_test_depth", "Depth with \"quotes\" and \\.", {"model"})
      .Set({"a\"b\\c\nd"}, 2);
  registry.AddHistogram("ftune_test_duration_seconds", "Durations.", {"protocol"}, LatencyBuckets())
      .Observe({"grpc"}, 0.02);
  registry.AddGaugeCallback("ftune_test_jobs", "Jobs by state.", {"state"}, [] {
    return std::vector<MetricSample>{{{"QUEUED"}, 1}, {{"RUNNING"}, 0}};
  });
  auto lint = testing::PromtoolCheckMetrics(registry.Render());
  ASSERT_TRUE(lint.ok()) << lint;
}

}  // namespace
}  // namespace ftune
