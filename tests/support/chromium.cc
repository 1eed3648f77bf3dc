#include "tests/support/chromium.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

extern char** environ;

namespace ftune::testing {

using nlohmann::json;

absl::StatusOr<std::unique_ptr<Chromium>> Chromium::Start(const std::string& dir) {
  int commands[2], answers[2];
  if (pipe2(commands, O_CLOEXEC) != 0 || pipe2(answers, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  std::vector<std::string> argv = {"/usr/bin/chromium",
                                   "--headless",
                                   "--no-sandbox",
                                   "--disable-gpu",
                                   "--disable-quic",
                                   "--no-first-run",
                                   "--disable-background-networking",
                                   "--disable-component-update",
                                   "--disable-sync",
                                   "--remote-debugging-pipe",
                                   "--user-data-dir=" + dir + "/profile",
                                   "about:blank"};
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // dup2 clears close-on-exec on the copies.
  posix_spawn_file_actions_adddup2(&actions, commands[0], 3);
  posix_spawn_file_actions_adddup2(&actions, answers[1], 4);
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(commands[0]);
  close(answers[1]);
  if (spawned != 0) {
    close(commands[1]);
    close(answers[0]);
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot start /usr/bin/chromium (scripts/setup installs it): ", std::strerror(spawned)));
  }
  std::unique_ptr<Chromium> browser(new Chromium(pid, commands[1], answers[0]));
  const absl::Duration start = absl::Seconds(60);
  auto target = browser->Call("Target.createTarget", {{"url", "about:blank"}}, start, true);
  if (!target.ok()) return target.status();
  auto attached =
      browser->Call("Target.attachToTarget",
                    {{"targetId", (*target)["targetId"]}, {"flatten", true}}, start, true);
  if (!attached.ok()) return attached.status();
  browser->session_ = (*attached)["sessionId"];
  for (const char* domain : {"Page.enable", "Runtime.enable"}) {
    if (auto enabled = browser->Call(domain, json::object(), start); !enabled.ok()) {
      return enabled.status();
    }
  }
  return browser;
}

Chromium::~Chromium() {
  (void)Call("Browser.close", json::object(), absl::Seconds(5), true);
  close(to_browser_);
  close(from_browser_);
  // Browser.close ends it; a browser that hangs is killed rather than waited for.
  const int exited = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
  pollfd fd{exited, POLLIN, 0};
  if (exited < 0 || poll(&fd, 1, 10000) <= 0) kill(pid_, SIGKILL);
  if (exited >= 0) close(exited);
  waitpid(pid_, nullptr, 0);
}

absl::StatusOr<json> Chromium::Call(const std::string& method, json params, absl::Duration timeout,
                                    bool browser) {
  const int id = next_id_++;
  json message = {{"id", id}, {"method", method}, {"params", std::move(params)}};
  if (!browser) message["sessionId"] = session_;
  const std::string text = message.dump() + '\0';
  for (size_t sent = 0; sent < text.size();) {
    const ssize_t n = write(to_browser_, text.data() + sent, text.size() - sent);
    if (n <= 0) return absl::UnavailableError(absl::StrCat(method, ": the browser went away"));
    sent += static_cast<size_t>(n);
  }
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    // Answers and events arrive in any order; events are not needed here.
    for (size_t end = buffer_.find('\0'); end != std::string::npos; end = buffer_.find('\0')) {
      json reply = json::parse(buffer_.substr(0, end), nullptr, false);
      buffer_.erase(0, end + 1);
      if (!reply.is_object() || reply.value("id", -1) != id) continue;
      if (reply.contains("error")) {
        return absl::InternalError(absl::StrCat(method, ": ", reply["error"].dump()));
      }
      return reply["result"];
    }
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0) return absl::DeadlineExceededError(absl::StrCat(method, ": no answer"));
    pollfd fd{from_browser_, POLLIN, 0};
    if (poll(&fd, 1, static_cast<int>(left)) <= 0) continue;
    char chunk[65536];
    const ssize_t n = read(from_browser_, chunk, sizeof(chunk));
    if (n <= 0) return absl::UnavailableError(absl::StrCat(method, ": the browser went away"));
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

absl::StatusOr<json> Chromium::Evaluate(const std::string& expression, absl::Duration timeout) {
  auto result = Call("Runtime.evaluate",
                     {{"expression", expression},
                      {"returnByValue", true},
                      {"awaitPromise", true},
                      {"timeout", absl::ToInt64Milliseconds(timeout)}},
                     timeout + absl::Seconds(5));
  if (!result.ok()) return result.status();
  if (result->contains("exceptionDetails")) {
    return absl::InternalError(
        absl::StrCat("script failed: ", expression, ": ", (*result)["exceptionDetails"].dump()));
  }
  return (*result)["result"].value("value", json());
}

absl::Status Chromium::WaitFor(const std::string& condition, absl::Duration timeout,
                               const std::string& describe) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    const int64_t ms = std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now()));
    // The page polls itself and answers once: no sleeping here, one round trip.
    const std::string script =
        absl::StrCat("new Promise((resolve) => { const end = Date.now() + ", ms,
                     "; const check = () => { "
                     "let ok = false; try { ok = !!(",
                     condition,
                     "); } catch (e) {} "
                     "if (ok) resolve(true); else if (Date.now() > end) resolve(false); "
                     "else setTimeout(check, 20); }; check(); })");
    auto done = Evaluate(script, absl::Milliseconds(ms) + absl::Seconds(5));
    // A navigation (a form sent, a reload) ends the document the promise ran in: ask the
    // new one.
    if (!done.ok() && absl::StrContains(done.status().message(), "navigated") &&
        absl::Now() < deadline) {
      continue;
    }
    if (!done.ok()) return done.status();
    if (*done == true) return absl::OkStatus();
    auto state = Evaluate(describe, absl::Seconds(10));
    return absl::DeadlineExceededError(absl::StrCat("waited ", absl::FormatDuration(timeout),
                                                    " for ", condition,
                                                    "; page: ", state.ok() ? state->dump() : "?"));
  }
}

