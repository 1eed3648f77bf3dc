#include "client/report.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/output.h"
#include "common/job_spec.h"
#include "google/protobuf/util/json_util.h"

namespace ftune::ctl {
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

// "SUCCEEDED" for JOB_STATE_SUCCEEDED; numbers this build does not know stay readable.
std::string StateLabel(ftune::v1::JobState state) {
  const std::string name = ftune::v1::JobState_Name(state);
  if (name.size() > 10) return name.substr(10);
  return absl::StrCat("STATE_", static_cast<int>(state));
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
    for (const auto& [x, y] : s.points) {
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

std::string RenderReport(const ftune::v1::Job& job, std::vector<JobEvent> events) {
  std::sort(events.begin(), events.end(),
            [](const JobEvent& a, const JobEvent& b) { return a.seq() < b.seq(); });
  Series loss{"train loss", "#0969da", {}};
  Series lr{"learning rate", "#8250df", {}};
  Series eval_loss{"eval loss", "#cf222e", {}};
  Series accuracy{"accuracy", "#1a7f37", {}};
  Series macro_f1{"macro-F1", "#bf8700", {}};
  const ftune::v1::EvalResult* best_eval = nullptr;
  const ftune::v1::EvalResult* last_eval = nullptr;
  const ftune::v1::DatasetSummary* dataset = nullptr;
  const ftune::v1::TrainProgress* last_progress = nullptr;
  std::string history;
  for (const JobEvent& e : events) {
    switch (e.payload_case()) {
      case JobEvent::kTrainProgress: {
        const auto& p = e.train_progress();
        loss.points.emplace_back(p.step(), p.loss());
        lr.points.emplace_back(p.step(), p.learning_rate());
        last_progress = &p;
        break;
      }
      case JobEvent::kEvalResult: {
        const auto& r = e.eval_result();
        eval_loss.points.emplace_back(r.step(), r.loss());
        accuracy.points.emplace_back(r.step(), r.accuracy());
        macro_f1.points.emplace_back(r.step(), r.macro_f1());
        last_eval = &r;
        // is_best marks every improvement, so the last one marked is the best.
        if (r.is_best()) best_eval = &r;
        break;
      }
      case JobEvent::kDatasetSummary:
        dataset = &e.dataset_summary();
        break;
      case JobEvent::kStateChanged: {
        const auto& s = e.state_changed();
        absl::StrAppend(&history, "<tr><td>", FormatTime(e.time()), "</td><td>",
                        HtmlEscape(StateLabel(s.to())), "</td><td>", HtmlEscape(s.reason()),
                        "</td></tr>\n");
        break;
      }
      case JobEvent::kCheckpointSaved: {
        const auto& c = e.checkpoint_saved();
        absl::StrAppend(&history, "<tr><td>", FormatTime(e.time()), "</td><td>checkpoint</td><td>",
                        HtmlEscape(c.path()), c.is_best() ? " (best)" : "", "</td></tr>\n");
        break;
      }
      case JobEvent::kLog:
        absl::StrAppend(&history, "<tr><td>", FormatTime(e.time()), "</td><td>log</td><td>",
                        HtmlEscape(e.log().message()), "</td></tr>\n");
        break;
      default:
        break;
    }
  }
  const std::string state = StateLabel(job.state());
  const std::string name = job.spec().name().empty() ? job.id() : job.spec().name();
  std::string html = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>\n<title>ftune report: ",
      HtmlEscape(name), "</title>\n<style>", kStyle, "</style></head><body>\n<h1>",
      HtmlEscape(name), " <span class=\"state-", state, "\">", state, "</span></h1>\n",
      "<div class=sub>job ", HtmlEscape(job.id()), " · model ", HtmlEscape(job.spec().model()),
      " · dataset ", HtmlEscape(absl::StrJoin(DatasetPaths(job.spec()), " + ")), " · created ",
      FormatTime(job.create_time()), "</div>\n");
  if (!job.error().empty()) {
    absl::StrAppend(&html, "<p class=state-FAILED>", HtmlEscape(job.error()), "</p>\n");
  }

  absl::StrAppend(&html, "<div class=cards>\n");
  if (best_eval != nullptr) {
    absl::StrAppend(&html,
                    Card("best accuracy", absl::StrFormat("%.1f%%", 100 * best_eval->accuracy())),
                    Card("macro-F1 at best", absl::StrFormat("%.3f", best_eval->macro_f1())),
                    Card("best at step", absl::StrCat(best_eval->step())));
  }
  if (last_progress != nullptr) {
    absl::StrAppend(
        &html,
        Card("steps", absl::StrCat(last_progress->step(), " / ", last_progress->total_steps())),
        Card("samples/s", absl::StrFormat("%.1f", last_progress->samples_per_sec())),
        Card("training time", FormatSeconds(last_progress->elapsed_seconds())));
  }
  absl::StrAppend(&html, Card("attempts", absl::StrCat(job.attempt() + 1)), "</div>\n");

  absl::StrAppend(&html, "<h2>Training</h2>\n<div class=charts>\n",
                  LineChartSvg("Loss", "optimizer step", {loss, eval_loss}, true),
                  LineChartSvg("Learning rate", "optimizer step", {lr}, true),
                  LineChartSvg("Evaluation", "optimizer step", {accuracy, macro_f1}, true),
                  "</div>\n");

  const ftune::v1::EvalResult* shown = best_eval != nullptr ? best_eval : last_eval;
  absl::StrAppend(&html, "<h2>Evaluation", shown == best_eval && shown ? " (best checkpoint)" : "",
                  "</h2>\n<div class=cols><div>\n");
  if (shown != nullptr) {
    std::vector<std::string> labels(shown->labels().begin(), shown->labels().end());
    std::vector<uint32_t> counts(shown->confusion().begin(), shown->confusion().end());
    absl::StrAppend(&html, ConfusionMatrixSvg(labels, counts), "</div><div>\n",
                    "<table><tr><th>label</th><th>recall</th></tr>\n");
    for (int i = 0; i < shown->labels_size() && i < shown->per_class_recall_size(); ++i) {
      absl::StrAppend(&html, Row(shown->labels(i),
                                 absl::StrFormat("%.1f%%", 100 * shown->per_class_recall(i))));
    }
    absl::StrAppend(&html, "</table>\n<table>",
                    Row("accuracy", absl::StrFormat("%.2f%%", 100 * shown->accuracy())),
                    Row("macro-F1", absl::StrFormat("%.4f", shown->macro_f1())),
                    Row("eval loss", absl::StrFormat("%.4f", shown->loss())),
                    Row("clips", absl::StrCat(shown->num_samples())),
                    Row("epoch / step", absl::StrCat(shown->epoch(), " / ", shown->step())),
                    "</table>\n");
  } else {
    absl::StrAppend(&html, "<p class=sub>no evaluation yet</p>\n");
  }
  absl::StrAppend(&html, "</div></div>\n");

  absl::StrAppend(&html, "<h2>Dataset</h2>\n");
  if (dataset != nullptr) {
    absl::StrAppend(
        &html, "<div class=cols><div><table>", Row("path", dataset->path()),
        Row("layout / split", absl::StrCat(dataset->layout(), " / ", dataset->split())),
        Row("files", absl::StrCat(dataset->usable_files(), " usable of ", dataset->total_files())),
        Row("train / eval", absl::StrCat(dataset->train_files(), " / ", dataset->eval_files())),
        Row("duration", absl::StrFormat("%.2f s min, %.2f s median, %.2f s max, %.1f min total",
                                        dataset->min_seconds(), dataset->median_seconds(),
                                        dataset->max_seconds(), dataset->total_seconds() / 60)),
        Row("eval speakers", absl::StrJoin(dataset->eval_speakers(), ", ")), "</table></div>\n",
        "<div>", CountsTable("class", "clips", dataset->classes()), "</div>\n", "<div>",
        CountsTable("speaker", "clips", dataset->speakers()), "</div></div>\n");
    if (dataset->skipped_size() > 0) {
      absl::StrAppend(&html, "<p>", dataset->skipped_size(), " file(s) skipped:</p><table>\n");
      for (const auto& s : dataset->skipped()) absl::StrAppend(&html, Row(s.path(), s.reason()));
      absl::StrAppend(&html, "</table>\n");
    }
  } else {
    absl::StrAppend(&html, "<p class=sub>no dataset summary yet</p>\n");
  }

  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string spec_json;
  (void)google::protobuf::util::MessageToJsonString(job.spec(), &spec_json, options);
  absl::StrAppend(&html, "<h2>Hyperparameters</h2>\n<pre>", HtmlEscape(spec_json), "</pre>\n",
                  "<h2>History</h2>\n<table>", history, "</table>\n",
                  "<p class=sub>Generated by ftctl report.</p>\n</body></html>\n");
  return html;
}

}  // namespace ftune::ctl
