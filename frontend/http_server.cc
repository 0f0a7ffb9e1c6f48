#include "frontend/http_server.h"

#include <sys/socket.h>

#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kvspan::frontend {

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
  std::string host = options.listen_address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  const int threads = options.num_threads;
  // httplib's default also sets SO_REUSEPORT, with which a second server binds a port in
  // use and silently shares its traffic: SO_REUSEADDR only (a restart may reuse the port).
  http->server_.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<char*>(&yes), sizeof(yes));
  });
  // An idle keep-alive connection holds a thread; Stop waits for it at most this long.
  http->server_.set_keep_alive_timeout(1);
  http->server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  const bool bound = port == 0 ? (port = http->server_.bind_to_any_port(host)) > 0
                               : http->server_.bind_to_port(host, port);
  if (!bound) return absl::UnavailableError(absl::StrCat("cannot listen (http) on ", options.listen_address));
  if (host == "0.0.0.0" || host == "::") host = "127.0.0.1";
  http->address_ = absl::StrCat(host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host, ":", port);
  return http;
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Get(const std::string& pattern, Handler handler) { server_.Get(pattern, std::move(handler)); }

void HttpServer::Post(const std::string& pattern, Handler handler) { server_.Post(pattern, std::move(handler)); }

void HttpServer::Start() {
  thread_ = std::thread([this] {
    server_.listen_after_bind();
    listen_returned_ = true;
  });
  // httplib's stop() is a no-op until the accept loop runs: wait for it, so Stop never hangs.
  while (!server_.is_running() && !listen_returned_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void HttpServer::Stop() {
  if (!thread_.joinable()) return;
  server_.stop();
  thread_.join();
}

}  // namespace kvspan::frontend
