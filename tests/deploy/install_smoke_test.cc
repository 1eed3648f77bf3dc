// Installs the build into a fresh prefix, as `cmake --install build --prefix P` does for a
// user, and runs what got installed: each binary's --version, and each server started with
// the command line its installed systemd unit and env file give (the listen address moved to
// an ephemeral loopback port, the data folders to temporary ones) until it answers
// grpc.health.v1 with SERVING and exits 0 on SIGTERM. ftserve gets a tiny random classifier
// saved as a Hugging Face folder, as a finished job would leave one.
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/support/health.h"
#include "tests/support/process.h"
#include "worker/model/checkpoint.h"

namespace ftune::testing {
namespace {

namespace fs = std::filesystem;

// The cmake that configured this build (tests/deploy/CMakeLists.txt), to install it.
#ifndef FTUNE_CMAKE_COMMAND
#error "FTUNE_CMAKE_COMMAND must name the cmake executable"
#endif

absl::StatusOr<std::string> ReadFile(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

using Environment = std::map<std::string, std::string>;

// KEY=VALUE lines of a systemd EnvironmentFile (our files use no quoting or continuations).
void ParseEnvironmentLines(absl::string_view text, Environment* env) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    (*env)[kv.first] = kv.second;
  }
}

// The argv systemd would run for `unit` (an installed unit file) as instance `instance`:
// Environment= and EnvironmentFile= in order, then `overrides` (what an admin would put in the
// env file), then ExecStart= with %i/%I/%H expanded, ${VAR} as one word and $VAR split on
// whitespace — the subset of systemd's rules our units use.
absl::StatusOr<std::vector<std::string>> UnitCommandLine(const fs::path& unit,
                                                         const std::string& instance,
                                                         const Environment& overrides) {
  auto text = ReadFile(unit);
  if (!text.ok()) return text.status();
  auto specifiers = [&](std::string s) {
    for (const char* spec : {"%i", "%I"}) {
      for (size_t at; (at = s.find(spec)) != std::string::npos;) s.replace(at, 2, instance);
    }
    for (size_t at; (at = s.find("%H")) != std::string::npos;) s.replace(at, 2, "testhost");
    return s;
  };
  Environment env;
  std::string exec_start;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    if (absl::ConsumePrefix(&line, "Environment=")) {
      ParseEnvironmentLines(line, &env);
    } else if (absl::ConsumePrefix(&line, "EnvironmentFile=")) {
      const bool optional = absl::ConsumePrefix(&line, "-");
      auto file = ReadFile(specifiers(std::string(line)));
      if (file.ok()) {
        ParseEnvironmentLines(*file, &env);
      } else if (!optional) {
        return file.status();
      }
    } else if (absl::ConsumePrefix(&line, "ExecStart=")) {
      exec_start = std::string(line);
    }
  }
  if (exec_start.empty()) return absl::NotFoundError(absl::StrCat(unit.string(), ": no ExecStart"));
  for (const auto& [key, value] : overrides) env[key] = value;

  std::vector<std::string> argv;
  for (absl::string_view word : absl::StrSplit(specifiers(exec_start), ' ', absl::SkipEmpty())) {
    if (absl::StartsWith(word, "${") && absl::EndsWith(word, "}")) {
      argv.push_back(env[std::string(word.substr(2, word.size() - 3))]);
    } else if (absl::ConsumePrefix(&word, "$")) {
      for (absl::string_view part :
           absl::StrSplit(env[std::string(word)], absl::ByAnyChar(" \t"), absl::SkipEmpty())) {
        argv.emplace_back(part);
      }
    } else {
      argv.emplace_back(word);
    }
  }
  return argv;
}

class InstallSmokeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* bin_dir = std::getenv("FTUNE_BIN_DIR");
    ASSERT_NE(bin_dir, nullptr) << "FTUNE_BIN_DIR is set by ctest";
    build_dir_ = new std::string(fs::path(bin_dir).parent_path().string());
    prefix_ = new std::string(MakeTempDir("install-prefix"));
    auto result = RunCommand({FTUNE_CMAKE_COMMAND, "--install", *build_dir_, "--prefix", *prefix_},
                             absl::Seconds(120));
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->exit_code, 0) << result->out;
  }
  static void TearDownTestSuite() {
    std::error_code ignored;  // the prefix holds copies of the binaries: do not leave it
    if (prefix_) fs::remove_all(*prefix_, ignored);
    delete build_dir_;
    delete prefix_;
  }

  static fs::path Prefix(const std::string& rel) { return fs::path(*prefix_) / rel; }

  // Starts `argv` and waits for its "listening on" line; returns the address in *address.
  static void StartServer(const std::vector<std::string>& argv, std::optional<ChildProcess>* child,
                          std::string* address) {
    SCOPED_TRACE(absl::StrJoin(argv, " "));
    auto started = ChildProcess::Start(argv);
    ASSERT_TRUE(started.ok()) << started.status();
    child->emplace(std::move(started).value());
    auto listening = (*child)->WaitForListening(absl::Seconds(60));
    ASSERT_TRUE(listening.ok()) << listening.status();
    *address = *listening;
    auto health = CheckHealth(*address, absl::Seconds(10));
    ASSERT_TRUE(health.ok()) << health.status();
    EXPECT_EQ(*health, "SERVING");
  }

  static void StopServer(ChildProcess& child) {
    child.Signal(SIGTERM);
    auto code = child.Wait(absl::Seconds(60));
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_EQ(*code, 0);
  }

  static std::string* build_dir_;
  static std::string* prefix_;
};

std::string* InstallSmokeTest::build_dir_ = nullptr;
std::string* InstallSmokeTest::prefix_ = nullptr;

TEST_F(InstallSmokeTest, InstallsBinariesUnitsConfigsAndDocs) {
  for (const char* rel :
       {"bin/ftcontroller", "bin/ftworker", "bin/ftserve", "bin/ftctl",
        "lib/systemd/system/ftcontroller.service", "lib/systemd/system/ftworker@.service",
        "lib/systemd/system/ftserve.service", "lib/sysusers.d/ftune.conf",
        "lib/tmpfiles.d/ftune.conf", "etc/ftune/ftcontroller.env", "etc/ftune/ftworker.env",
        "etc/ftune/ftserve.env", "share/ftune/examples/ftcontroller.env",
        "share/ftune/examples/ftworker.env", "share/ftune/examples/ftserve.env",
        "share/ftune/examples/tokens.example", "share/doc/ftune/deploy.md"}) {
    EXPECT_TRUE(fs::is_regular_file(Prefix(rel))) << rel;
  }
  for (const char* bin : {"ftcontroller", "ftworker", "ftserve", "ftctl"}) {
    const auto perms = fs::status(Prefix(std::string("bin/") + bin)).permissions();
    EXPECT_NE(perms & fs::perms::others_exec, fs::perms::none) << bin;
  }
}

TEST_F(InstallSmokeTest, ReinstallKeepsEditedConfigsAndRefreshesExamples) {
  const fs::path live = Prefix("etc/ftune/ftworker.env");
  const fs::path example = Prefix("share/ftune/examples/ftworker.env");
  { std::ofstream(live, std::ios::app) << "FTWORKER_CONTROLLER=edited.example:7070\n"; }
  { std::ofstream(example, std::ios::trunc) << "stale\n"; }
  auto result = RunCommand({FTUNE_CMAKE_COMMAND, "--install", *build_dir_, "--prefix", *prefix_},
                           absl::Seconds(120));
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->exit_code, 0) << result->out;
  auto live_text = ReadFile(live);
  ASSERT_TRUE(live_text.ok()) << live_text.status();
  EXPECT_TRUE(absl::StrContains(*live_text, "edited.example")) << *live_text;
  auto example_text = ReadFile(example);
  ASSERT_TRUE(example_text.ok()) << example_text.status();
  EXPECT_TRUE(absl::StrContains(*example_text, "FTWORKER_CONTROLLER=")) << *example_text;
  EXPECT_TRUE(absl::StrContains(result->out, "Keeping: ")) << result->out;
}

