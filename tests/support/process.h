// Starts one of ftune's binaries as a real child process for integration tests: reads its
// stdout line by line (the "listening on HOST:PORT" announcement), signals it and waits for
// its exit status with a deadline — without sleeping.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace ftune::testing {

// build/bin/<name>, from FTUNE_BIN_DIR (set by ctest), else the build this test came from.
std::string BinaryPath(const std::string& name);

// A file of the source tree, e.g. SourcePath("scripts/make-demo-dataset").
inline std::string SourcePath(const std::string& relative) {
  return std::string(FTUNE_TEST_SOURCE_DIR) + "/" + relative;
}

// A fresh empty folder under the test's temporary directory.
std::string MakeTempDir(const std::string& prefix);

class ChildProcess {
 public:
  // Starts `argv` (argv[0] is the program path); stdout is piped to the test, stderr is
  // inherited. `env` entries are added to the environment.
  static absl::StatusOr<ChildProcess> Start(
      const std::vector<std::string>& argv,
      const std::map<std::string, std::string>& env = {});

  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  // Kills (SIGKILL) and reaps a process that is still running.
  ~ChildProcess();

  pid_t pid() const { return pid_; }

  // Next line of stdout without the newline; error at EOF or after `timeout`.
  absl::StatusOr<std::string> ReadLine(absl::Duration timeout);
  // Reads lines until one starts with `prefix` and returns the rest of that line.
  absl::StatusOr<std::string> WaitForLineStartingWith(absl::string_view prefix,
                                                      absl::Duration timeout);
  // Reads lines until one starts with "listening on " and returns the address after it.
  absl::StatusOr<std::string> WaitForListening(absl::Duration timeout) {
    return WaitForLineStartingWith("listening on ", timeout);
  }
  // The same for the HTTP server's "http listening on " (printed after the gRPC line).
  absl::StatusOr<std::string> WaitForHttpListening(absl::Duration timeout) {
    return WaitForLineStartingWith("http listening on ", timeout);
  }
  // Everything left on stdout until EOF (the process closed it or exited).
  absl::StatusOr<std::string> ReadAll(absl::Duration timeout);

  void Signal(int signo);
  // SIGSTOP, then waits until every thread is stopped (kill() only queues the signal; a
  // thread may still finish what it was writing).
  absl::Status Stop(absl::Duration timeout);
  // Waits for exit; returns the exit code, or 128+signal when killed by a signal.
  absl::StatusOr<int> Wait(absl::Duration timeout);

 private:
  ChildProcess(pid_t pid, int stdout_fd, int pid_fd);
  void Reset();

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  int pid_fd_ = -1;
  std::string buffer_;
  std::optional<int> exit_code_;
};

// Runs argv to completion and returns {exit code, stdout}.
struct RunResult {
  int exit_code = -1;
  std::string out;
};
absl::StatusOr<RunResult> RunCommand(const std::vector<std::string>& argv,
                                     absl::Duration timeout,
                                     const std::map<std::string, std::string>& env = {});

}  // namespace ftune::testing
