#include "common/report.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/job_format.h"
#include "common/job_spec.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

namespace ftune {
namespace {

using ftune::v1::JobEvent;

constexpr int kChartWidth = 560;
constexpr int kChartHeight = 260;
constexpr int kMarginLeft = 62;
constexpr int kMarginRight = 16;
constexpr int kMarginTop = 30;
constexpr int kMarginBottom = 44;

// Round tick positions covering [lo, hi]: steps of 1, 2 or 5 times a power of ten.
std::vector<double> Ticks(double lo, double hi, int wanted) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / wanted;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * magnitude;
    if (step >= raw) break;
  }
  std::vector<double> ticks;
  // Multiples of step by index, so rounding never stalls the loop; a dozen at most.
  const double first = std::ceil(lo / step);
  for (int i = 0; i <= 2 * wanted + 2; ++i) {
    const double t = (first + i) * step;
    if (t > hi + step * 1e-9) break;
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  }
  return ticks;
}

std::string FormatTick(double v) {
  const double a = std::abs(v);
  if (a != 0 && (a < 1e-3 || a >= 1e5)) return absl::StrFormat("%.1e", v);
  return absl::StrFormat("%g", std::round(v * 1e6) / 1e6);
}

std::string Row(const std::string& key, const std::string& value) {
  return absl::StrCat("<tr><th>", HtmlEscape(key), "</th><td>", HtmlEscape(value), "</td></tr>\n");
}

std::string Card(const std::string& label, const std::string& value) {
  return absl::StrCat("<div class=card><div class=v>", HtmlEscape(value), "</div><div class=k>",
                      HtmlEscape(label), "</div></div>\n");
}

std::string CountsTable(const std::string& first, const std::string& second,
                        const google::protobuf::Map<std::string, uint32_t>& counts) {
  std::map<std::string, uint32_t> sorted(counts.begin(), counts.end());
  std::string html = absl::StrCat("<table class=counts><tr><th>", HtmlEscape(first), "</th><th>",
                                  HtmlEscape(second), "</th></tr>\n");
  for (const auto& [key, n] : sorted) absl::StrAppend(&html, Row(key, absl::StrCat(n)));
  return html + "</table>\n";
}