TEST_F(InstallSmokeTest, InstalledBinariesReportTheirVersion) {
  for (const std::string bin : {"ftcontroller", "ftworker", "ftserve", "ftctl"}) {
    auto result = RunCommand({Prefix("bin/" + bin).string(), "--version"}, absl::Seconds(30));
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->exit_code, 0) << bin;
    EXPECT_TRUE(absl::StartsWith(result->out, bin + " ")) << result->out;
  }
}

TEST_F(InstallSmokeTest, UnitCommandLinesUseTheInstalledBinariesAndConfigs) {
  auto argv = UnitCommandLine(Prefix("lib/systemd/system/ftworker@.service"), "cuda:1", {});
  ASSERT_TRUE(argv.ok()) << argv.status();
  const std::string line = absl::StrJoin(*argv, " ");
  EXPECT_TRUE(absl::StartsWith(line, Prefix("bin/ftworker").string() + " run ")) << line;
  EXPECT_TRUE(absl::StrContains(line, "--devices cuda:1")) << line;
  EXPECT_TRUE(absl::StrContains(line, "--worker-id testhost-cuda:1")) << line;
  // From the installed ftworker.env.
  EXPECT_TRUE(absl::StrContains(line, "--allowed-root /var/lib/ftune/checkpoints")) << line;
}

// The controller, a CPU worker connected to it and ftserve, each as its unit would run it.
TEST_F(InstallSmokeTest, ServersStartedAsTheirUnitsDoAnswerHealthAndStop) {
  const std::string data = MakeTempDir("controller-data");
  const std::string roots = MakeTempDir("worker-roots");
  const fs::path units = Prefix("lib/systemd/system");

  auto controller_argv = UnitCommandLine(
      units / "ftcontroller.service", "",
      {{"FTCONTROLLER_LISTEN", "127.0.0.1:0"}, {"FTCONTROLLER_DATA_DIR", data}});
  ASSERT_TRUE(controller_argv.ok()) << controller_argv.status();
  std::optional<ChildProcess> controller;
  std::string controller_address;
  StartServer(*controller_argv, &controller, &controller_address);
  if (HasFatalFailure()) return;
  EXPECT_TRUE(fs::exists(fs::path(data) / "ftcontroller.db"))
      << "the controller keeps its database in FTCONTROLLER_DATA_DIR";

  auto worker_argv = UnitCommandLine(
      units / "ftworker@.service", "cpu",
      {{"FTWORKER_CONTROLLER", controller_address},
       {"FTWORKER_OPTS", "--listen 127.0.0.1:0 --allowed-root " + roots}});
  ASSERT_TRUE(worker_argv.ok()) << worker_argv.status();
  std::optional<ChildProcess> worker;
  std::string worker_address;
  StartServer(*worker_argv, &worker, &worker_address);
  if (HasFatalFailure()) return;

  const std::string model_dir = MakeTempDir("checkpoints") + "/best";
  fs::create_directories(model_dir);
  auto tiny = model::LoadModel("tiny", {"calm", "angry", "sad"}, /*seed=*/7);
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  ASSERT_TRUE(model::SaveModelFolder(tiny->model, tiny->preprocessor, model_dir).ok());
  auto serve_argv =
      UnitCommandLine(units / "ftserve.service", "",
                      {{"FTSERVE_LISTEN", "127.0.0.1:0"}, {"FTSERVE_MODELS", "--model " + model_dir}});
  ASSERT_TRUE(serve_argv.ok()) << serve_argv.status();
  std::optional<ChildProcess> serve;
  std::string serve_address;
  StartServer(*serve_argv, &serve, &serve_address);
  if (HasFatalFailure()) return;

  StopServer(*serve);
  StopServer(*worker);
  StopServer(*controller);
}

}  // namespace
}  // namespace ftune::testing
