// `ftctl classify FILE... --server ADDR`: sends audio files to ftserve and prints the labels.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/commands.h"
#include "client/output.h"
#include "common/grpc_status.h"
#include "ftune/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace ftune::ctl {
namespace {

struct ClassifyFlags {
  std::vector<std::string> files;
  std::string server = "localhost:7080";
  std::string model_id;
  uint32_t top_k = 3;
  bool json = false;
};

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

int RunClassify(const Ctl& ctl, const ClassifyFlags& flags) {
  GlobalFlags server_flags = ctl.flags;
  server_flags.controller = flags.server;
  auto channel = ConnectChannel(server_flags);
  if (!channel.ok()) return ReportError(channel.status(), server_flags);
  auto stub = ftune::v1::InferenceService::NewStub(*channel);

  int exit_code = kExitOk;
  bool header = false;
  int file_width = 4;
  for (const std::string& file : flags.files) {
    file_width = std::max(file_width, static_cast<int>(file.size()));
  }
  for (const std::string& file : flags.files) {
    absl::StatusOr<std::string> bytes = ReadFile(file);
    ftune::v1::ClassifyResponse response;
    absl::Status status = bytes.status();
    if (bytes.ok()) {
      ftune::v1::ClassifyRequest request;
      request.set_model_id(flags.model_id);
      request.set_audio_file(std::move(*bytes));
      request.set_top_k(flags.top_k);
      grpc::ClientContext context;
      SetDeadline(&context, ctl.flags);
      status = FromGrpcStatus(stub->Classify(&context, request, &response));
    }
    if (!status.ok()) {
      if (absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status)) {
        std::fprintf(stderr, "ftctl: cannot reach ftserve at %s: %s\n", flags.server.c_str(),
                     std::string(status.message()).c_str());
        return kExitUnavailable;
      }
      std::fprintf(stderr, "ftctl: %s: %s\n", file.c_str(), std::string(status.message()).c_str());
      exit_code = std::max(exit_code, ExitCodeFor(status));
      continue;
    }
    if (flags.json) {
      nlohmann::ordered_json out;
      out["file"] = file;
      out["label"] = response.label();
      out["probability"] = response.probability();
      nlohmann::ordered_json probabilities = nlohmann::ordered_json::object();
      for (const auto& s : response.scores()) probabilities[s.label()] = s.probability();
      out["probabilities"] = probabilities;
      nlohmann::ordered_json top = nlohmann::ordered_json::array();
      for (const auto& s : response.top()) {
        top.push_back({{"label", s.label()}, {"probability", s.probability()}});
      }
      out["top"] = top;
      out["model_id"] = response.model_id();
      out["model_version"] = response.model_version();
      out["latency_ms"] = response.latency_ms();
      out["audio_seconds"] = response.audio_seconds();
      std::cout << out.dump() << "\n" << std::flush;
      continue;
    }
    if (!header) {
      std::cout << absl::StrFormat("%-*s %-12s %6s  %s\n", file_width, "FILE", "LABEL", "PROB",
                                   "TOP");
      header = true;
    }
    std::string top;
    for (const auto& s : response.top()) {
      absl::StrAppend(&top, top.empty() ? "" : ", ", s.label(),
                      absl::StrFormat(" %.2f", s.probability()));
    }
    std::cout << absl::StrFormat("%-*s %-12s %6.3f  %s\n", file_width, file, response.label(),
                                 response.probability(), top)
              << std::flush;
  }
  return exit_code;
}

}  // namespace

void AddClassifyCommand(CLI::App& app, Ctl* ctl) {
  auto flags = std::make_shared<ClassifyFlags>();
  CLI::App* cmd = app.add_subcommand("classify", "Classify audio files with an ftserve server");
  cmd->fallthrough();
  cmd->add_option("files", flags->files, "Audio files (any format libsndfile reads)")->required();
  cmd->add_option("--server", flags->server, "ftserve address host:port")
      ->envname("FTCTL_SERVER")
      ->capture_default_str();
  cmd->add_option("--model", flags->model_id, "Model id (needed when ftserve serves several)");
  cmd->add_option("--top-k", flags->top_k, "Labels to list per file")->capture_default_str();
  AddJsonFlag(cmd, &flags->json);
  cmd->callback([ctl, flags] { ctl->exit_code = RunClassify(*ctl, *flags); });
}

}  // namespace ftune::ctl
