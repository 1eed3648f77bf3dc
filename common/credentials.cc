#include "common/credentials.h"

#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/support/client_interceptor.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/listen_address.h"
#include "common/status_macros.h"

namespace ftune {
namespace {

// Adds `authorization: Bearer <token>` to every call. An interceptor rather than call
// credentials, because gRPC refuses call credentials on an insecure (loopback, test) channel.
class BearerTokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(const std::string* header) : header_(header) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *header_});
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;
};

class BearerTokenInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(std::string token)
      : header_(absl::StrCat("Bearer ", token)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    return new BearerTokenInterceptor(&header_);
  }

 private:
  // Lives as long as the channel, which owns this factory.
  const std::string header_;
};

}  // namespace

absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(what, " '", path, "' cannot be read"));
  std::ostringstream content;
  content << in.rdbuf();
  if (content.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " '", path, "' is empty"));
  }
  return content.str();
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string content, ReadPemFile(path, "token file"));
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (!line.empty()) return std::string(line);
  }
  return absl::InvalidArgumentError(absl::StrCat("token file '", path, "' holds no token"));
}

absl::StatusOr<ServerTlsPem> ReadServerTls(const TlsOptions& options) {
  if (options.cert_file.empty() || options.key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both a certificate (--tls-cert) and its key (--tls-key)");
  }
  ServerTlsPem pem;
  ASSIGN_OR_RETURN(pem.cert, ReadPemFile(options.cert_file, "TLS certificate"));
  ASSIGN_OR_RETURN(pem.key, ReadPemFile(options.key_file, "TLS key"));
  if (!options.ca_file.empty()) {
    ASSIGN_OR_RETURN(pem.client_ca, ReadPemFile(options.ca_file, "TLS client CA"));
  }
  return pem;
}

namespace {

bool IsLoopbackHost(std::string host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  host = absl::AsciiStrToLower(host);
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

}  // namespace

absl::Status CheckExposure(const std::string& flag, const std::string& listen, bool has_tokens,
                           const TlsOptions& tls, bool allow_insecure,
                           const std::string& tokens_flag, const std::string& client_ca_flag) {
  std::string host;
  int port = 0;
  RETURN_IF_ERROR(SplitHostPort(listen, &host, &port));
  if (allow_insecure || has_tokens || !tls.ca_file.empty() || IsLoopbackHost(host)) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      flag, " ", listen,
      " is reachable from other machines, where anyone could call it: give ", tokens_flag,
      " (bearer tokens) or ", client_ca_flag,
      " (mTLS), or --allow-insecure to serve without authentication"));
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& options) {
  if (!options.enabled()) return grpc::InsecureServerCredentials();
  ASSIGN_OR_RETURN(ServerTlsPem pem, ReadServerTls(options));
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  ssl.pem_key_cert_pairs.push_back({pem.key, pem.cert});
  if (!pem.client_ca.empty()) {
    ssl.pem_root_certs = pem.client_ca;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& options) {
  if (options.address.empty()) return absl::InvalidArgumentError("no server address given");
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls || options.tls_files.enabled()) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_files.ca_file.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_root_certs,
                       ReadPemFile(options.tls_files.ca_file, "TLS server CA"));
    }
    if (options.tls_files.cert_file.empty() != options.tls_files.key_file.empty()) {
      return absl::InvalidArgumentError(
          "a client certificate needs both its certificate and its key");
    }
    if (!options.tls_files.cert_file.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_cert_chain,
                       ReadPemFile(options.tls_files.cert_file, "TLS client certificate"));
      ASSIGN_OR_RETURN(ssl.pem_private_key,
                       ReadPemFile(options.tls_files.key_file, "TLS client key"));
    }
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  if (!options.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(options.tls_server_name);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  if (!options.token_file.empty()) {
    ASSIGN_OR_RETURN(std::string token, ReadTokenFile(options.token_file));
    interceptors.push_back(std::make_unique<BearerTokenInterceptorFactory>(std::move(token)));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      options.address, credentials, args, std::move(interceptors));
}

ChannelOptions ClientChannelOptions(const std::string& address, bool tls,
                                    const std::string& ca_file, const std::string& cert_file,
                                    const std::string& key_file, const std::string& token_file) {
  ChannelOptions options;
  options.address = address;
  options.tls_files.ca_file = ca_file;
  options.tls_files.cert_file = cert_file;
  options.tls_files.key_file = key_file;
  options.tls = tls || options.tls_files.enabled();
  options.token_file = token_file;
  return options;
}

}  // namespace ftune
