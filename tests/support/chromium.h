// Debian's headless Chromium driven over the DevTools protocol on a pipe
// (--remote-debugging-pipe: commands go to the browser's fd 3, answers come from its fd 4,
// each a JSON message ended by NUL). A test loads a page, runs script in it and reads the
// live DOM while the page keeps running, so it can watch a page change as events arrive.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace ftune::testing {

class Chromium {
 public:
  // Starts /usr/bin/chromium with a fresh profile under `dir` and opens one blank page.
  static absl::StatusOr<std::unique_ptr<Chromium>> Start(const std::string& dir);
  // Closes the browser (kills it if it does not go) and reaps it.
  ~Chromium();

  // Loads `url` and waits until the document has loaded.
  absl::Status Navigate(const std::string& url, absl::Duration timeout = absl::Seconds(30));
  // Reloads the page, as the browser's reload button does.
  absl::Status Reload(absl::Duration timeout = absl::Seconds(30));
  // The value of `expression` in the page (a promise is awaited), as JSON. Script errors are
  // errors.
  absl::StatusOr<nlohmann::json> Evaluate(const std::string& expression,
                                          absl::Duration timeout = absl::Seconds(30));
  // Re-evaluates `condition` in the page (every 20 ms, in the page) until it is true; an
  // error naming `condition` and the page's `describe` value after `timeout`.
  absl::Status WaitFor(const std::string& condition, absl::Duration timeout,
                       const std::string& describe = "document.body.innerText.slice(0, 400)");
  // The page as PNG (`width` x `height` viewport).
  absl::Status Screenshot(const std::string& path, int width, int height);

 private:
  Chromium(pid_t pid, int to_browser, int from_browser)
      : pid_(pid), to_browser_(to_browser), from_browser_(from_browser) {}
  // Sends a command (to the page's session unless `browser`) and returns its result.
  absl::StatusOr<nlohmann::json> Call(const std::string& method, nlohmann::json params,
                                      absl::Duration timeout, bool browser = false);

  pid_t pid_;
  int to_browser_;
  int from_browser_;
  std::string session_;
  std::string buffer_;
  int next_id_ = 1;
};

}  // namespace ftune::testing
