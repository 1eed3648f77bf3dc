// Graceful shutdown on SIGTERM / SIGINT: the handler only records the signal; a waiting
// thread learns of it through a self-pipe, so nothing unsafe runs in signal context.
#pragma once

namespace ftune {

// Installs the handlers. Call once, early in main, before starting threads.
void InstallShutdownHandlers();

// Blocks until SIGTERM or SIGINT arrives (or RequestShutdown is called); returns the signal
// number (0 for RequestShutdown).
int WaitForShutdown();

// True once a shutdown signal arrived.
bool ShutdownRequested();

// Wakes WaitForShutdown from inside the process (tests, fatal errors).
void RequestShutdown();

}  // namespace ftune
