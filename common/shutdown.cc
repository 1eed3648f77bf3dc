#include "common/shutdown.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>

namespace ftune {
namespace {

int g_pipe[2] = {-1, -1};
std::atomic<bool> g_requested{false};

void OnSignal(int signo) {
  g_requested.store(true);
  const unsigned char byte = static_cast<unsigned char>(signo);
  // write() is async-signal-safe; a full pipe already holds a wake-up.
  [[maybe_unused]] ssize_t n = write(g_pipe[1], &byte, 1);
}

}  // namespace

void InstallShutdownHandlers() {
  if (g_pipe[0] < 0) {
    if (pipe(g_pipe) != 0) return;
    fcntl(g_pipe[1], F_SETFL, O_NONBLOCK);
    fcntl(g_pipe[0], F_SETFD, FD_CLOEXEC);
    fcntl(g_pipe[1], F_SETFD, FD_CLOEXEC);
  }
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

int WaitForShutdown() {
  unsigned char byte = 0;
  for (;;) {
    const ssize_t n = read(g_pipe[0], &byte, 1);
    if (n == 1) return byte;
    if (n < 0 && errno == EINTR) continue;
    return 0;
  }
}

bool ShutdownRequested() { return g_requested.load(); }

void RequestShutdown() { OnSignal(0); }

}  // namespace ftune
