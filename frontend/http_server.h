// HttpServer: the node's HTTP listener (cpp-httplib, Debian's libcpp-httplib-dev), where
// `kvspan serve --http-listen` serves GET /metrics and GET /health. Routes are registered
// between Create and Start, so that more endpoints (the OpenAI-compatible /v1/... of
// issue 11) are added by whoever owns them without touching this class; a handler gets
// httplib's Request and Response, which also carry chunked (server-sent event) replies.
// With TLS files (the node's --tls-cert / --tls-key / --tls-client-ca, the same as its
// gRPC port) it serves HTTPS only, over httplib::SSLServer; the routes are the same.
//
// NOTE: Debian's libcpp-httplib is compiled with CPPHTTPLIB_OPENSSL_SUPPORT (and zlib,
// Brotli); its pkg-config Cflags define them, so every translation unit that includes
// httplib.h must link PkgConfig::HTTPLIB (or kvspan::frontend), or its httplib classes'
// layouts differ from the library's (an ODR violation).
//
// Thread-safe after Start: handlers run concurrently on the server's own threads
// (options.num_threads), never on the caller's; Stop may be called from any thread.
#ifndef KVSPAN_FRONTEND_HTTP_SERVER_H_
#define KVSPAN_FRONTEND_HTTP_SERVER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <httplib.h>

#include "absl/status/statusor.h"
#include "frontend/tls.h"

namespace kvspan::frontend {

struct HttpServerOptions {
  // host:port to listen on; port 0 picks a free one.
  std::string listen_address = "127.0.0.1:0";
  // Threads that run handlers (one connection each at a time).
  int num_threads = 4;
  // PEM files; all empty = plain HTTP. cert_file + key_file = HTTPS only (a plaintext
  // client's connection is closed); client_ca_file too = mutual TLS (a client without a
  // certificate signed by that CA fails its handshake, before any handler runs).
  ServerTlsFiles tls;
};

class HttpServer {
 public:
  // Called for one request on a server thread; fills `response` (status, body, type).
  using Handler = std::function<void(const httplib::Request& request, httplib::Response& response)>;

  // Binds the address (not yet serving). InvalidArgument for an address without :port,
  // num_threads < 1, only one of tls.cert_file / tls.key_file (or client_ca_file alone), or
  // TLS files OpenSSL cannot load (unreadable, not PEM, key not the certificate's);
  // Unavailable when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Create(const HttpServerOptions& options);
  // Stop()s.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Registers a handler for an exact path (or a regular expression, as httplib matches).
  // REQUIRES: before Start.
  void Get(const std::string& pattern, Handler handler);
  void Post(const std::string& pattern, Handler handler);

  // Starts serving on a thread of its own; returns once the listener accepts.
  // REQUIRES: called once.
  void Start();
  // Stops accepting, lets handlers that run finish, joins the threads. Idempotent.
  void Stop();

  // "host:port" clients can dial (0.0.0.0 reported as 127.0.0.1).
  const std::string& address() const { return address_; }

 private:
  HttpServer() = default;

  // An httplib::SSLServer when options.tls is set. Never null after Create.
  std::unique_ptr<httplib::Server> server_;
  std::string address_;
  std::atomic<bool> listen_returned_{false};
  std::thread thread_;
};

}  // namespace kvspan::frontend

#endif  // KVSPAN_FRONTEND_HTTP_SERVER_H_
