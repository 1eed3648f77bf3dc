// `ftworker init-model`: writes the model a job would start from — a preset's random
// initialisation, or a folder with its head re-initialised for another label set — as a
// Hugging Face folder. The learning-parity benchmark starts its eager-PyTorch reference from
// it; anyone can load it with transformers.
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "worker/commands.h"
#include "worker/model/checkpoint.h"

namespace ftune::worker {
namespace {

struct InitModelFlags {
  std::string model;
  std::vector<std::string> labels;
  uint64_t seed = 42;
  std::string output_dir;
};

int InitModel(const InitModelFlags& flags) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(fs::path(flags.output_dir) / "model.safetensors", ec)) {
    std::cerr << "ftworker init-model: " << flags.output_dir
              << " already holds a model (choose a new folder)\n";
    return 2;
  }
  auto loaded = model::LoadModel(flags.model, flags.labels, flags.seed);
  if (!loaded.ok()) {
    std::cerr << "ftworker init-model: " << loaded.status().message() << "\n";
    return 1;
  }
  fs::create_directories(flags.output_dir, ec);
  if (ec) {
    std::cerr << "ftworker init-model: cannot create " << flags.output_dir << ": "
              << ec.message() << "\n";
    return 1;
  }
  if (absl::Status s = model::SaveModelFolder(loaded->model, loaded->preprocessor,
                                              flags.output_dir);
      !s.ok()) {
    std::cerr << "ftworker init-model: " << s.message() << "\n";
    return 1;
  }
  for (const std::string& note : loaded->notes) std::cout << note << "\n";
  std::cout << "wrote " << flags.output_dir << " (labels "
            << absl::StrJoin(loaded->config.id2label, ",") << ", seed " << flags.seed << ")\n";
  return 0;
}

}  // namespace

void AddInitModelCommand(CLI::App& app, int* exit_code);
FTWORKER_COMMAND("init-model", AddInitModelCommand);

void AddInitModelCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<InitModelFlags>();
  CLI::App* cmd = app.add_subcommand(
      "init-model",
      "Write the model a job would start from (a preset's random initialisation, or a folder "
      "with a fresh head for new labels) as a Hugging Face folder");
  cmd->add_option("--model", flags->model, "Preset (tiny, hubert-base, hubert-large) or folder")
      ->required();
  cmd->add_option("--labels", flags->labels, "Label set and order, comma-separated")
      ->delimiter(',');
  cmd->add_option("--seed", flags->seed, "Seed of every fresh weight, as the job's --seed")
      ->capture_default_str();
  cmd->add_option("--output-dir", flags->output_dir, "Folder to write (created)")->required();
  cmd->callback([flags, exit_code] { *exit_code = InitModel(*flags); });
}

}  // namespace ftune::worker
