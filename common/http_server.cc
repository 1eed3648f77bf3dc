#include "common/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <regex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/listen_address.h"
#include "common/metrics.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace ftune {

struct HttpServer::CompiledRoute {
  HttpRoute route;
  std::regex pattern;
};

namespace {

// How far past the limit a body is still read (and dropped) before the 413 goes out: a client
// still sending when the server closes gets a reset, and often never reads the answer.
constexpr int64_t kLingerBytes = 1 << 20;

// A request carries a body only with Content-Length or chunked encoding (RFC 9112 6.3);
// httplib would otherwise read until the client closes the connection.
bool HasBody(const httplib::Request& raw) {
  return raw.has_header("Content-Length") ||
         absl::StrContains(absl::AsciiStrToLower(raw.get_header_value("Transfer-Encoding")),
                           "chunked");
}

// Reads the whole body (or its multipart parts) into `request`, up to `limit` bytes. Returns
// OK, or the error to answer: 413 past the limit, 400 for a malformed body.
absl::Status ReadBody(const httplib::Request& raw, httplib::Response& raw_response,
                      const httplib::ContentReader& reader, int64_t limit, HttpRequest* request) {
  if (!HasBody(raw)) return absl::OkStatus();
  int64_t received = 0;
  bool too_large = false;
  // False once past the limit plus the lingering allowance; past the limit the data is
  // dropped.
  auto count = [&](size_t n) {
    received += static_cast<int64_t>(n);
    too_large = too_large || received > limit;
    return received <= limit + kLingerBytes;
  };
  bool ok;
  if (raw.is_multipart_form_data()) {
    ok = reader(
        [&](const httplib::MultipartFormData& header) {
          if (!too_large) request->parts.push_back({header.name, header.filename, header.content_type, ""});
          return true;
        },
        [&](const char* data, size_t n) {
          if (!count(n)) return false;
          if (too_large) return true;
          if (request->parts.empty()) return false;
          request->parts.back().content.append(data, n);
          return true;
        });
  } else {
    ok = reader([&](const char* data, size_t n) {
      if (!count(n)) return false;
      if (!too_large) request->body.append(data, n);
      return true;
    });
  }
  // httplib itself answers 413 when Content-Length already says too much; a chunked body
  // is counted here.
  if (too_large || raw_response.status == 413) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the request body is larger than ", limit, " bytes"));
  }
  if (!ok) return absl::InvalidArgumentError("the request body could not be read");
  return absl::OkStatus();
}

// Reads and drops a body that will not be used, so the connection stays in step.
void DiscardBody(const httplib::Request& raw, const httplib::ContentReader* reader) {
  if (reader == nullptr || !HasBody(raw)) return;
  auto drop = [](const char*, size_t) { return true; };
  if (raw.is_multipart_form_data()) {
    (*reader)([](const httplib::MultipartFormData&) { return true; }, drop);
  } else {
    (*reader)(drop);
  }
}

void WriteResponse(const HttpResponse& response, httplib::Response& raw) {
  raw.status = response.status;
  for (const auto& [name, value] : response.headers) raw.set_header(name, value);
  raw.set_content(response.body, response.content_type.c_str());
}

// Messages for the errors httplib answers before a handler runs.
std::string ReasonFor(int status) {
  switch (status) {
    case 400:
      return "malformed HTTP request";
    case 413:
      return "the request body is too large";
    case 414:
      return "the request URI is too long";
    case 416:
      return "unsatisfiable range";
    default:
      return absl::StrCat("HTTP error ", status);
  }
}

std::string StripBrackets(const std::string& host) {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    return host.substr(1, host.size() - 2);
  }
  return host;
}

std::pair<time_t, time_t> SecondsAndMicros(absl::Duration d) {
  const int64_t micros = absl::ToInt64Microseconds(d);
  return {static_cast<time_t>(micros / 1'000'000), static_cast<time_t>(micros % 1'000'000)};
}

}  // namespace

const std::string* HttpRequest::Header(absl::string_view name) const {
  auto it = headers.find(absl::AsciiStrToLower(name));
  return it == headers.end() ? nullptr : &it->second;
}

std::string HttpRequest::Cookie(absl::string_view name) const {
  auto [begin, end] = headers.equal_range("cookie");
  for (auto it = begin; it != end; ++it) {
    for (absl::string_view pair : absl::StrSplit(it->second, ';')) {
      pair = absl::StripAsciiWhitespace(pair);
      const size_t eq = pair.find('=');
      if (eq != absl::string_view::npos && pair.substr(0, eq) == name) {
        return std::string(pair.substr(eq + 1));
      }
    }
  }
  return "";
}

