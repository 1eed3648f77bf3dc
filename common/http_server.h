// The HTTP server of every ftune daemon (ftserve's REST API, everyone's /metrics), on
// cpp-httplib: Debian packages it (libcpp-httplib-dev), it does TLS with OpenSSL and needs
// no event loop of its own. Each connection is served by a thread from a fixed pool, so a
// handler may block (ftserve's wait for the batcher) and a slow client holds one thread, not
// the server.
//
// Routes are plain data: method, a regular expression over the path, the token scope they
// need (the same scopes as gRPC, common/auth.h) and a handler from HttpRequest to
// HttpResponse, so handlers are tested without sockets. The server checks the bearer token
// before it reads a body, answers every error with JSON `{"error": "..."}`, refuses bodies
// over max_body_bytes with 413, and drains on shutdown.
//
// A handler may answer with a stream instead of a body (Server-Sent Events): the body is then
// sent with chunked encoding from the connection's thread until the stream ends, the client
// goes away or the server stops. A stream holds its thread for its whole life, so the server
// admits at most max_streams at once (503 beyond) and keeps the other threads for requests.
//
// Browsers cannot put a bearer token on a page load, so with cookie_name set the server also
// takes the token from that cookie. A request authorized only by the cookie that is not GET
// must carry an X-Requested-With header: a cross-site form cannot add one, and a cross-site
// script cannot without a CORS preflight that the server never grants.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/auth.h"
#include "common/credentials.h"

namespace httplib {
class Server;
struct Request;
struct Response;
class ContentReader;
}  // namespace httplib

namespace ftune {

struct HttpRequest {
  // One part of a multipart/form-data body (`curl -F file=@clip.wav`).
  struct Part {
    std::string name;
    std::string filename;
    std::string content_type;
    std::string content;
  };

  std::string method;
  std::string path;
  // The capture groups of the route's pattern, in order.
  std::vector<std::string> path_params;
  // Query parameters (first value of each).
  std::map<std::string, std::string> query;
  // Header names in lower case.
  std::multimap<std::string, std::string> headers;
  std::string body;
  // Set instead of `body` for multipart/form-data requests.
  std::vector<Part> parts;

  // The first value of header `name` (any case), or nullptr.
  const std::string* Header(absl::string_view name) const;
  // The value of cookie `name`, or "" when absent.
  std::string Cookie(absl::string_view name) const;
  // Field `name` of an application/x-www-form-urlencoded body, decoded; "" when absent.
  std::string FormValue(absl::string_view name) const;
  // The media type of Content-Type in lower case, without parameters; "" when absent.
  std::string MediaType() const;
};

// A response body produced while it is sent (see the top of the file).
class HttpBodyStream {
 public:
  virtual ~HttpBodyStream() = default;
  // Appends what is ready to `out`; true to be called again, false after the last piece. May
  // block until there is something to send, but must return promptly once Cancel was called.
  virtual bool Next(std::string* out) = 0;
  // The server is stopping (called from another thread): Next must end the body soon.
  virtual void Cancel() = 0;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // When set, the body comes from the stream and `body` is ignored.
  std::shared_ptr<HttpBodyStream> stream;
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpRoute {
  std::string method;  // GET or POST
  // ECMAScript regular expression that must match the whole path; its groups become
  // HttpRequest::path_params.
  std::string pattern;
  // Token scope the route needs when the server has tokens (kNone: open, like health).
  Scope scope = Scope::kClient;
  HttpHandler handler;
  // A page for people: a refused token is answered by HttpServerOptions::page_error.
  bool page = false;
};

struct HttpServerOptions {
  // host:port; port 0 picks a free port (see HttpServer::address()).
  std::string listen = "127.0.0.1:0";
  // Serve HTTPS when enabled: the same files as the gRPC server; with ca_file, clients must
  // present a certificate signed by it.
  TlsOptions tls;
  // Bearer tokens (`Authorization: Bearer <token>`); null = no authorization.
  std::shared_ptr<const TokenStore> tokens;
  // Larger request bodies get 413.
  int64_t max_body_bytes = 32 << 20;
  // Connections served at once; more wait for a free thread.
  int threads = 64;
  // A client that sends (or reads) nothing for this long is disconnected.
  absl::Duration io_timeout = absl::Seconds(30);
  // An idle keep-alive connection is closed after this long.
  absl::Duration keep_alive_timeout = absl::Seconds(5);
  // Streamed responses at once; each holds one of `threads`. 0 = threads / 2.
  int max_streams = 0;
  // Also take the bearer token from this cookie (see the top of the file); "" = header only.
  std::string cookie_name;
  // The answer to a page route's request whose token is refused (e.g. a login form); null =
  // the JSON error.
  std::function<HttpResponse(const HttpRequest&, const absl::Status&)> page_error;
};

class HttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options,
                                                           std::vector<HttpRoute> routes);
  // Stop()s.
  ~HttpServer();

  // host:port actually bound.
  const std::string& address() const { return address_; }
  int port() const { return port_; }
  bool tls() const { return tls_; }

  // Stops accepting connections (requests arriving on open ones get 503) and waits until no
  // request is being handled or `timeout` passes.
  void Drain(absl::Duration timeout);
  // Drains with no wait, then waits for the requests still being handled to end and for the
  // server's threads to exit. A handler that blocks must be released first (ftserve shuts
  // its engine down, which answers every queued clip).
  void Stop();
  // Drain(drain), then Stop().
  void Shutdown(absl::Duration drain);

  // Requests being handled now (a stream counts only while its handler runs).
  int in_flight() const;
  // Streamed responses being sent now.
  int streams() const;

 private:
  struct CompiledRoute;

  HttpServer(const HttpServerOptions& options, std::unique_ptr<httplib::Server> server,
             std::vector<CompiledRoute> routes, bool tls);
  void Install();
  // Routes, authorizes, reads the body and runs the handler; `reader` is null for GET.
  void Dispatch(const httplib::Request& request, httplib::Response& response,
                const httplib::ContentReader* reader);
  // The request's bearer token (header, else cookie) against `scope`.
  absl::Status Authorize(const HttpRequest& request, Scope scope) const;
  // Sends `response`, registering its stream; 503 when max_streams are open or draining.
  void Respond(HttpResponse response, httplib::Response& raw);

  const HttpServerOptions options_;
  const std::unique_ptr<httplib::Server> server_;
  const std::vector<CompiledRoute> routes_;
  const Authorizer authorizer_;
  const bool tls_;
  std::string address_;
  int port_ = 0;
  int listen_socket_ = -1;  // set by httplib's socket-options hook before bind
  std::thread listener_;

  mutable std::mutex mu_;
  std::condition_variable idle_;
  bool draining_ = false;
  bool stopped_ = false;
  int in_flight_ = 0;
  std::set<std::shared_ptr<HttpBodyStream>> streams_;
};

// The HTTP status for a canonical code (INVALID_ARGUMENT 400, NOT_FOUND 404,
// RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, ...).
int HttpStatusFor(absl::StatusCode code);

// `{"error": message}` with the status for `status`' code.
HttpResponse ErrorResponse(const absl::Status& status);
HttpResponse ErrorResponse(int http_status, absl::string_view message);
// 200 (or `http_status`) with a JSON body already serialised.
HttpResponse JsonResponse(std::string json, int http_status = 200);

// GET /metrics: `render()` in the Prometheus text format; needs the client scope.
HttpRoute MetricsRoute(std::function<std::string()> render);

// Prints "http listening on HOST:PORT" on stdout (the line scripts and tests wait for).
void AnnounceHttpListening(const HttpServer& server);

}  // namespace ftune