const char* const kStyle = R"css(
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1180px;color:#1f2328;background:#fff;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.sub{color:#59636e}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;min-width:130px}
.card .v{font-size:20px;font-weight:600}.card .k{color:#59636e;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:16px}svg{border:1px solid #d0d7de;border-radius:8px;background:#fff}
table{border-collapse:collapse;margin:6px 0}th,td{text-align:left;padding:3px 12px 3px 0;vertical-align:top}
th{font-weight:600;color:#59636e}.cols{display:flex;flex-wrap:wrap;gap:40px}
.state-SUCCEEDED{color:#1a7f37}.state-FAILED{color:#cf222e}.state-CANCELLED{color:#9a6700}
code,pre{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}pre{background:#f6f8fa;padding:10px;border-radius:6px;overflow:auto}
nav{display:flex;gap:16px;align-items:center;margin-bottom:14px;font-weight:600}nav a{color:#0969da;text-decoration:none}
.bar{height:10px;background:#eaeef2;border-radius:5px;overflow:hidden;max-width:560px}.bar div{height:100%;background:#0969da}
button{font:inherit;padding:4px 12px;border:1px solid #d0d7de;border-radius:6px;background:#f6f8fa;cursor:pointer}
button.danger{color:#cf222e}.log td{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;white-space:nowrap}
.log td:last-child{white-space:normal}.jobs td,.jobs th{padding-right:18px}#live{color:#59636e;font-size:12px}
)css";

}  // namespace

std::string HtmlEscape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string LineChartSvg(const std::string& title, const std::string& x_label,
                         const std::vector<Series>& series, bool y_from_zero) {
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (const Series& s : series) {
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      x_lo = std::min(x_lo, x);
      x_hi = std::max(x_hi, x);
      y_lo = std::min(y_lo, y);
      y_hi = std::max(y_hi, y);
    }
  }
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
      "role=\"img\" aria-label=\"%s\">\n<text x=\"%d\" y=\"20\" font-size=\"14\" "
      "font-weight=\"600\" fill=\"#1f2328\">%s</text>\n",
      kChartWidth, kChartHeight, kChartWidth, kChartHeight, HtmlEscape(title), kMarginLeft,
      HtmlEscape(title));
  if (!std::isfinite(x_lo)) {
    absl::StrAppend(&svg,
                    absl::StrFormat("<text x=\"%d\" y=\"%d\" fill=\"#59636e\">no data yet</text>\n",
                                    kChartWidth / 2 - 40, kChartHeight / 2));
    return svg + "</svg>\n";
  }
  if (y_from_zero) y_lo = std::min(0.0, y_lo);
  if (x_hi == x_lo) x_hi = x_lo + 1;
  if (y_hi == y_lo) y_hi = y_lo + (y_lo == 0 ? 1 : std::abs(y_lo) * 0.1);
  const double plot_w = kChartWidth - kMarginLeft - kMarginRight;
  const double plot_h = kChartHeight - kMarginTop - kMarginBottom;
  auto px = [&](double x) { return kMarginLeft + (x - x_lo) / (x_hi - x_lo) * plot_w; };
  auto py = [&](double y) { return kMarginTop + (1 - (y - y_lo) / (y_hi - y_lo)) * plot_h; };

  for (double t : Ticks(y_lo, y_hi, 5)) {
    absl::StrAppend(
        &svg,
        absl::StrFormat("<line x1=\"%d\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eaeef2\"/>"
                        "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\" "
                        "fill=\"#59636e\">%s</text>\n",
                        kMarginLeft, kMarginLeft + plot_w, py(t), py(t), kMarginLeft - 6, py(t) + 4,
                        FormatTick(t)));
  }
  for (double t : Ticks(x_lo, x_hi, 6)) {
    absl::StrAppend(
        &svg,
        absl::StrFormat("<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%.1f\" stroke=\"#8c959f\"/>"
                        "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\" "
                        "fill=\"#59636e\">%s</text>\n",
                        px(t), px(t), kMarginTop + static_cast<int>(plot_h),
                        kMarginTop + plot_h + 4, px(t), kMarginTop + plot_h + 17, FormatTick(t)));
  }
  absl::StrAppend(&svg,
                  absl::StrFormat("<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%.1f\" "
                                  "fill=\"none\" stroke=\"#8c959f\"/>\n"
                                  "<text x=\"%.1f\" y=\"%d\" font-size=\"12\" "
                                  "text-anchor=\"middle\" fill=\"#59636e\">%s</text>\n",
                                  kMarginLeft, kMarginTop, plot_w, plot_h, kMarginLeft + plot_w / 2,
                                  kChartHeight - 8, HtmlEscape(x_label)));

  double legend_x = kMarginLeft + plot_w;
  for (auto it = series.rbegin(); it != series.rend(); ++it) {
    const Series& s = *it;
    if (s.points.empty()) continue;
    std::string points;
    for (const auto& [x, y] : DownsampleMinMax(s.points, kMaxChartPoints)) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      absl::StrAppend(&points, absl::StrFormat("%.1f,%.1f ", px(x), py(y)));
    }
    absl::StrAppend(
        &svg, absl::StrFormat(
                  "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"%s\"/>\n",
                  s.color, points));
    if (s.points.size() <= 40) {
      for (const auto& [x, y] : s.points) {
        if (!std::isfinite(x) || !std::isfinite(y)) continue;
        absl::StrAppend(
            &svg, absl::StrFormat("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", px(x),
                                  py(y), s.color));
      }
    }
    legend_x -= 8.0 * s.name.size() + 22;
    absl::StrAppend(
        &svg,
        absl::StrFormat("<rect x=\"%.1f\" y=\"10\" width=\"12\" height=\"4\" fill=\"%s\"/>"
                        "<text x=\"%.1f\" y=\"16\" font-size=\"12\" fill=\"#1f2328\">%s</text>\n",
                        legend_x, s.color, legend_x + 16, HtmlEscape(s.name)));
  }
  return svg + "</svg>\n";
}

std::string ConfusionMatrixSvg(const std::vector<std::string>& labels,
                               const std::vector<uint32_t>& counts) {
  const size_t n = labels.size();
  if (n == 0 || counts.size() != n * n) return "<p class=sub>no evaluation yet</p>\n";
  const int cell = n <= 8 ? 46 : 30;
  const int left = 110, top = 110;
  const int size_w = left + cell * static_cast<int>(n) + 20;
  const int size_h = top + cell * static_cast<int>(n) + 40;
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
      "role=\"img\" aria-label=\"confusion matrix\">\n",
      size_w, size_h, size_w, size_h);
  for (size_t row = 0; row < n; ++row) {
    uint32_t row_total = 0;
    for (size_t col = 0; col < n; ++col) row_total += counts[row * n + col];
    for (size_t col = 0; col < n; ++col) {
      const uint32_t c = counts[row * n + col];
      // Shade by the share of the true class, so rows of different sizes compare.
      const double share = row_total ? static_cast<double>(c) / row_total : 0.0;
      const int shade = 255 - static_cast<int>(std::lround(share * 200));
      const int x = left + static_cast<int>(col) * cell, y = top + static_cast<int>(row) * cell;
      absl::StrAppend(
          &svg,
          absl::StrFormat(
              "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"rgb(%d,%d,255)\" "
              "stroke=\"#fff\"><title>true %s, predicted %s: %u</title></rect>"
              "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\" "
              "fill=\"%s\">%u</text>\n",
              x, y, cell, cell, shade, shade, HtmlEscape(labels[row]), HtmlEscape(labels[col]), c,
              x + cell / 2, y + cell / 2 + 4, share > 0.55 ? "#fff" : "#1f2328", c));
    }
    absl::StrAppend(&svg,
                    absl::StrFormat("<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"end\" "
                                    "fill=\"#1f2328\">%s</text>\n",
                                    left - 6, top + static_cast<int>(row) * cell + cell / 2 + 4,
                                    HtmlEscape(labels[row])));
  }
  for (size_t col = 0; col < n; ++col) {
    const int x = left + static_cast<int>(col) * cell + cell / 2;
    absl::StrAppend(&svg,
                    absl::StrFormat("<text x=\"%d\" y=\"%d\" font-size=\"12\" fill=\"#1f2328\" "
                                    "transform=\"rotate(-50 %d %d)\">%s</text>\n",
                                    x, top - 8, x, top - 8, HtmlEscape(labels[col])));
  }
  absl::StrAppend(
      &svg, absl::StrFormat(
                "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\" fill=\"#59636e\">"
                "predicted →  (rows: true label)</text>\n</svg>\n",
                left + cell * static_cast<int>(n) / 2, top + cell * static_cast<int>(n) + 24));
  return svg;
}

std::vector<std::pair<double, double>> DownsampleMinMax(
    const std::vector<std::pair<double, double>>& points, size_t max_points) {
  if (points.size() <= max_points || max_points < 2) return points;
  const size_t buckets = max_points / 2;
  std::vector<std::pair<double, double>> out;
  out.reserve(2 * buckets);
  for (size_t b = 0; b < buckets; ++b) {
    const size_t begin = b * points.size() / buckets;
    const size_t end = (b + 1) * points.size() / buckets;
    size_t lo = begin, hi = begin;
    for (size_t i = begin; i < end; ++i) {
      // NaN never wins a comparison, so a finite point is preferred.
      if (points[i].second < points[lo].second || !std::isfinite(points[lo].second)) lo = i;
      if (points[i].second > points[hi].second || !std::isfinite(points[hi].second)) hi = i;
    }
    out.push_back(points[std::min(lo, hi)]);
    if (lo != hi) out.push_back(points[std::max(lo, hi)]);
  }
  return out;
}

const char* PageStyle() { return kStyle; }

std::string StateLabel(ftune::v1::JobState state) {
  const std::string name = ftune::v1::JobState_Name(state);
  if (name.size() > 10) return name.substr(10);
  return absl::StrCat("STATE_", static_cast<int>(state));
}

// --- JobReport ---

void JobReport::Add(const JobEvent& e) {
  last_seq_ = std::max(last_seq_, e.seq());
  auto history = [this, &e](const std::string& what, const std::string& detail) {
    history_.push_back(absl::StrCat("<tr><td>", FormatTime(e.time()), "</td><td>", HtmlEscape(what),
                                    "</td><td>", HtmlEscape(detail), "</td></tr>\n"));
    if (history_.size() > kMaxHistoryRows) {
      history_.pop_front();
      ++history_dropped_;
    }
  };
  switch (e.payload_case()) {
    case JobEvent::kTrainProgress: {
      const auto& p = e.train_progress();
      loss_.points.emplace_back(p.step(), p.loss());
      lr_.points.emplace_back(p.step(), p.learning_rate());
      last_progress_ = p;
      break;
    }
    case JobEvent::kEvalResult: {
      const auto& r = e.eval_result();
      eval_loss_.points.emplace_back(r.step(), r.loss());
      accuracy_.points.emplace_back(r.step(), r.accuracy());
      macro_f1_.points.emplace_back(r.step(), r.macro_f1());
      last_eval_ = r;
      // is_best marks every improvement, so the last one marked is the best.
      if (r.is_best()) best_eval_ = r;
      break;
    }
    case JobEvent::kDatasetSummary:
      dataset_ = e.dataset_summary();
      break;
    case JobEvent::kStateChanged:
      history(StateLabel(e.state_changed().to()), e.state_changed().reason());
      break;
    case JobEvent::kCheckpointSaved: {
      const auto& c = e.checkpoint_saved();
      checkpoints_.push_back(e);
      history("checkpoint", absl::StrCat(c.path(), c.is_best() ? " (best)" : ""));
      break;
    }
    case JobEvent::kLog:
      history("log", e.log().message());
      break;
    default:
      break;
  }
}

std::string JobReport::Cards(const ftune::v1::Job& job) const {
  std::string html = "<div class=cards>\n";
  if (best_eval_) {
    absl::StrAppend(&html,
                    Card("best accuracy", absl::StrFormat("%.1f%%", 100 * best_eval_->accuracy())),
                    Card("macro-F1 at best", absl::StrFormat("%.3f", best_eval_->macro_f1())),
                    Card("best at step", absl::StrCat(best_eval_->step())));
  }
  if (last_progress_) {
    absl::StrAppend(
        &html,
        Card("steps", absl::StrCat(last_progress_->step(), " / ", last_progress_->total_steps())),
        Card("samples/s", absl::StrFormat("%.1f", last_progress_->samples_per_sec())),
        Card("training time", FormatSeconds(last_progress_->elapsed_seconds())));
  }
  absl::StrAppend(&html, Card("attempts", absl::StrCat(job.attempt() + 1)), "</div>\n");
  return html;
}

std::string JobReport::Progress(const ftune::v1::Job& job) const {
  const int64_t step = last_progress_ ? last_progress_->step() : job.step();
  const int64_t total = last_progress_ ? last_progress_->total_steps() : job.total_steps();
  if (total <= 0) return "<p class=sub>not started</p>\n";
  const double share = std::clamp(static_cast<double>(step) / total, 0.0, 1.0);
  std::string eta;
  const bool running =
      job.state() == ftune::v1::JOB_STATE_RUNNING || job.state() == ftune::v1::JOB_STATE_ASSIGNED;
  if (running && last_progress_ && last_progress_->eta_seconds() > 0) {
    eta = absl::StrCat(" · ETA ", FormatSeconds(last_progress_->eta_seconds()));
  }
  return absl::StrFormat(
      "<div class=bar role=progressbar aria-valuenow=\"%.1f\"><div style=\"width:%.1f%%\"></div>"
      "</div><div class=sub>step %d / %d (%.1f%%)%s</div>\n",
      100 * share, 100 * share, step, total, 100 * share, eta);
}

std::string JobReport::Charts() const {
  return absl::StrCat(
      "<div class=charts>\n", LineChartSvg("Loss", "optimizer step", {loss_, eval_loss_}, true),
      LineChartSvg("Learning rate", "optimizer step", {lr_}, true),
      LineChartSvg("Evaluation", "optimizer step", {accuracy_, macro_f1_}, true), "</div>\n");
}

std::string JobReport::Evaluation() const {
  const std::optional<ftune::v1::EvalResult>& shown = best_eval_ ? best_eval_ : last_eval_;
  if (!shown) return "<p class=sub>no evaluation yet</p>\n";
  std::vector<std::string> labels(shown->labels().begin(), shown->labels().end());
  std::vector<uint32_t> counts(shown->confusion().begin(), shown->confusion().end());
  std::string html = absl::StrCat(
      "<p class=sub>", best_eval_ ? "the best checkpoint's evaluation" : "the latest evaluation",
      "</p><div class=cols><div>\n", ConfusionMatrixSvg(labels, counts), "</div><div>\n",
      "<table><tr><th>label</th><th>recall</th></tr>\n");
  for (int i = 0; i < shown->labels_size() && i < shown->per_class_recall_size(); ++i) {
    absl::StrAppend(
        &html, Row(shown->labels(i), absl::StrFormat("%.1f%%", 100 * shown->per_class_recall(i))));
  }
  absl::StrAppend(&html, "</table>\n<table>",
                  Row("accuracy", absl::StrFormat("%.2f%%", 100 * shown->accuracy())),
                  Row("macro-F1", absl::StrFormat("%.4f", shown->macro_f1())),
                  Row("eval loss", absl::StrFormat("%.4f", shown->loss())),
                  Row("clips", absl::StrCat(shown->num_samples())),
                  Row("epoch / step", absl::StrCat(shown->epoch(), " / ", shown->step())),
                  "</table>\n</div></div>\n");
  return html;
}

std::string JobReport::Checkpoints() const {
  if (checkpoints_.empty()) return "<p class=sub>no checkpoint yet</p>\n";
  std::string html =
      "<table><tr><th>saved</th><th>path</th><th>epoch / step</th><th>metric</th><th></th></tr>\n";
  for (const JobEvent& e : checkpoints_) {
    const auto& c = e.checkpoint_saved();
    absl::StrAppend(&html, "<tr><td>", FormatTime(e.time()), "</td><td><code>",
                    HtmlEscape(c.path()), "</code></td><td>", c.epoch(), " / ", c.step(),
                    "</td><td>",
                    c.metric_name().empty()
                        ? ""
                        : HtmlEscape(absl::StrFormat("%s %.4f", c.metric_name(), c.metric_value())),
                    "</td><td>", c.is_best() ? "best" : "", "</td></tr>\n");
  }
  return html + "</table>\n";
}

std::string JobReport::Dataset() const {
  if (!dataset_) return "<p class=sub>no dataset summary yet</p>\n";
  const ftune::v1::DatasetSummary& d = *dataset_;
  std::string html = absl::StrCat(
      "<div class=cols><div><table>", Row("path", d.path()),
      Row("layout / split", absl::StrCat(d.layout(), " / ", d.split())),
      Row("files", absl::StrCat(d.usable_files(), " usable of ", d.total_files())),
      Row("train / eval", absl::StrCat(d.train_files(), " / ", d.eval_files())),
      Row("duration",
          absl::StrFormat("%.2f s min, %.2f s median, %.2f s max, %.1f min total", d.min_seconds(),
                          d.median_seconds(), d.max_seconds(), d.total_seconds() / 60)),
      Row("eval speakers", absl::StrJoin(d.eval_speakers(), ", ")), "</table></div>\n", "<div>",
      CountsTable("class", "clips", d.classes()), "</div>\n", "<div>",
      CountsTable("speaker", "clips", d.speakers()), "</div></div>\n");
  if (d.skipped_size() > 0) {
    absl::StrAppend(&html, "<p>", d.skipped_size(), " file(s) skipped:</p><table>\n");
    for (const auto& skipped : d.skipped()) {
      absl::StrAppend(&html, Row(skipped.path(), skipped.reason()));
    }
    absl::StrAppend(&html, "</table>\n");
  }
  return html;
}

std::string JobReport::History() const {
  std::string html = "<table>";
  for (const std::string& row : history_) html += row;
  html += "</table>\n";
  if (history_dropped_ > 0) {
    absl::StrAppend(&html, "<p class=sub>", history_dropped_,
                    " earlier entries are not shown.</p>\n");
  }
  return html;
}

namespace {

// The sections every job page has, by element id.
std::vector<std::pair<std::string, std::string>> Sections(const ftune::v1::Job& job,
                                                          const JobReport& report) {
  return {{"sec-cards", report.Cards(job)},          {"sec-progress", report.Progress(job)},
          {"sec-charts", report.Charts()},           {"sec-evaluation", report.Evaluation()},
          {"sec-checkpoints", report.Checkpoints()}, {"sec-dataset", report.Dataset()},
          {"sec-history", report.History()}};
}

bool IsTerminal(ftune::v1::JobState state) {
  return state == ftune::v1::JOB_STATE_SUCCEEDED || state == ftune::v1::JOB_STATE_FAILED ||
         state == ftune::v1::JOB_STATE_CANCELLED;
}

// The live page's script: the event stream (resumed by the browser with Last-Event-ID) only
// says that something happened; the server re-renders the sections, so there is one
// renderer. Fetches carry the session cookie and X-Requested-With.
const char* const kLiveScript = R"js(
(function () {
  const body = document.body, id = body.dataset.job;
  let seq = Number(body.dataset.seq), oldest = Number(body.dataset.oldest);
  let busy = false, again = false, timer = null, source = null;
  const api = (path, init) => fetch(path, Object.assign(
      {credentials: 'same-origin', headers: {'X-Requested-With': 'ftune'}}, init || {}));
  const say = (text) => { document.getElementById('live').textContent = text; };
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const reply = await api('/jobs/' + encodeURIComponent(id) + '/sections?after_seq=' + seq);
      if (!reply.ok) throw new Error('HTTP ' + reply.status);
      const page = await reply.json();
      for (const [key, html] of Object.entries(page.sections)) {
        const element = document.getElementById(key);
        if (element) element.innerHTML = html;
      }
      document.getElementById('log-rows').insertAdjacentHTML('afterbegin', page.log_rows);
      seq = page.seq;
      body.dataset.seq = String(seq);
      document.getElementById('state').textContent = page.state;
      document.getElementById('state').className = 'state-' + page.state;
      if (page.terminal) {
        const cancel = document.getElementById('cancel');
        if (cancel) cancel.remove();
        if (source) source.close();
        say('finished');
      }
    } catch (e) {
      say('update failed: ' + e.message);
    }
    busy = false;
    if (again) { again = false; refresh(); }
  }
  const soon = () => { if (!timer) timer = setTimeout(() => { timer = null; refresh(); }, 150); };
  if (body.dataset.terminal !== 'true') {
    source = new EventSource('/api/v1/jobs/' + encodeURIComponent(id) + '/events?after_seq=' + seq);
    source.onopen = () => say('live');
    // The seqs the stream delivered, in order: what tests (and curious people) check resumes.
    window.ftuneStreamSeqs = [];
    source.onmessage = (event) => { window.ftuneStreamSeqs.push(Number(event.lastEventId)); soon(); };
    source.addEventListener('end', () => { source.close(); refresh(); });
    source.addEventListener('error', () => say('reconnecting…'));
  }
  const earlier = document.getElementById('earlier');
  if (earlier) earlier.onclick = async () => {
    const reply = await api('/jobs/' + encodeURIComponent(id) + '/log?before_seq=' + oldest);
    if (!reply.ok) { say('loading earlier events failed: HTTP ' + reply.status); return; }
    const page = await reply.json();
    document.getElementById('log-rows').insertAdjacentHTML('beforeend', page.log_rows);
    oldest = page.oldest;
    if (oldest <= 1) earlier.remove();
  };
  const cancel = document.getElementById('cancel');
  if (cancel) cancel.onclick = async () => {
    if (!window.confirm('Cancel job ' + id + '?')) return;
    const reply = await api('/api/v1/jobs/' + encodeURIComponent(id) + ':cancel', {method: 'POST'});
    say(reply.ok ? 'cancel requested' : 'cancel failed: HTTP ' + reply.status);
    refresh();
  };
})();
)js";

}  // namespace