std::string HttpRequest::FormValue(absl::string_view name) const {
  httplib::Params params;
  httplib::detail::parse_query_text(body, params);
  auto it = params.find(std::string(name));
  return it == params.end() ? "" : it->second;
}

std::string HttpRequest::MediaType() const {
  const std::string* value = Header("content-type");
  if (value == nullptr) return "";
  const absl::string_view type = absl::string_view(*value).substr(0, value->find(';'));
  return absl::AsciiStrToLower(absl::StripAsciiWhitespace(type));
}

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

HttpResponse ErrorResponse(int http_status, absl::string_view message) {
  HttpResponse response;
  response.status = http_status;
  response.body = nlohmann::json{{"error", std::string(message)}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (http_status == 401) response.headers.emplace_back("WWW-Authenticate", "Bearer");
  return response;
}

HttpResponse ErrorResponse(const absl::Status& status) {
  return ErrorResponse(HttpStatusFor(status.code()), status.message());
}

HttpResponse JsonResponse(std::string json, int http_status) {
  HttpResponse response;
  response.status = http_status;
  response.body = std::move(json);
  return response;
}

HttpRoute MetricsRoute(std::function<std::string()> render) {
  return {"GET", "/metrics", Scope::kClient, [render = std::move(render)](const HttpRequest&) {
            HttpResponse response;
            response.content_type = kPrometheusContentType;
            response.body = render();
            return response;
          }};
}

void AnnounceHttpListening(const HttpServer& server) {
  std::printf("http listening on %s\n", server.address().c_str());
  std::fflush(stdout);
}

// --- HttpServer ---

HttpServer::HttpServer(const HttpServerOptions& options, std::unique_ptr<httplib::Server> server,
                       std::vector<CompiledRoute> routes, bool tls)
    : options_(options),
      server_(std::move(server)),
      routes_(std::move(routes)),
      authorizer_(options.tokens),
      tls_(tls) {}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options,
                                                              std::vector<HttpRoute> routes) {
  std::string host;
  int requested_port = 0;
  RETURN_IF_ERROR(SplitHostPort(options.listen, &host, &requested_port));
  if (options.threads < 1) return absl::InvalidArgumentError("HTTP threads must be >= 1");

  std::vector<CompiledRoute> compiled;
  for (HttpRoute& route : routes) {
    try {
      std::regex pattern(route.pattern);
      compiled.push_back({std::move(route), std::move(pattern)});
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("HTTP route pattern '", route.pattern, "': ", e.what()));
    }
  }

  std::unique_ptr<httplib::Server> raw;
  if (options.tls.enabled()) {
    // Reading the files first gives errors that name them; httplib only says "invalid".
    RETURN_IF_ERROR(ReadServerTls(options.tls).status());
    auto ssl = std::make_unique<httplib::SSLServer>(
        options.tls.cert_file.c_str(), options.tls.key_file.c_str(),
        options.tls.ca_file.empty() ? nullptr : options.tls.ca_file.c_str());
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TLS certificate '", options.tls.cert_file, "' or key '", options.tls.key_file,
          "' (or client CA) cannot be used: not PEM, or the key does not match"));
    }
    raw = std::move(ssl);
  } else {
    raw = std::make_unique<httplib::Server>();
  }

  std::unique_ptr<HttpServer> server(
      new HttpServer(options, std::move(raw), std::move(compiled), options.tls.enabled()));
  server->Install();
  const std::string bind_host = StripBrackets(host);
  int bound_port = requested_port;
  if (requested_port == 0) {
    bound_port = server->server_->bind_to_any_port(bind_host);
  } else if (!server->server_->bind_to_port(bind_host, requested_port)) {
    bound_port = -1;
  }
  if (bound_port <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for HTTP on ", options.listen,
                                               " (address in use or not local?)"));
  }
  // Debian's libcpp-httplib is built with a listen backlog of 5: dozens of clients connecting at
  // once overflow it, and the kernel drops handshakes until some connections are reset before
  // an answer. listen() again on the bound socket raises it (the kernel caps it at somaxconn).
  if (server->listen_socket_ >= 0) ::listen(server->listen_socket_, SOMAXCONN);
  server->port_ = bound_port;
  server->address_ = absl::StrCat(host, ":", bound_port);

  auto exited = std::make_shared<std::atomic<bool>>(false);
  httplib::Server* http = server->server_.get();
  server->listener_ = std::thread([http, exited] {
    http->listen_after_bind();
    exited->store(true);
  });
  // stop() only acts on a running server: wait until the accept loop has begun.
  while (!http->is_running() && !exited->load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (exited->load()) {
    server->listener_.join();
    return absl::UnavailableError(absl::StrCat("HTTP server on ", options.listen, " stopped"));
  }
  return server;
}