absl::Status Chromium::Navigate(const std::string& url, absl::Duration timeout) {
  auto navigated = Call("Page.navigate", {{"url", url}}, timeout);
  if (!navigated.ok()) return navigated.status();
  if (navigated->contains("errorText")) {
    return absl::UnavailableError(absl::StrCat(url, ": ", (*navigated)["errorText"].dump()));
  }
  return WaitFor(absl::StrCat("location.href === ", json(url).dump(),
                              " && document.readyState === 'complete'"),
                 timeout, "location.href + ' ' + document.readyState");
}

absl::Status Chromium::Reload(absl::Duration timeout) {
  // A marker the old document has and the new one has not.
  auto marked = Evaluate("window.__beforeReload = true");
  if (!marked.ok()) return marked.status();
  auto reloaded = Call("Page.reload", json::object(), timeout);
  if (!reloaded.ok()) return reloaded.status();
  return WaitFor("!window.__beforeReload && document.readyState === 'complete'", timeout);
}

absl::Status Chromium::Screenshot(const std::string& path, int width, int height) {
  auto sized =
      Call("Emulation.setDeviceMetricsOverride",
           {{"width", width}, {"height", height}, {"deviceScaleFactor", 1}, {"mobile", false}},
           absl::Seconds(10));
  if (!sized.ok()) return sized.status();
  auto shot = Call("Page.captureScreenshot", {{"format", "png"}}, absl::Seconds(30));
  if (!shot.ok()) return shot.status();
  std::string png;
  if (!absl::Base64Unescape((*shot)["data"].get<std::string>(), &png)) {
    return absl::InternalError("the screenshot is not base64");
  }
  std::ofstream(path, std::ios::binary) << png;
  return absl::OkStatus();
}

}  // namespace ftune::testing
