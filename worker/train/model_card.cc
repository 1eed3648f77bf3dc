#include "worker/train/model_card.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/version.h"
#include "worker/train/metrics.h"

namespace ftune::train {
namespace {

// A YAML scalar: a JSON string is a valid YAML double-quoted string, whatever it holds.
std::string Yaml(const std::string& text) { return nlohmann::json(text).dump(); }
std::string Yaml(double value) { return nlohmann::json(value).dump(); }

// Text for a Markdown table cell.
std::string Cell(const std::string& text) {
  return absl::StrReplaceAll(text, {{"|", "\\|"}, {"\n", " "}});
}

std::string Fixed(double value) { return absl::StrFormat("%.4f", value); }

bool IsNamedCorpus(const std::string& layout) {
  static const auto* kNamed =
      new std::set<std::string>{"ravdess", "crema-d", "tess", "savee", "emodb"};
  return kNamed->count(layout) > 0;
}

std::string CorpusName(const ftune::v1::DatasetSummary& corpus) {
  if (IsNamedCorpus(corpus.layout())) return corpus.layout();
  std::string path = corpus.path();
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  const size_t dot = name.rfind(".csv");
  if (dot != std::string::npos && dot + 4 == name.size()) name.resize(dot);
  return name.empty() ? "dataset" : name;
}

std::vector<const ftune::v1::DatasetSummary*> Corpora(const ftune::v1::DatasetSummary& summary) {
  std::vector<const ftune::v1::DatasetSummary*> corpora;
  for (const auto& corpus : summary.corpora()) corpora.push_back(&corpus);
  if (corpora.empty()) corpora.push_back(&summary);
  return corpora;
}

uint32_t Count(const google::protobuf::Map<std::string, uint32_t>& map, const std::string& key) {
  auto it = map.find(key);
  return it == map.end() ? 0 : it->second;
}

void FrontMatter(const ModelCardInputs& in, const std::vector<std::string>& datasets,
                 std::string* out) {
  absl::StrAppend(out, "---\nlibrary_name: transformers\npipeline_tag: audio-classification\n");
  if (!in.base_model.empty()) absl::StrAppend(out, "base_model: ", Yaml(in.base_model), "\n");
  absl::StrAppend(out, "tags:\n- audio-classification\n- hubert\n- ftune\ndatasets:\n");
  for (const std::string& name : datasets) absl::StrAppend(out, "- ", Yaml(name), "\n");
  absl::StrAppend(out, "metrics:\n- accuracy\n- f1\n");
  if (in.eval) {
    const std::string dataset = absl::StrJoin(datasets, " + ");
    absl::StrAppend(
        out, "model-index:\n- name: ", Yaml(in.model_name), "\n  results:\n",
        "  - task:\n      type: audio-classification\n      name: Audio Classification\n",
        "    dataset:\n      name: ", Yaml(dataset), "\n      type: ", Yaml(dataset),
        "\n      split: ", Yaml(absl::StrCat("eval (", in.dataset.split(), " split)")),
        "\n    metrics:\n", "    - type: accuracy\n      value: ", Yaml(in.eval->accuracy()),
        "\n      name: Accuracy\n", "    - type: f1\n      value: ", Yaml(in.eval->macro_f1()),
        "\n      name: Macro F1\n      args:\n        average: macro\n");
  }
  absl::StrAppend(out, "---\n\n");
}

void Results(const ftune::v1::EvalResult& eval, const ModelCardInputs& in, std::string* out) {
  const auto& d = in.dataset;
  absl::StrAppend(out, "## Results\n\nOn the evaluation set (", eval.num_samples(), " clips");
  if (d.eval_speakers_size() > 0) {
    absl::StrAppend(out, " of held-out speakers ", absl::StrJoin(d.eval_speakers(), ", "));
  }
  absl::StrAppend(out, "), at step ", in.step, " (epoch ", absl::StrFormat("%.2f", in.epoch),
                  "):\n\n- Loss: ", Fixed(eval.loss()), "\n- Accuracy: ", Fixed(eval.accuracy()),
                  "\n- Macro F1: ", Fixed(eval.macro_f1()), "\n\n");

  const int n = eval.labels_size();
  const ClassificationMetrics m = MetricsFromConfusion(
      std::vector<uint32_t>(eval.confusion().begin(), eval.confusion().end()), n);
  absl::StrAppend(out, "### Per class\n\n| label | precision | recall | F1 | clips |\n",
                  "|:--|--:|--:|--:|--:|\n");
  for (int c = 0; c < n; ++c) {
    int64_t support = 0;
    for (int k = 0; k < n; ++k) support += m.confusion[static_cast<size_t>(c) * n + k];
    absl::StrAppend(out, "| ", Cell(eval.labels(c)), " | ", Fixed(m.per_class_precision[c]), " | ",
                    Fixed(m.per_class_recall[c]), " | ", Fixed(m.per_class_f1[c]), " | ", support,
                    " |\n");
  }
  absl::StrAppend(out, "\n### Confusion matrix\n\nRows are the true labels, columns the ",
                  "predicted ones.\n\n| true \\ predicted |");
  for (const std::string& label : eval.labels()) absl::StrAppend(out, " ", Cell(label), " |");
  absl::StrAppend(out, "\n|:--|");
  for (int c = 0; c < n; ++c) absl::StrAppend(out, "--:|");
  absl::StrAppend(out, "\n");
  for (int r = 0; r < n; ++r) {
    absl::StrAppend(out, "| ", Cell(eval.labels(r)), " |");
    for (int c = 0; c < n; ++c) {
      absl::StrAppend(out, " ", m.confusion[static_cast<size_t>(r) * n + c], " |");
    }
    absl::StrAppend(out, "\n");
  }
  absl::StrAppend(out, "\n");
}

void TrainingData(const ModelCardInputs& in, std::string* out) {
  const auto& d = in.dataset;
  absl::StrAppend(out, "## Training data\n\n| corpus | layout | split | train clips | ",
                  "eval clips |\n|:--|:--|:--|--:|--:|\n");
  for (const ftune::v1::DatasetSummary* corpus : Corpora(d)) {
    absl::StrAppend(out, "| ", Cell(CorpusName(*corpus)), " | ", corpus->layout(), " | ",
                    corpus->split(), " | ", corpus->train_files(), " | ", corpus->eval_files(),
                    " |\n");
  }
  absl::StrAppend(out, "\n| label | train clips | eval clips |\n|:--|--:|--:|\n");
  for (const std::string& label : d.labels()) {
    absl::StrAppend(out, "| ", Cell(label), " | ", Count(d.train_classes(), label), " | ",
                    Count(d.eval_classes(), label), " |\n");
  }
  if (d.eval_speakers_size() > 0) {
    absl::StrAppend(out,
                    "\nSpeakers held out for evaluation: ", absl::StrJoin(d.eval_speakers(), ", "),
                    " (", d.train_speakers_size(), " speakers in training).\n");
  }
  absl::StrAppend(out, "\n");
}

// Hugging Face's "Training results" table: one row per evaluation, with the latest training
// loss logged at or before it.
void EvaluationHistory(const std::vector<nlohmann::json>& log_history, std::string* out) {
  absl::StrAppend(out, "### Evaluation history\n\n| Training Loss | Epoch | Step | ",
                  "Validation Loss | Accuracy | Macro F1 |\n", "|:--:|:--:|:--:|:--:|:--:|:--:|\n");
  std::string train_loss = "No log";
  for (const nlohmann::json& entry : log_history) {
    if (entry.contains("loss")) train_loss = Fixed(entry["loss"].get<double>());
    if (!entry.contains("eval_loss")) continue;
    auto number = [&](const char* key) {
      return entry.contains(key) ? Fixed(entry[key].get<double>()) : std::string("-");
    };
    absl::StrAppend(out, "| ", train_loss, " | ",
                    absl::StrFormat("%.2f", entry.value("epoch", 0.0)), " | ",
                    entry.value("step", int64_t{0}), " | ", number("eval_loss"), " | ",
                    number("eval_accuracy"), " | ", number("eval_macro_f1"), " |\n");
  }
  absl::StrAppend(out, "\n");
}

}  // namespace

std::vector<std::string> CardDatasetNames(const ftune::v1::DatasetSummary& summary) {
  std::vector<std::string> names;
  for (const ftune::v1::DatasetSummary* corpus : Corpora(summary)) {
    names.push_back(CorpusName(*corpus));
  }
  return names;
}

std::string RenderModelCard(const ModelCardInputs& in) {
  const std::vector<std::string> datasets = CardDatasetNames(in.dataset);
  std::string out;
  FrontMatter(in, datasets, &out);
  absl::StrAppend(&out, "# ", in.model_name, "\n\n");
  absl::StrAppend(&out, "An audio classifier (`HubertForSequenceClassification`) for ",
                  in.dataset.labels_size(), " labels: ", absl::StrJoin(in.dataset.labels(), ", "),
                  ". ");
  if (!in.base_model.empty()) {
    absl::StrAppend(&out, "Fine-tuned from [", in.base_model, "](https://huggingface.co/",
                    in.base_model, ")");
  } else {
    absl::StrAppend(&out, "Trained from ", in.started_from);
  }
  absl::StrAppend(&out, " on ", absl::StrJoin(datasets, " + "), " with ftune.\n\n");
  if (in.eval) {
    Results(*in.eval, in, &out);
  } else {
    absl::StrAppend(&out, "## Results\n\nThis checkpoint (step ", in.step,
                    ") was saved without an evaluation; the evaluation history below has the "
                    "evaluations before it.\n\n");
  }
  TrainingData(in, &out);
  absl::StrAppend(&out, "## Training procedure\n\n### Hyperparameters\n\n");
  for (const auto& [name, value] : in.hyperparameters) {
    absl::StrAppend(&out, "- ", name, ": ", value, "\n");
  }
  absl::StrAppend(&out, "\n");
  EvaluationHistory(in.log_history, &out);
  absl::StrAppend(
      &out,
      "## How to use\n\nWith transformers:\n\n```python\nfrom transformers import pipeline\n\n",
      "classifier = pipeline(\"audio-classification\", model=\"PATH_OR_HUB_ID\")\n",
      "classifier(\"clip.wav\")\n```\n\nWith ftune: `ftserve --model NAME=PATH --listen ",
      "127.0.0.1:7080`, then `ftctl classify --server 127.0.0.1:7080 clip.wav`.\n\n",
      "### Framework versions\n\n- ftune ", kVersion, "\n");
  return out;
}

}  // namespace ftune::train
