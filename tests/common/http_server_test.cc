// The shared HTTP server on loopback, driven by cpp-httplib's client and by raw sockets for
// the slow clients: routing, JSON errors, token scopes, body limits, TLS and draining.
#include "common/http_server.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tests/support/pki.h"
#include "tests/support/process.h"

namespace ftune {
namespace {

using nlohmann::json;

HttpRoute EchoRoute() {
  return {
      "POST", "/echo/([a-z]+)", Scope::kClient, [](const HttpRequest& r) {
        json body = {{"param", r.path_params.at(0)},
                     {"body_bytes", r.body.size()},
                     {"media_type", r.MediaType()},
                     {"parts", json::array()}};
        if (auto it = r.query.find("k"); it != r.query.end()) body["k"] = it->second;
        for (const auto& part : r.parts) {
          body["parts"].push_back(
              {{"name", part.name}, {"filename", part.filename}, {"bytes", part.content.size()}});
        }
        return JsonResponse(body.dump());
      }};
}

HttpRoute OpenRoute() {
  return {"GET", "/open", Scope::kNone,
          [](const HttpRequest&) { return JsonResponse(R"({"open":true})"); }};
}

HttpRoute BigRoute(size_t bytes) {
  return {"GET", "/big", Scope::kClient, [bytes](const HttpRequest&) {
            HttpResponse response;
            response.content_type = "application/octet-stream";
            response.body.assign(bytes, 'x');
            return response;
          }};
}

std::unique_ptr<HttpServer> StartServer(HttpServerOptions options, std::vector<HttpRoute> routes) {
  auto server = HttpServer::Start(options, std::move(routes));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

httplib::Client ClientFor(const HttpServer& server) {
  httplib::Client client("127.0.0.1", server.port());
  client.set_read_timeout(20, 0);
  client.set_connection_timeout(5, 0);
  return client;
}

json ErrorOf(const httplib::Result& result) {
  EXPECT_TRUE(result) << httplib::to_string(result.error());
  if (!result) return json();
  EXPECT_EQ(result->get_header_value("Content-Type"), "application/json");
  json body = json::parse(result->body, nullptr, false);
  EXPECT_TRUE(body.contains("error")) << result->body;
  return body;
}

// A raw TCP connection to 127.0.0.1:port, for clients that send or read at their own pace.
class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    timeval tv{20, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~RawConnection() { close(fd_); }
  bool connected() const { return connected_; }
  bool Send(const std::string& data) {
    return send(fd_, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
  }
  // Reads until `end` has arrived, the peer closes or the receive timeout passes.
  std::string ReadUntil(const std::string& end) {
    std::string out;
    char buffer[4096];
    while (out.find(end) == std::string::npos) {
      const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      out.append(buffer, static_cast<size_t>(n));
    }
    return out;
  }
  // Reads until the peer closes (or the receive timeout).
  std::string ReadAll() {
    std::string out;
    char buffer[65536];
    for (;;) {
      const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) return out;
      out.append(buffer, static_cast<size_t>(n));
    }
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

TEST(HttpServerTest, PortZeroIsReportedAndRoutesGetTheirParamsQueryAndBody) {
  auto server = StartServer({}, {EchoRoute()});
  ASSERT_NE(server, nullptr);
  EXPECT_GT(server->port(), 0);
  EXPECT_EQ(server->address(), absl::StrCat("127.0.0.1:", server->port()));
  auto client = ClientFor(*server);
  auto result =
      client.Post("/echo/abc?k=v", std::string(1000, 'b'), "application/json; charset=utf-8");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  json body = json::parse(result->body);
  EXPECT_EQ(body["param"], "abc");
  EXPECT_EQ(body["body_bytes"], 1000);
  EXPECT_EQ(body["media_type"], "application/json");
  EXPECT_EQ(body["k"], "v");
}

TEST(HttpServerTest, MultipartPartsReachTheHandler) {
  auto server = StartServer({}, {EchoRoute()});
  ASSERT_NE(server, nullptr);
  auto client = ClientFor(*server);
  httplib::MultipartFormDataItems items = {
      {"file", std::string(5000, 'a'), "clip.wav", "audio/wav"}};
  auto result = client.Post("/echo/form", items);
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  json body = json::parse(result->body);
  ASSERT_EQ(body["parts"].size(), 1u);
  EXPECT_EQ(body["parts"][0]["name"], "file");
  EXPECT_EQ(body["parts"][0]["filename"], "clip.wav");
  EXPECT_EQ(body["parts"][0]["bytes"], 5000);
}

TEST(HttpServerTest, UnknownPathIs404AndWrongMethodIs405WithAllow) {
  auto server = StartServer({}, {EchoRoute(), OpenRoute()});
  ASSERT_NE(server, nullptr);
  auto client = ClientFor(*server);
  auto missing = client.Get("/nowhere");
  EXPECT_EQ(missing->status, 404);
  EXPECT_THAT(ErrorOf(missing)["error"].get<std::string>(), ::testing::HasSubstr("/nowhere"));
  auto wrong = client.Get("/echo/abc");
  EXPECT_EQ(wrong->status, 405);
  EXPECT_EQ(wrong->get_header_value("Allow"), "POST");
  ErrorOf(wrong);
  // The connection stays usable after a refused body.
  httplib::Client keep("127.0.0.1", server->port());
  keep.set_keep_alive(true);
  EXPECT_EQ(keep.Post("/open", std::string(10000, 'z'), "text/plain")->status, 405);
  EXPECT_EQ(keep.Get("/open")->status, 200);
}

TEST(HttpServerTest, BearerTokensUseTheGrpcScopes) {
  auto tokens = TokenStore::Parse(
      "client client-token-1\nworker worker-token-1\nadmin admin-token-1\n", "test");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  HttpServerOptions options;
  options.tokens = std::move(*tokens);
  auto server = StartServer(options, {EchoRoute(), OpenRoute()});
  ASSERT_NE(server, nullptr);
  auto post = [&](const std::string& authorization) {
    auto client = ClientFor(*server);
    httplib::Headers headers;
    if (!authorization.empty()) headers.emplace("Authorization", authorization);
    return client.Post("/echo/x", headers, "{}", "application/json");
  };
  auto none = post("");
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(none->get_header_value("WWW-Authenticate"), "Bearer");
  ErrorOf(none);
  EXPECT_EQ(post("Bearer wrong-token-1")->status, 401);
  EXPECT_EQ(post("Basic abc")->status, 401);
  EXPECT_EQ(post("Bearer worker-token-1")->status, 403);
  EXPECT_EQ(post("Bearer client-token-1")->status, 200);
  EXPECT_EQ(post("Bearer admin-token-1")->status, 200);
  // Open routes (health) need no token.
  EXPECT_EQ(ClientFor(*server).Get("/open")->status, 200);
}

// The session cookie stands in for the header (pages in a browser); a write it authorizes
// needs X-Requested-With; a page route's refusal is the page_error answer, not JSON.
TEST(HttpServerTest, SessionCookieAndPageErrors) {
  auto tokens = TokenStore::Parse("client client-token-1\n", "test");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  HttpServerOptions options;
  options.tokens = std::move(*tokens);
  options.cookie_name = "session";
  options.page_error = [](const HttpRequest& request, const absl::Status& status) {
    HttpResponse response;
    response.status = HttpStatusFor(status.code());
    response.content_type = "text/html";
    response.body = "<p>log in to see " + request.path;
    return response;
  };
  HttpRoute page{"GET", "/page", Scope::kClient, [](const HttpRequest& request) {
                   HttpResponse response;
                   response.content_type = "text/html";
                   response.body = "hello " + request.Cookie("other");
                   return response;
                 }};
  page.page = true;
  auto server = StartServer(options, {EchoRoute(), page});
  ASSERT_NE(server, nullptr);
  auto client = ClientFor(*server);
  auto refused = client.Get("/page");
  EXPECT_EQ(refused->status, 401);
  EXPECT_EQ(refused->body, "<p>log in to see /page");
  auto shown = client.Get("/page", {{"Cookie", "other=x; session=client-token-1"}});
  EXPECT_EQ(shown->status, 200);
  EXPECT_EQ(shown->body, "hello x");
  EXPECT_EQ(client.Get("/page", {{"Cookie", "session=wrong"}})->status, 401);
  // Routes that are not pages still answer JSON.
  EXPECT_EQ(ErrorOf(client.Post("/echo/x", "{}", "application/json")).size(), 1u);
  auto forged = client.Post("/echo/x", {{"Cookie", "session=client-token-1"}}, "{}",
                            "application/json");
  EXPECT_EQ(forged->status, 403);
  auto scripted = client.Post(
      "/echo/x", {{"Cookie", "session=client-token-1"}, {"X-Requested-With", "test"}}, "{}",
      "application/json");
  EXPECT_EQ(scripted->status, 200);
}

// A body from a stream: pieces as they come, at most max_streams at once, and Stop ends a
// stream that would otherwise wait for ever (its Cancel is called).
class Countdown final : public HttpBodyStream {
 public:
  explicit Countdown(int n, bool block_at_end) : n_(n), block_at_end_(block_at_end) {}
  bool Next(std::string* out) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (n_ > 0) {
      absl::StrAppend(out, "piece ", n_--, "\n");
      return true;
    }
    if (!block_at_end_) return false;
    started_.set_value();
    cv_.wait(lock, [this] { return cancelled_; });
    out->append("cancelled\n");
    return false;
  }
  void Cancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    cv_.notify_all();
  }
  std::future<void> started() { return started_.get_future(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_;
  const bool block_at_end_;
  bool cancelled_ = false;
  std::promise<void> started_;
};

TEST(HttpServerTest, StreamsAreSentBoundedAndCancelledAtStop) {
  HttpServerOptions options;
  options.threads = 4;
  options.max_streams = 1;
  auto blocking = std::make_shared<Countdown>(2, /*block_at_end=*/true);
  std::future<void> started = blocking->started();
  auto server = StartServer(
      options, {{"GET", "/stream/(block|end)", Scope::kClient, [&](const HttpRequest& request) {
                   HttpResponse response;
                   response.content_type = "text/plain";
                   if (request.path_params[0] == "block") {
                     response.stream = blocking;
                   } else {
                     response.stream = std::make_shared<Countdown>(3, false);
                   }
                   return response;
                 }}});
  ASSERT_NE(server, nullptr);
  auto ended = ClientFor(*server).Get("/stream/end");
  ASSERT_TRUE(ended);
  EXPECT_EQ(ended->status, 200);
  EXPECT_EQ(ended->body, "piece 3\npiece 2\npiece 1\n");
  // The server lets go of a stream just after its last byte went out.
  while (server->streams() != 0) std::this_thread::yield();

  std::string body;
  std::thread reader([&] {
    auto result = ClientFor(*server).Get("/stream/block");
    if (result) body = result->body;
  });
  ASSERT_EQ(started.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  auto busy = ClientFor(*server).Get("/stream/end");
  EXPECT_EQ(busy->status, 503);
  EXPECT_EQ(busy->get_header_value("Retry-After"), "5");
  server->Stop();
  reader.join();
  EXPECT_EQ(body, "piece 2\npiece 1\ncancelled\n");
}

TEST(HttpServerTest, BodiesOverTheLimitAre413WithOrWithoutContentLength) {
  HttpServerOptions options;
  options.max_body_bytes = 4096;
  auto server = StartServer(options, {EchoRoute()});
  ASSERT_NE(server, nullptr);
  auto client = ClientFor(*server);
  EXPECT_EQ(client.Post("/echo/ok", std::string(4096, 'a'), "text/plain")->status, 200);
  auto sized = client.Post("/echo/big", std::string(4097, 'a'), "text/plain");
  ASSERT_TRUE(sized);
  EXPECT_EQ(sized->status, 413);
  ErrorOf(sized);
  // Chunked: no Content-Length, so the server counts.
  auto chunked = ClientFor(*server).Post(
      "/echo/chunked",
      [](size_t offset, httplib::DataSink& sink) {
        if (offset >= 20000) {
          sink.done();
          return true;
        }
        const std::string chunk(1000, 'c');
        return sink.write(chunk.data(), chunk.size());
      },
      "text/plain");
  ASSERT_TRUE(chunked) << httplib::to_string(chunked.error());
  EXPECT_EQ(chunked->status, 413);
  ErrorOf(chunked);
}

TEST(HttpServerTest, HandlerExceptionsAre500Json) {
  auto server = StartServer(
      {}, {{"GET", "/throw", Scope::kClient,
            [](const HttpRequest&) -> HttpResponse { throw std::runtime_error("kaputt"); }}});
  ASSERT_NE(server, nullptr);
  auto result = ClientFor(*server).Get("/throw");
  EXPECT_EQ(result->status, 500);
  EXPECT_THAT(ErrorOf(result)["error"].get<std::string>(), ::testing::HasSubstr("kaputt"));
}

TEST(HttpServerTest, MalformedRequestsGetJsonErrors) {
  auto server = StartServer({}, {OpenRoute()});
  ASSERT_NE(server, nullptr);
  RawConnection raw(server->port());
  ASSERT_TRUE(raw.connected());
  ASSERT_TRUE(raw.Send("NONSENSE\r\n\r\n"));
  const std::string reply = raw.ReadUntil("}");
  EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 400")) << reply;
  EXPECT_THAT(reply, ::testing::HasSubstr("{\"error\":"));
}

// One client sends its body slowly, another reads its answer slowly; each holds a thread of
// its own while everybody else is served.
TEST(HttpServerTest, SlowClientsDoNotBlockOthers) {
  constexpr size_t kBig = 8 << 20;
  auto server = StartServer({}, {EchoRoute(), OpenRoute(), BigRoute(kBig)});
  ASSERT_NE(server, nullptr);

  RawConnection slow_sender(server->port());
  ASSERT_TRUE(slow_sender.connected());
  ASSERT_TRUE(
      slow_sender.Send("POST /echo/slow HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                       "Content-Length: 20\r\nConnection: close\r\n\r\n0123456789"));
  RawConnection slow_reader(server->port());
  ASSERT_TRUE(slow_reader.connected());
  ASSERT_TRUE(slow_reader.Send("GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));

  std::vector<std::future<int>> others;
  for (int i = 0; i < 8; ++i) {
    others.push_back(std::async(std::launch::async, [&] {
      auto result = ClientFor(*server).Get("/open");
      return result ? result->status : -1;
    }));
  }
  for (auto& other : others) EXPECT_EQ(other.get(), 200);

  ASSERT_TRUE(slow_sender.Send("abcdefghij"));
  const std::string echoed = slow_sender.ReadAll();
  EXPECT_TRUE(absl::StartsWith(echoed, "HTTP/1.1 200")) << echoed;
  EXPECT_THAT(echoed, ::testing::HasSubstr("\"body_bytes\":20"));
  const std::string big = slow_reader.ReadAll();
  EXPECT_TRUE(absl::StartsWith(big, "HTTP/1.1 200"));
  EXPECT_GE(big.size(), kBig);
}

TEST(HttpServerTest, DrainRefusesNewConnectionsAndLetsRequestsInFlightFinish) {
  std::promise<void> entered;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  auto server =
      StartServer({}, {{"GET", "/wait", Scope::kClient, [&, released](const HttpRequest&) {
                          entered.set_value();
                          released.wait();
                          return JsonResponse(R"({"done":true})");
                        }}});
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  auto in_flight = std::async(std::launch::async, [port] {
    httplib::Client client("127.0.0.1", port);
    client.set_read_timeout(30, 0);
    auto result = client.Get("/wait");
    return result ? result->status : -1;
  });
  entered.get_future().wait();
  EXPECT_EQ(server->in_flight(), 1);

  server->Drain(absl::ZeroDuration());
  httplib::Client late("127.0.0.1", port);
  late.set_connection_timeout(2, 0);
  EXPECT_FALSE(late.Get("/wait")) << "a new connection was accepted while draining";

  release.set_value();
  EXPECT_EQ(in_flight.get(), 200);
  server->Drain(absl::Seconds(30));  // returns once idle
  EXPECT_EQ(server->in_flight(), 0);
  server->Stop();
}

TEST(HttpServerTest, MetricsRouteServesPrometheusText) {
  auto server = StartServer({}, {MetricsRoute([] { return std::string("ftune_up 1\n"); })});
  ASSERT_NE(server, nullptr);
  auto result = ClientFor(*server).Get("/metrics");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->body, "ftune_up 1\n");
  EXPECT_TRUE(
      absl::StartsWith(result->get_header_value("Content-Type"), "text/plain; version=0.0.4"));
}

TEST(HttpServerTest, BadListenAddressesAndTlsFilesAreErrors) {
  HttpServerOptions options;
  options.listen = "no-port";
  EXPECT_EQ(HttpServer::Start(options, {}).status().code(), absl::StatusCode::kInvalidArgument);
  auto first = StartServer({}, {});
  ASSERT_NE(first, nullptr);
  options.listen = first->address();
  EXPECT_EQ(HttpServer::Start(options, {}).status().code(), absl::StatusCode::kUnavailable);
  options.listen = "127.0.0.1:0";
  options.tls.cert_file = "/nonexistent/cert.pem";
  options.tls.key_file = "/nonexistent/key.pem";
  auto tls = HttpServer::Start(options, {});
  EXPECT_EQ(tls.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(tls.status().message()), ::testing::HasSubstr("/nonexistent/cert.pem"));
  options.tls.key_file.clear();
  EXPECT_EQ(HttpServer::Start(options, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(HttpServerTest, HttpsWithClientCertificates) {
  if (access(testing::kOpensslPath, X_OK) != 0) GTEST_SKIP() << "openssl CLI not installed";
  const std::string dir = testing::MakeTempDir("http-tls");
  ASSERT_TRUE(testing::MakeTestPki(dir).ok());
  HttpServerOptions options;
  options.tls = {dir + "/server.pem", dir + "/server.key", dir + "/ca.pem"};
  auto server = StartServer(options, {OpenRoute()});
  ASSERT_NE(server, nullptr);
  EXPECT_TRUE(server->tls());

  httplib::SSLClient mutual("127.0.0.1", server->port(), dir + "/client.pem", dir + "/client.key");
  mutual.set_ca_cert_path((dir + "/ca.pem").c_str());
  mutual.enable_server_certificate_verification(true);
  auto ok = mutual.Get("/open");
  ASSERT_TRUE(ok) << httplib::to_string(ok.error());
  EXPECT_EQ(ok->status, 200);

  httplib::SSLClient no_certificate("127.0.0.1", server->port());
  no_certificate.set_ca_cert_path((dir + "/ca.pem").c_str());
  no_certificate.enable_server_certificate_verification(true);
  auto refused = no_certificate.Get("/open");
  EXPECT_TRUE(!refused || refused->status != 200);

  httplib::Client plaintext("127.0.0.1", server->port());
  plaintext.set_read_timeout(5, 0);
  auto plain = plaintext.Get("/open");
  EXPECT_TRUE(!plain || plain->status != 200);
}

TEST(HttpServerTest, StatusCodesMapToHttp) {
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kPermissionDenied), 403);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInternal), 500);
  const HttpResponse response = ErrorResponse(absl::NotFoundError("no \"model\""));
  EXPECT_EQ(response.status, 404);
  EXPECT_EQ(json::parse(response.body)["error"], "no \"model\"");
}

}  // namespace
}  // namespace ftune