void HttpServer::Install() {
  const int threads = options_.threads;
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // A declared length past the limit is refused before reading; one within the lingering
  // allowance is read and dropped by ReadBody, so the client sees the 413.
  server_->set_payload_max_length(static_cast<size_t>(options_.max_body_bytes + kLingerBytes));
  const auto [io_s, io_us] = SecondsAndMicros(options_.io_timeout);
  server_->set_read_timeout(io_s, io_us);
  server_->set_write_timeout(io_s, io_us);
  server_->set_keep_alive_timeout(
      std::max<time_t>(1, static_cast<time_t>(absl::ToInt64Seconds(options_.keep_alive_timeout))));
  server_->set_keep_alive_max_count(1000);
  server_->set_tcp_nodelay(true);
  // httplib's default sets SO_REUSEPORT, which lets a second server bind the same port and
  // silently share its connections; SO_REUSEADDR alone still allows a quick restart.
  server_->set_socket_options([this](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_socket_ = sock;  // the last one tried is the one bound
  });

  auto plain = [this](const httplib::Request& req, httplib::Response& res) {
    Dispatch(req, res, nullptr);
  };
  auto with_body = [this](const httplib::Request& req, httplib::Response& res,
                          const httplib::ContentReader& reader) { Dispatch(req, res, &reader); };
  server_->Get(".*", plain);
  server_->Options(".*", plain);
  server_->Post(".*", with_body);
  server_->Put(".*", with_body);
  server_->Patch(".*", with_body);
  server_->Delete(".*", with_body);
  // Errors httplib answers itself (malformed request line, URI too long, ...) in our format.
  server_->set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      WriteResponse(ErrorResponse(res.status, ReasonFor(res.status)), res);
    }
  });
  server_->set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr error) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        spdlog::error("HTTP {} {}: handler failed: {}", req.method, req.path, what);
        WriteResponse(ErrorResponse(500, "internal error: " + what), res);
      });
  server_->set_logger([](const httplib::Request& req, const httplib::Response& res) {
    spdlog::debug("HTTP {} {} -> {} ({} bytes)", req.method, req.path, res.status, res.body.size());
  });
}

void HttpServer::Dispatch(const httplib::Request& raw, httplib::Response& raw_response,
                          const httplib::ContentReader* reader) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++in_flight_;
  }
  struct Done {
    HttpServer* server;
    ~Done() {
      std::lock_guard<std::mutex> lock(server->mu_);
      if (--server->in_flight_ == 0) server->idle_.notify_all();
    }
  } done{this};

  auto refuse = [&](const HttpResponse& response) {
    DiscardBody(raw, reader);
    WriteResponse(response, raw_response);
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_) return refuse(ErrorResponse(503, "the server is shutting down"));
  }

  // HEAD is GET without the body (httplib drops it).
  const std::string method = raw.method == "HEAD" ? "GET" : raw.method;
  const CompiledRoute* match = nullptr;
  std::smatch groups;
  std::vector<std::string> allowed;
  // The first route whose pattern matches names the resource; only routes with that same
  // pattern may answer other methods (so GET on a POST-only path is 405, not a later
  // catch-all's 404).
  const std::string* resource = nullptr;
  for (const CompiledRoute& route : routes_) {
    if (resource != nullptr && route.route.pattern != *resource) continue;
    if (!std::regex_match(raw.path, groups, route.pattern)) continue;
    resource = &route.route.pattern;
    if (route.route.method == method) {
      match = &route;
      break;
    }
    if (std::find(allowed.begin(), allowed.end(), route.route.method) == allowed.end()) {
      allowed.push_back(route.route.method);
    }
  }
  if (match == nullptr) {
    if (allowed.empty()) return refuse(ErrorResponse(404, "no such endpoint: " + raw.path));
    HttpResponse response =
        ErrorResponse(405, absl::StrCat(raw.method, " is not allowed on ", raw.path, "; use ",
                                        absl::StrJoin(allowed, " or ")));
    response.headers.emplace_back("Allow", absl::StrJoin(allowed, ", "));
    return refuse(response);
  }

  HttpRequest request;
  request.method = method;
  request.path = raw.path;
  for (size_t i = 1; i < groups.size(); ++i) request.path_params.push_back(groups[i].str());
  for (const auto& [name, value] : raw.params) request.query.emplace(name, value);
  for (const auto& [name, value] : raw.headers) {
    request.headers.emplace(absl::AsciiStrToLower(name), value);
  }

  if (absl::Status auth = Authorize(request, match->route.scope); !auth.ok()) {
    if (match->route.page && options_.page_error) {
      return refuse(options_.page_error(request, auth));
    }
    return refuse(ErrorResponse(auth));
  }

  if (reader != nullptr) {
    if (absl::Status read = ReadBody(raw, raw_response, *reader, options_.max_body_bytes, &request);
        !read.ok()) {
      HttpResponse response =
          ErrorResponse(absl::IsResourceExhausted(read) ? 413 : 400, read.message());
      // The rest of an oversized body is not read: end the connection after answering.
      response.headers.emplace_back("Connection", "close");
      return WriteResponse(response, raw_response);
    }
  }
  Respond(match->route.handler(request), raw_response);
}

