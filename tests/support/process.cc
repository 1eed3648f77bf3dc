#include "tests/support/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

extern char** environ;

namespace ftune::testing {
namespace {

int PidFdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

// Waits until `fd` is readable or the deadline passes; false on timeout.
bool WaitReadable(int fd, absl::Time deadline) {
  for (;;) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    pollfd p{fd, POLLIN, 0};
    const int n = poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

}  // namespace

std::string BinaryPath(const std::string& name) {
  const char* dir = std::getenv("FTUNE_BIN_DIR");
  return absl::StrCat(dir ? dir : FTUNE_TEST_BIN_DIR, "/", name);
}

std::string MakeTempDir(const std::string& prefix) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::filesystem::path root = base ? base : std::filesystem::temp_directory_path();
  std::random_device rd;
  for (;;) {
    std::filesystem::path dir = root / absl::StrCat(prefix, "-", getpid(), "-", rd());
    if (std::filesystem::create_directories(dir)) return dir.string();
  }
}

absl::StatusOr<ChildProcess> ChildProcess::Start(
    const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);

  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string key = entry.substr(0, entry.find('='));
    if (env.count(key) == 0) env_strings.push_back(entry);
  }
  for (const auto& [key, value] : env) env_strings.push_back(absl::StrCat(key, "=", value));
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> argp;
  for (std::string& s : args) argp.push_back(s.data());
  argp.push_back(nullptr);

  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argp[0], &actions, nullptr, argp.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (rc != 0) {
    close(out[0]);
    return absl::NotFoundError(absl::StrCat("cannot start ", argv[0], ": ", strerror(rc)));
  }
  const int pid_fd = PidFdOpen(pid);
  if (pid_fd < 0) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    close(out[0]);
    return absl::InternalError("pidfd_open failed");
  }
  return ChildProcess(pid, out[0], pid_fd);
}

ChildProcess::ChildProcess(pid_t pid, int stdout_fd, int pid_fd)
    : pid_(pid), stdout_fd_(stdout_fd), pid_fd_(pid_fd) {}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept { *this = std::move(other); }

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    Reset();
    pid_ = other.pid_;
    stdout_fd_ = other.stdout_fd_;
    pid_fd_ = other.pid_fd_;
    buffer_ = std::move(other.buffer_);
    exit_code_ = other.exit_code_;
    other.pid_ = -1;
    other.stdout_fd_ = -1;
    other.pid_fd_ = -1;
  }
  return *this;
}

ChildProcess::~ChildProcess() { Reset(); }

void ChildProcess::Reset() {
  if (pid_ > 0 && !exit_code_.has_value()) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (stdout_fd_ >= 0) close(stdout_fd_);
  if (pid_fd_ >= 0) close(pid_fd_);
  pid_ = -1;
  stdout_fd_ = -1;
  pid_fd_ = -1;
}

absl::StatusOr<std::string> ChildProcess::ReadLine(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    const size_t newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      return line;
    }
    if (!WaitReadable(stdout_fd_, deadline)) {
      return absl::DeadlineExceededError("no line on stdout before the deadline");
    }
    char chunk[4096];
    const ssize_t n = read(stdout_fd_, chunk, sizeof chunk);
    if (n == 0) return absl::OutOfRangeError("stdout closed");
    if (n < 0 && errno != EINTR) return absl::InternalError(strerror(errno));
    if (n > 0) buffer_.append(chunk, static_cast<size_t>(n));
  }
}

absl::StatusOr<std::string> ChildProcess::WaitForLineStartingWith(absl::string_view prefix,
                                                                  absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    absl::StatusOr<std::string> line = ReadLine(deadline - absl::Now());
    if (!line.ok()) return line.status();
    if (absl::StartsWith(*line, prefix)) return line->substr(prefix.size());
  }
}

absl::StatusOr<std::string> ChildProcess::ReadAll(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (!WaitReadable(stdout_fd_, deadline)) {
      return absl::DeadlineExceededError("stdout still open at the deadline");
    }
    char chunk[4096];
    const ssize_t n = read(stdout_fd_, chunk, sizeof chunk);
    if (n == 0) break;
    if (n < 0 && errno != EINTR) return absl::InternalError(strerror(errno));
    if (n > 0) buffer_.append(chunk, static_cast<size_t>(n));
  }
  std::string all = std::move(buffer_);
  buffer_.clear();
  return all;
}

void ChildProcess::Signal(int signo) {
  if (pid_ > 0 && !exit_code_.has_value()) kill(pid_, signo);
}

absl::Status ChildProcess::Stop(absl::Duration timeout) {
  Signal(SIGSTOP);
  const absl::Time deadline = absl::Now() + timeout;
  const std::string tasks = absl::StrCat("/proc/", pid_, "/task");
  while (true) {
    bool all_stopped = true;
    std::error_code error;
    for (const auto& task : std::filesystem::directory_iterator(tasks, error)) {
      std::ifstream stat(task.path() / "stat");
      std::string line;
      std::getline(stat, line);
      // "pid (comm) S ...": the state follows the last ')'.
      const size_t paren = line.rfind(')');
      const char state =
          paren == std::string::npos || paren + 2 >= line.size() ? '?' : line[paren + 2];
      if (state != 'T' && state != 't') {
        all_stopped = false;
        break;
      }
    }
    if (error) return absl::InternalError(absl::StrCat("cannot read ", tasks));
    if (all_stopped) return absl::OkStatus();
    if (absl::Now() >= deadline) return absl::DeadlineExceededError("threads still running");
    absl::SleepFor(absl::Milliseconds(1));  // polling /proc: there is no stop notification
  }
}

absl::StatusOr<int> ChildProcess::Wait(absl::Duration timeout) {
  if (exit_code_.has_value()) return *exit_code_;
  if (!WaitReadable(pid_fd_, absl::Now() + timeout)) {
    return absl::DeadlineExceededError("process still running at the deadline");
  }
  int status = 0;
  if (waitpid(pid_, &status, 0) != pid_) return absl::InternalError("waitpid failed");
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return *exit_code_;
}

absl::StatusOr<RunResult> RunCommand(const std::vector<std::string>& argv,
                                     absl::Duration timeout,
                                     const std::map<std::string, std::string>& env) {
  absl::StatusOr<ChildProcess> child = ChildProcess::Start(argv, env);
  if (!child.ok()) return child.status();
  const absl::Time deadline = absl::Now() + timeout;
  RunResult result;
  absl::StatusOr<std::string> out = child->ReadAll(timeout);
  if (!out.ok()) return out.status();
  result.out = std::move(*out);
  absl::StatusOr<int> code = child->Wait(deadline - absl::Now());
  if (!code.ok()) return code.status();
  result.exit_code = *code;
  return result;
}

}  // namespace ftune::testing
