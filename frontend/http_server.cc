#include "frontend/http_server.h"

#include <sys/socket.h>

#include <chrono>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvspan::frontend {
namespace {

// OpenSSL's oldest queued error as text (and the queue emptied), for a start-up message.
std::string TakeOpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no OpenSSL error recorded";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

// A plain httplib::Server, or an SSLServer over the files. The SSL_CTX is set up here
// rather than by SSLServer's path constructor, which ignores a CA file it cannot load
// (mutual TLS would then refuse every client without saying why) and allows TLS 1.1.
absl::StatusOr<std::unique_ptr<httplib::Server>> MakeServer(const ServerTlsFiles& tls) {
  if (tls.cert_file.empty() && tls.key_file.empty() && tls.client_ca_file.empty()) {
    return std::make_unique<httplib::Server>();
  }
  if (tls.cert_file.empty() || tls.key_file.empty()) {
    return absl::InvalidArgumentError("http TLS needs both a certificate and a key file");
  }
  std::string error;
  auto server = std::make_unique<httplib::SSLServer>([&](SSL_CTX& ctx) {
    SSL_CTX_set_options(&ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION |
                                  SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION) != 1) {
      error = absl::StrCat("TLS 1.2 minimum: ", TakeOpenSslError());
      return false;
    }
    if (SSL_CTX_use_certificate_chain_file(&ctx, tls.cert_file.c_str()) != 1) {
      error = absl::StrCat("certificate ", tls.cert_file, ": ", TakeOpenSslError());
      return false;
    }
    if (SSL_CTX_use_PrivateKey_file(&ctx, tls.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(&ctx) != 1) {
      error = absl::StrCat("private key ", tls.key_file, ": ", TakeOpenSslError());
      return false;
    }
    if (!tls.client_ca_file.empty()) {
      STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(tls.client_ca_file.c_str());
      if (SSL_CTX_load_verify_locations(&ctx, tls.client_ca_file.c_str(), nullptr) != 1 || names == nullptr) {
        if (names != nullptr) sk_X509_NAME_pop_free(names, X509_NAME_free);
        error = absl::StrCat("client CA ", tls.client_ca_file, ": ", TakeOpenSslError());
        return false;
      }
      SSL_CTX_set_client_CA_list(&ctx, names);  // takes `names`; tells clients which CA to use
      SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
    return true;
  });
  if (!server->is_valid()) return absl::InvalidArgumentError(absl::StrCat("http TLS: ", error));
  return server;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(const HttpServerOptions& options) {
  const size_t colon = options.listen_address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(options.listen_address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("http listen address '", options.listen_address,
                                                   "' is not host:port"));
  }
  if (options.num_threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("http threads must be >= 1, got ", options.num_threads));
  }
  std::unique_ptr<HttpServer> http(new HttpServer());
  ASSIGN_OR_RETURN(http->server_, MakeServer(options.tls));
  std::string host = options.listen_address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  const int threads = options.num_threads;
  // httplib's default also sets SO_REUSEPORT, with which a second server binds a port in
  // use and silently shares its traffic: SO_REUSEADDR only (a restart may reuse the port).
  http->server_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<char*>(&yes), sizeof(yes));
  });
  // An idle keep-alive connection holds a thread; Stop waits for it at most this long.
  http->server_->set_keep_alive_timeout(1);
  // Bounds each read, and with TLS the handshake too (SSLServer runs SSL_accept with the
  // read timeout, on a handler thread): a client that connects and sends nothing, or
  // stalls mid-handshake, holds a thread and delays Stop by at most this long.
  http->server_->set_read_timeout(5, 0);
  http->server_->set_write_timeout(5, 0);
  http->server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  const bool bound = port == 0 ? (port = http->server_->bind_to_any_port(host)) > 0
                               : http->server_->bind_to_port(host, port);
  if (!bound) return absl::UnavailableError(absl::StrCat("cannot listen (http) on ", options.listen_address));
  if (host == "0.0.0.0" || host == "::") host = "127.0.0.1";
  http->address_ = absl::StrCat(host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host, ":", port);
  return http;
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Get(const std::string& pattern, Handler handler) { server_->Get(pattern, std::move(handler)); }

void HttpServer::Post(const std::string& pattern, Handler handler) { server_->Post(pattern, std::move(handler)); }

void HttpServer::Start() {
  thread_ = std::thread([this] {
    server_->listen_after_bind();
    listen_returned_ = true;
  });
  // httplib's stop() is a no-op until the accept loop runs: wait for it, so Stop never hangs.
  while (!server_->is_running() && !listen_returned_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void HttpServer::Stop() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

}  // namespace kvspan::frontend
