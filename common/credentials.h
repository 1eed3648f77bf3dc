// TLS and bearer-token plumbing shared by every ftune server and client.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace ftune {

struct TlsOptions {
  // Server: its own certificate chain and key. Client: its client certificate (for mTLS).
  std::string cert_file;
  std::string key_file;
  // Server: CA that signs client certificates; when set, clients must present one (mTLS).
  // Client: CA that signs the server's certificate (empty = the system roots).
  std::string ca_file;

  // True when a certificate or a CA is configured.
  bool enabled() const { return !cert_file.empty() || !key_file.empty() || !ca_file.empty(); }
};

// A server's TLS files, read.
struct ServerTlsPem {
  std::string cert;
  std::string key;
  std::string client_ca;  // empty: no client certificates asked for
};

// Reads a server's TLS files: it needs both cert_file and key_file (ca_file alone is an
// error); errors name the file.
absl::StatusOr<ServerTlsPem> ReadServerTls(const TlsOptions& options);

// A server reachable beyond this machine must know who calls it. Fails, naming `flag` and the
// flags that fix it, when `listen` is not a loopback address (127.0.0.0/8, ::1, localhost) and
// calls are neither checked against bearer tokens nor need a client certificate (mTLS), unless
// `allow_insecure`. The error names the server's own flags for tokens and the client CA.
absl::Status CheckExposure(const std::string& flag, const std::string& listen, bool has_tokens,
                           const TlsOptions& tls, bool allow_insecure,
                           const std::string& tokens_flag = "--tokens",
                           const std::string& client_ca_flag = "--tls-client-ca");

// TLS server credentials from PEM files, or insecure credentials when !options.enabled().
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& options);

struct ChannelOptions {
  // host:port of the server.
  std::string address;
  // Use TLS; tls_files.ca_file verifies the server, cert/key present a client certificate.
  bool tls = false;
  TlsOptions tls_files;
  // Name expected in the server certificate when it differs from the address' host.
  std::string tls_server_name;
  // File whose first non-empty line is the bearer token sent on every call; empty = none.
  std::string token_file;
  // Largest message sent or received.
  int max_message_bytes = 64 << 20;
};

// ChannelOptions from the connection flags ftctl and ftworker share (--tls, --tls-ca,
// --tls-cert, --tls-key, --token-file): TLS is on when asked for or when any TLS file is given.
ChannelOptions ClientChannelOptions(const std::string& address, bool tls,
                                    const std::string& ca_file, const std::string& cert_file,
                                    const std::string& key_file, const std::string& token_file);

// A channel to options.address carrying TLS and the bearer token as configured. Fails when a
// file named in the options cannot be read or is empty.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& options);

// The first non-empty line of a token file, trimmed.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// The whole content of a PEM (or any text) file; NotFound / InvalidArgument name the file.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& what);

}  // namespace ftune