absl::Status HttpServer::Authorize(const HttpRequest& request, Scope scope) const {
  if (const std::string* header = request.Header("authorization")) {
    return authorizer_.CheckHeader(header, scope);
  }
  const std::string token =
      options_.cookie_name.empty() ? "" : request.Cookie(options_.cookie_name);
  if (token.empty() || !authorizer_.enabled()) return authorizer_.CheckHeader(nullptr, scope);
  if (request.method != "GET" && request.Header("x-requested-with") == nullptr) {
    return absl::PermissionDeniedError(
        "a request authorized by the session cookie must carry an X-Requested-With header");
  }
  const std::string bearer = "Bearer " + token;
  return authorizer_.CheckHeader(&bearer, scope);
}

void HttpServer::Respond(HttpResponse response, httplib::Response& raw) {
  if (response.stream == nullptr) return WriteResponse(response, raw);
  std::shared_ptr<HttpBodyStream> stream = std::move(response.stream);
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int limit = options_.max_streams > 0 ? options_.max_streams : options_.threads / 2;
    if (draining_) return WriteResponse(ErrorResponse(503, "the server is shutting down"), raw);
    if (static_cast<int>(streams_.size()) >= limit) {
      HttpResponse busy = ErrorResponse(
          503, absl::StrCat("too many streams open (at most ", limit, "); retry later"));
      busy.headers.emplace_back("Retry-After", "5");
      return WriteResponse(busy, raw);
    }
    streams_.insert(stream);
  }
  raw.status = response.status;
  for (const auto& [name, value] : response.headers) raw.set_header(name, value);
  raw.set_chunked_content_provider(
      response.content_type,
      // One call for the whole body: httplib calls no provider again once the server stops,
      // which would cut off the closing frame a stream writes when it is cancelled.
      [stream](size_t, httplib::DataSink& sink) {
        for (bool more = true; more;) {
          std::string piece;
          more = stream->Next(&piece);
          if (!piece.empty() && !sink.write(piece.data(), piece.size())) return false;
        }
        sink.done();
        return true;
      },
      [this, stream](bool) {
        std::lock_guard<std::mutex> lock(mu_);
        streams_.erase(stream);
      });
}

int HttpServer::in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_flight_;
}

int HttpServer::streams() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(streams_.size());
}

void HttpServer::Drain(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!draining_) {
    draining_ = true;
    server_->stop();  // closes the listening socket; open connections end after a request
    // Streams would hold their threads (and Stop) until their clients left.
    for (const std::shared_ptr<HttpBodyStream>& stream : streams_) stream->Cancel();
  }
  idle_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this] { return in_flight_ == 0; });
}

void HttpServer::Stop() {
  Drain(absl::ZeroDuration());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  // The accept loop has ended; joining it waits for the pool's connections to finish.
  if (listener_.joinable()) listener_.join();
}

void HttpServer::Shutdown(absl::Duration drain) {
  Drain(drain);
  Stop();
}

HttpServer::~HttpServer() { Stop(); }

}  // namespace ftune