std::string RenderJobSections(const ftune::v1::Job& job, const JobReport& report,
                              const std::string& log_rows) {
  nlohmann::json sections = nlohmann::json::object();
  for (auto& [id, html] : Sections(job, report)) sections[id] = std::move(html);
  nlohmann::json page = {{"seq", report.last_seq()},
                         {"state", StateLabel(job.state())},
                         {"terminal", IsTerminal(job.state())},
                         {"sections", std::move(sections)},
                         {"log_rows", log_rows}};
  return page.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string EventLogRows(const std::vector<JobEvent>& events) {
  std::string html;
  for (const JobEvent& e : events) {
    std::string kind, detail;
    switch (e.payload_case()) {
      case JobEvent::kStateChanged:
        kind = "state";
        detail = absl::StrCat(StateLabel(e.state_changed().to()),
                              e.state_changed().reason().empty() ? "" : ": ",
                              e.state_changed().reason());
        break;
      case JobEvent::kDatasetSummary:
        kind = "dataset";
        detail = absl::StrCat(e.dataset_summary().path(), ": ", e.dataset_summary().usable_files(),
                              " usable files");
        break;
      case JobEvent::kTrainProgress: {
        const auto& p = e.train_progress();
        kind = "progress";
        detail = absl::StrFormat("step %d/%d loss %.4f lr %.3g %.1f samples/s", p.step(),
                                 p.total_steps(), p.loss(), p.learning_rate(), p.samples_per_sec());
        break;
      }
      case JobEvent::kEvalResult: {
        const auto& r = e.eval_result();
        kind = "eval";
        detail = absl::StrFormat("step %d accuracy %.2f%% macro-F1 %.4f loss %.4f%s", r.step(),
                                 100 * r.accuracy(), r.macro_f1(), r.loss(),
                                 r.is_best() ? " (best)" : "");
        break;
      }
      case JobEvent::kCheckpointSaved:
        kind = "checkpoint";
        detail = absl::StrCat(e.checkpoint_saved().path(),
                              e.checkpoint_saved().is_best() ? " (best)" : "");
        break;
      case JobEvent::kLog:
        kind = "log";
        detail = e.log().message();
        break;
      default:
        kind = "event";
        break;
    }
    absl::StrAppend(&html, "<tr><td>", e.seq(), "</td><td>", FormatTime(e.time()), "</td><td>",
                    kind, "</td><td>", HtmlEscape(detail), "</td></tr>\n");
  }
  return html;
}

std::string RenderJobPage(const ftune::v1::Job& job, const JobReport& report,
                          const PageOptions& options) {
  const std::string state = StateLabel(job.state());
  const std::string name = job.spec().name().empty() ? job.id() : job.spec().name();
  std::string html =
      absl::StrCat("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>\n<title>ftune ",
                   options.live ? "job" : "report", ": ", HtmlEscape(name), "</title>\n<style>",
                   kStyle, "</style></head>");
  if (options.live) {
    // Events before this one are the earliest the page's log holds (see EventLogRows).
    absl::StrAppend(&html, "<body data-job=\"", HtmlEscape(job.id()), "\" data-seq=\"",
                    report.last_seq(), "\" data-terminal=\"",
                    IsTerminal(job.state()) ? "true" : "false", "\" data-oldest=\"",
                    std::max<int64_t>(1, report.last_seq() - kEventLogPage + 1), "\">\n",
                    "<nav><a href=\"/\">jobs</a><a href=\"/workers\">workers</a>"
                    "<span id=live></span></nav>\n");
  } else {
    html += "<body>\n";
  }
  absl::StrAppend(&html, "<h1>", HtmlEscape(name), " <span id=state class=\"state-", state, "\">",
                  state, "</span>");
  if (options.live && options.can_cancel && !IsTerminal(job.state())) {
    absl::StrAppend(&html, " <button id=cancel class=danger>cancel</button>");
  }
  absl::StrAppend(&html, "</h1>\n<div class=sub>job ", HtmlEscape(job.id()), " · model ",
                  HtmlEscape(job.spec().model()), " · dataset ",
                  HtmlEscape(absl::StrJoin(DatasetPaths(job.spec()), " + ")), " · created ",
                  FormatTime(job.create_time()), "</div>\n");
  if (!job.error().empty()) {
    absl::StrAppend(&html, "<p class=state-FAILED>", HtmlEscape(job.error()), "</p>\n");
  }
  const auto sections = Sections(job, report);
  auto section = [&](const std::string& id, const std::string& title) {
    for (const auto& [key, content] : sections) {
      if (key != id) continue;
      absl::StrAppend(&html, title.empty() ? "" : absl::StrCat("<h2>", title, "</h2>\n"),
                      "<div id=", id, ">", content, "</div>\n");
    }
  };
  section("sec-cards", "");
  section("sec-progress", "");
  section("sec-charts", "Training");
  section("sec-evaluation", "Evaluation");
  section("sec-checkpoints", "Checkpoints");
  section("sec-dataset", "Dataset");

  google::protobuf::util::JsonPrintOptions json_options;
  json_options.add_whitespace = true;
  json_options.preserve_proto_field_names = true;
  json_options.always_print_primitive_fields = true;
  std::string spec_json;
  (void)google::protobuf::util::MessageToJsonString(job.spec(), &spec_json, json_options);
  absl::StrAppend(&html, "<h2>Hyperparameters</h2>\n<pre>", HtmlEscape(spec_json), "</pre>\n");
  section("sec-history", "History");
  if (options.live) {
    absl::StrAppend(&html,
                    "<h2>Event log</h2>\n<table class=log><thead><tr><th>seq</th><th>time</th>"
                    "<th>kind</th><th></th></tr></thead><tbody id=log-rows>\n",
                    options.event_rows, "</tbody></table>\n");
    if (report.last_seq() > kEventLogPage) {
      html += "<button id=earlier>load earlier events</button>\n";
    }
    absl::StrAppend(&html, "<script>", kLiveScript, "</script>\n");
  }
  absl::StrAppend(&html, "<p class=sub>", HtmlEscape(options.footer), "</p>\n</body></html>\n");
  return html;
}

std::string RenderReport(const ftune::v1::Job& job, std::vector<JobEvent> events) {
  std::sort(events.begin(), events.end(),
            [](const JobEvent& a, const JobEvent& b) { return a.seq() < b.seq(); });
  JobReport report;
  for (const JobEvent& e : events) report.Add(e);
  return RenderJobPage(job, report, PageOptions());
}

}  // namespace ftune
