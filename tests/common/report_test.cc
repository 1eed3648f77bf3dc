// ftctl report's page: escaping, the SVG charts carry every point, the confusion matrix shows
// the counts, a job without events still renders, and headless Chromium paints it.
#include "common/report.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/support/process.h"

namespace ftune {
namespace {

namespace v1 = ::ftune::v1;

int Count(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

// The points attribute of the first polyline drawn in `color`.
std::vector<std::string> PolylinePoints(const std::string& svg, const std::string& color) {
  const std::string start = absl::StrCat("stroke=\"", color, "\" stroke-width=\"2\" points=\"");
  const size_t at = svg.find(start);
  if (at == std::string::npos) return {};
  const size_t end = svg.find('"', at + start.size());
  return absl::StrSplit(svg.substr(at + start.size(), end - at - start.size()), ' ',
                        absl::SkipEmpty());
}

v1::JobEvent Progress(int64_t seq, int64_t step, double loss, double lr) {
  v1::JobEvent e;
  e.set_seq(seq);
  auto* p = e.mutable_train_progress();
  p->set_step(step);
  p->set_total_steps(30);
  p->set_loss(loss);
  p->set_learning_rate(lr);
  p->set_samples_per_sec(12.5);
  return e;
}

v1::JobEvent Eval(int64_t seq, int64_t step, double accuracy, bool best,
                  std::vector<uint32_t> confusion) {
  v1::JobEvent e;
  e.set_seq(seq);
  auto* r = e.mutable_eval_result();
  r->set_step(step);
  r->set_accuracy(accuracy);
  r->set_macro_f1(accuracy * 0.9);
  r->set_loss(1.0 - accuracy);
  r->set_is_best(best);
  for (const char* label : {"calm", "angry", "sad"}) r->add_labels(label);
  for (uint32_t c : confusion) r->add_confusion(c);
  for (int i = 0; i < 3; ++i) r->add_per_class_recall(0.5);
  return e;
}

v1::Job ExampleJob() {
  v1::Job job;
  job.set_id("job-42");
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  job.mutable_spec()->set_model("tiny");
  job.mutable_spec()->set_name("emotions <v2> & \"friends\"");
  job.mutable_spec()->mutable_dataset()->set_path("/data/ravdess");
  job.mutable_spec()->mutable_training()->set_learning_rate(5e-5);
  return job;
}

std::vector<v1::JobEvent> ExampleEvents() {
  std::vector<v1::JobEvent> events;
  v1::JobEvent dataset;
  dataset.set_seq(1);
  auto* d = dataset.mutable_dataset_summary();
  d->set_path("/data/ravdess");
  d->set_layout("ravdess");
  d->set_usable_files(48);
  d->set_total_files(50);
  (*d->mutable_classes())["angry"] = 16;
  (*d->mutable_speakers())["Actor_<01>"] = 24;
  events.push_back(dataset);
  // Out of order on purpose: the page orders by seq.
  events.push_back(Progress(4, 20, 0.9, 3e-5));
  events.push_back(Progress(2, 10, 1.1, 5e-5));
  events.push_back(Eval(3, 10, 0.4, true, {3, 1, 0, 2, 2, 0, 1, 0, 3}));
  events.push_back(Progress(5, 30, 0.7, 1e-5));
  events.push_back(Eval(6, 30, 0.75, true, {4, 0, 0, 1, 3, 0, 0, 0, 4}));
  v1::JobEvent done;
  done.set_seq(7);
  done.mutable_state_changed()->set_to(v1::JOB_STATE_SUCCEEDED);
  done.mutable_state_changed()->set_reason("finished <ok>");
  events.push_back(done);
  return events;
}

TEST(ReportTest, HtmlEscapeCoversMarkupAndQuotes) {
  EXPECT_EQ(HtmlEscape("<a href=\"x\">Tom & Jerry's</a>"),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;");
  EXPECT_EQ(HtmlEscape("plain"), "plain");
}

TEST(ReportTest, UserTextIsEscapedEverywhere) {
  const std::string html = RenderReport(ExampleJob(), ExampleEvents());
  EXPECT_FALSE(absl::StrContains(html, "<v2>"));
  EXPECT_TRUE(absl::StrContains(html, "emotions &lt;v2&gt; &amp; &quot;friends&quot;"));
  EXPECT_FALSE(absl::StrContains(html, "Actor_<01>"));
  EXPECT_TRUE(absl::StrContains(html, "Actor_&lt;01&gt;"));
  EXPECT_TRUE(absl::StrContains(html, "finished &lt;ok&gt;"));
}

TEST(ReportTest, PageIsSelfContainedWithChartsAndSections) {
  const std::string html = RenderReport(ExampleJob(), ExampleEvents());
  EXPECT_TRUE(absl::StartsWith(html, "<!DOCTYPE html>"));
  EXPECT_TRUE(absl::StrContains(html, "</html>"));
  // Loss, learning rate, evaluation, confusion matrix.
  EXPECT_EQ(Count(html, "<svg"), 4);
  EXPECT_EQ(Count(html, "<svg"), Count(html, "</svg>"));
  // Nothing fetched from elsewhere.
  EXPECT_FALSE(absl::StrContains(html, "<script"));
  EXPECT_FALSE(absl::StrContains(html, "src="));
  EXPECT_FALSE(absl::StrContains(html, "<link"));
  for (const char* section : {"Training", "Evaluation", "Dataset", "Hyperparameters"}) {
    EXPECT_TRUE(absl::StrContains(html, absl::StrCat("<h2>", section))) << section;
  }
  // Hyperparameters come from the spec, the dataset summary from its event.
  EXPECT_TRUE(absl::StrContains(html, "&quot;learning_rate&quot;: 5e-05")) << html;
  EXPECT_TRUE(absl::StrContains(html, "48 usable of 50"));
  EXPECT_TRUE(absl::StrContains(html, "75.0%"));  // best accuracy card
}

TEST(ReportTest, CurvesHaveEveryPointInStepOrder) {
  const std::string html = RenderReport(ExampleJob(), ExampleEvents());
  const std::vector<std::string> loss = PolylinePoints(html, "#0969da");
  ASSERT_EQ(loss.size(), 3u);
  const std::vector<std::string> lr = PolylinePoints(html, "#8250df");
  ASSERT_EQ(lr.size(), 3u);
  const std::vector<std::string> accuracy = PolylinePoints(html, "#1a7f37");
  ASSERT_EQ(accuracy.size(), 2u);
  // x grows left to right, and the falling loss is drawn going down (larger y).
  auto xy = [](const std::string& point) {
    std::pair<std::string, std::string> p = absl::StrSplit(point, ',');
    return std::make_pair(std::stod(p.first), std::stod(p.second));
  };
  EXPECT_LT(xy(loss[0]).first, xy(loss[1]).first);
  EXPECT_LT(xy(loss[1]).first, xy(loss[2]).first);
  EXPECT_LT(xy(loss[0]).second, xy(loss[2]).second);
  EXPECT_GT(xy(accuracy[0]).second, xy(accuracy[1]).second);  // accuracy rises: y shrinks
}

TEST(ReportTest, LineChartKeepsFiniteValuesAndLabels) {
  Series s{"a<b", "#123456", {{0, 1}, {1, std::nan("")}, {2, 3}, {3, 2}}};
  const std::string svg = LineChartSvg("T & U", "step", {s}, false);
  EXPECT_EQ(PolylinePoints(svg, "#123456").size(), 3u);
  EXPECT_EQ(Count(svg, "<circle"), 3);
  EXPECT_TRUE(absl::StrContains(svg, "a&lt;b"));
  EXPECT_TRUE(absl::StrContains(svg, "T &amp; U"));
  // One point, or a flat line, still gets an axis range.
  const std::string one = LineChartSvg("one", "step", {{"x", "#abcdef", {{5, 2}}}}, false);
  EXPECT_EQ(PolylinePoints(one, "#abcdef").size(), 1u);
  EXPECT_FALSE(absl::StrContains(one, "nan"));
  EXPECT_FALSE(absl::StrContains(one, "inf"));
}

TEST(ReportTest, ConfusionMatrixShowsEveryCount) {
  const std::string svg = ConfusionMatrixSvg({"calm", "angry"}, {5, 1, 2, 7});
  for (const char* count : {">5</text>", ">1</text>", ">2</text>", ">7</text>"}) {
    EXPECT_TRUE(absl::StrContains(svg, count)) << count;
  }
  EXPECT_TRUE(absl::StrContains(svg, "true calm, predicted angry: 1"));
  EXPECT_TRUE(absl::StrContains(svg, "true angry, predicted calm: 2"));
  EXPECT_EQ(Count(svg, "<rect"), 4);
  // Counts that do not match the labels are not drawn as a wrong matrix.
  EXPECT_FALSE(absl::StrContains(ConfusionMatrixSvg({"a", "b"}, {1, 2, 3}), "<svg"));
}

TEST(ReportTest, TheBestEvaluationsConfusionIsShown) {
  const std::string html = RenderReport(ExampleJob(), ExampleEvents());
  // The best (last marked) evaluation: calm row 4 0 0.
  EXPECT_TRUE(absl::StrContains(html, "true calm, predicted calm: 4"));
  EXPECT_FALSE(absl::StrContains(html, "true calm, predicted calm: 3"));
}

TEST(ReportTest, AJobWithoutEventsStillRenders) {
  v1::Job job;
  job.set_id("empty");
  job.set_state(static_cast<v1::JobState>(99));  // a state this build does not know
  const std::string html = RenderReport(job, {});
  EXPECT_TRUE(absl::StrContains(html, "</html>"));
  EXPECT_TRUE(absl::StrContains(html, "no data yet"));
  EXPECT_TRUE(absl::StrContains(html, "no evaluation yet"));
  EXPECT_TRUE(absl::StrContains(html, "no dataset summary yet"));
  EXPECT_TRUE(absl::StrContains(html, "STATE_99"));
}

// 100k points become at most kMaxChartPoints, in x order, keeping the extremes.
TEST(ReportTest, LongCurvesAreDownsampledKeepingTheirExtremes) {
  std::vector<std::pair<double, double>> points;
  for (int i = 0; i < 100000; ++i) points.emplace_back(i, std::sin(i * 0.001));
  points[54321].second = 7.0;    // a spike
  points[12345].second = -5.0;   // a dip
  const auto thin = DownsampleMinMax(points, kMaxChartPoints);
  ASSERT_LE(thin.size(), kMaxChartPoints);
  ASSERT_GE(thin.size(), kMaxChartPoints - 2);
  for (size_t i = 1; i < thin.size(); ++i) ASSERT_LT(thin[i - 1].first, thin[i].first);
  EXPECT_EQ(thin.front().first, 0);
  auto has = [&](double y) {
    return std::any_of(thin.begin(), thin.end(), [y](const auto& p) { return p.second == y; });
  };
  EXPECT_TRUE(has(7.0));
  EXPECT_TRUE(has(-5.0));
  // Short series are left alone; so is the chart's polyline.
  EXPECT_EQ(DownsampleMinMax({{0, 1}, {1, 2}}, 1000).size(), 2u);
  const std::string svg = LineChartSvg("t", "step", {{"s", "#123456", points}}, false);
  EXPECT_LE(PolylinePoints(svg, "#123456").size(), kMaxChartPoints);
  EXPECT_LT(svg.size(), 60000u);
}

// The dashboard adds events as they come; the page is the same as from all of them at once.
TEST(ReportTest, IncrementalFoldMatchesTheWholeAndLivePageHasItsExtras) {
  const std::vector<v1::JobEvent> events = [] {
    auto e = ExampleEvents();
    std::sort(e.begin(), e.end(), [](const auto& a, const auto& b) { return a.seq() < b.seq(); });
    return e;
  }();
  JobReport whole, parts;
  for (const auto& e : events) whole.Add(e);
  for (size_t i = 0; i < 3; ++i) parts.Add(events[i]);
  v1::Job job = ExampleJob();
  job.set_state(v1::JOB_STATE_RUNNING);
  EXPECT_NE(RenderJobPage(job, parts, {}), RenderJobPage(job, whole, {}));
  for (size_t i = 3; i < events.size(); ++i) parts.Add(events[i]);
  EXPECT_EQ(RenderJobPage(job, parts, {}), RenderJobPage(job, whole, {}));
  EXPECT_EQ(whole.last_seq(), 7);

  PageOptions live;
  live.live = true;
  live.can_cancel = true;
  live.event_rows = EventLogRows({events.back()});
  const std::string html = RenderJobPage(job, whole, live);
  EXPECT_TRUE(absl::StrContains(html, "<script>"));
  EXPECT_TRUE(absl::StrContains(html, "id=cancel"));
  EXPECT_TRUE(absl::StrContains(html, "data-seq=\"7\""));
  EXPECT_TRUE(absl::StrContains(html, "<tbody id=log-rows>\n<tr><td>7</td>"));
  EXPECT_TRUE(absl::StrContains(html, "finished &lt;ok&gt;"));
  // Still nothing from elsewhere; an ended job has no cancel button.
  EXPECT_FALSE(absl::StrContains(html, "src="));
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  EXPECT_FALSE(absl::StrContains(RenderJobPage(job, whole, live), "id=cancel"));
  // What the page swaps in is the same renderer's output.
  const std::string sections = RenderJobSections(job, whole, "<tr>x</tr>");
  EXPECT_TRUE(absl::StrContains(sections, "\"sec-charts\""));
  EXPECT_TRUE(absl::StrContains(sections, "\"terminal\":true"));
  EXPECT_TRUE(absl::StrContains(sections, "\"log_rows\":\"<tr>x</tr>\""));
}

TEST(ReportTest, ProgressShowsShareAndEtaWhileRunning) {
  JobReport report;
  v1::JobEvent e = Progress(1, 15, 1.0, 1e-5);
  e.mutable_train_progress()->set_eta_seconds(125);
  report.Add(e);
  v1::Job job = ExampleJob();
  job.set_state(v1::JOB_STATE_RUNNING);
  const std::string running = report.Progress(job);
  EXPECT_TRUE(absl::StrContains(running, "width:50.0%")) << running;
  EXPECT_TRUE(absl::StrContains(running, "step 15 / 30"));
  EXPECT_TRUE(absl::StrContains(running, "ETA 2m05s"));
  job.set_state(v1::JOB_STATE_CANCELLED);
  EXPECT_FALSE(absl::StrContains(report.Progress(job), "ETA"));
}

// Headless Chromium paints the page: the screenshot has a real share of non-white pixels and
// many colours (text, curves, the heat map), not a blank or an error page. Setup installs
// chromium, so a missing browser fails the test.
TEST(ReportTest, HeadlessChromiumRendersTheReport) {
  const std::string dir = testing::MakeTempDir("report");
  const std::string page = dir + "/report.html";
  std::ofstream(page) << RenderReport(ExampleJob(), ExampleEvents());
  const std::string png = dir + "/shot.png";
  auto chromium = testing::RunCommand(
      {"/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
       "--no-first-run", "--disable-background-networking", "--disable-component-update",
       "--disable-sync", "--user-data-dir=" + dir + "/profile", "--screenshot=" + png,
       "--window-size=1280,2000", "file://" + page},
      absl::Seconds(90));
  ASSERT_TRUE(chromium.ok()) << chromium.status() << " (is chromium installed? scripts/setup)";
  ASSERT_EQ(chromium->exit_code, 0) << chromium->out;

  // Decoded with Pillow: share of non-white pixels, distinct colours, size.
  auto stats = testing::RunCommand(
      {"/usr/bin/python3", "-c",
       "import sys\nfrom PIL import Image\nim = Image.open(sys.argv[1]).convert('RGB')\n"
       "px = list(im.getdata())\nink = sum(1 for p in px if sum(p) < 720) / len(px)\n"
       "print(im.size[0], im.size[1], len(set(px)), ink)\n",
       png},
      absl::Seconds(60));
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_EQ(stats->exit_code, 0) << stats->out;
  std::vector<std::string> f = absl::StrSplit(stats->out, ' ', absl::SkipWhitespace());
  ASSERT_EQ(f.size(), 4u) << stats->out;
  std::cout << "screenshot " << png << ": width height colours ink-share = " << stats->out;
  EXPECT_EQ(std::stoi(f[0]), 1280);
  EXPECT_GE(std::stoi(f[2]), 50) << "distinct colours: " << stats->out;
  EXPECT_GT(std::stod(f[3]), 0.01) << "share of non-white pixels: " << stats->out;
  EXPECT_LT(std::stod(f[3]), 0.9) << "share of non-white pixels: " << stats->out;
}

}  // namespace
}  // namespace ftune
