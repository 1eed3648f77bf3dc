// `ftctl report`: one self-contained HTML page for a job — loss, learning-rate and accuracy
// curves and the confusion matrix as inline SVG, the hyperparameters, the dataset summary and
// the job's history. No scripts, fonts or images from anywhere else.
#pragma once

#include <string>
#include <vector>

#include "ftune/v1/job.pb.h"

namespace ftune::ctl {

// Renders the page from the job and its events (any order; seq decides).
std::string RenderReport(const ftune::v1::Job& job, std::vector<ftune::v1::JobEvent> events);

// A line chart as an <svg> element: one polyline per series, axes with ticks.
struct Series {
  std::string name;
  std::string color;                              // CSS colour
  std::vector<std::pair<double, double>> points;  // (x, y)
};
std::string LineChartSvg(const std::string& title, const std::string& x_label,
                         const std::vector<Series>& series, bool y_from_zero);

// The confusion matrix (rows = true label) as a heat map <svg> with counts in the cells.
std::string ConfusionMatrixSvg(const std::vector<std::string>& labels,
                               const std::vector<uint32_t>& counts);

// &, <, >, " and ' as entities.
std::string HtmlEscape(const std::string& text);

}  // namespace ftune::ctl
