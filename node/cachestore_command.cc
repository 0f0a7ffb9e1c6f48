// `kvspan cachestore --data DIR --listen ADDR`: serves one cache store over gRPC
// (kvspan.v1.CacheStore, grpc.health.v1, server reflection) until SIGINT or SIGTERM.
// Prints "kvspan cachestore: serving DIR on HOST:PORT" on stdout once it accepts calls
// (with --listen HOST:0 that line names the port picked).
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include "cachestore/server.h"
#include "cachestore/store.h"
#include "common/flags.h"
#include "common/logging.h"
#include "frontend/tls.h"
#include "node/commands.h"

namespace kvspan::node {

int RunCachestore(int argc, const char* const* argv) {
  std::string data_dir;
  std::string listen = "0.0.0.0:7410";
  int64_t memory_budget_mib = 1024;
  int64_t disk_budget_gib = 64;
  int64_t max_value_mib = 64;
  int64_t get_chunk_kib = 1024;
  bool sync = false;
  FlagSet flags("kvspan cachestore", "Serves the compressed-span cache store over gRPC.");
  flags.Add("data", &data_dir, "directory of the store's RocksDB database (required)");
  flags.Add("listen", &listen, "host:port to serve on (port 0 picks a free one)");
  flags.Add("memory-budget-mib", &memory_budget_mib, "byte budget of the in-memory tier, MiB");
  flags.Add("disk-budget-gib", &disk_budget_gib, "byte budget of the disk tier, GiB");
  flags.Add("max-value-mib", &max_value_mib, "largest value accepted, MiB");
  flags.Add("get-chunk-kib", &get_chunk_kib, "payload bytes per Get response chunk, KiB");
  flags.Add("sync", &sync, "fsync the WAL before acknowledging writes (power-loss durability)");
  frontend::ServerTlsFiles tls;
  flags.Add("tls-cert", &tls.cert_file, "PEM certificate chain of the port (with --tls-key: TLS)");
  flags.Add("tls-key", &tls.key_file, "PEM private key of --tls-cert");
  flags.Add("tls-client-ca", &tls.client_ca_file,
            "PEM CA bundle: clients (the roles, with --store-tls-cert) must present a certificate it signed");
  absl::Status parsed = flags.Parse(argc, argv);
  if (flags.help_requested()) {
    std::printf("%s", flags.Usage().c_str());
    return 0;
  }
  if (!parsed.ok() || data_dir.empty()) {
    std::fprintf(stderr, "%s\n\n%s",
                 parsed.ok() ? "--data is required" : std::string(parsed.message()).c_str(),
                 flags.Usage().c_str());
    return 2;
  }

  // Block the stop signals before gRPC starts its threads, so that they inherit the mask
  // and only sigwait() below sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  cachestore::StoreOptions store_options;
  store_options.path = data_dir;
  store_options.memory_budget_bytes = memory_budget_mib << 20;
  store_options.disk_budget_bytes = disk_budget_gib << 30;
  store_options.max_value_bytes = max_value_mib << 20;
  store_options.sync = sync;
  absl::StatusOr<std::unique_ptr<cachestore::CacheStore>> store =
      cachestore::CacheStore::Open(store_options);
  if (!store.ok()) {
    LOG(ERROR) << "kvspan cachestore: " << store.status();
    return store.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  cachestore::ServerOptions server_options;
  server_options.listen_address = listen;
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = frontend::MakeServerCredentials(tls);
  if (!credentials.ok()) {
    std::fprintf(stderr, "kvspan cachestore: %s\n", credentials.status().ToString().c_str());
    return credentials.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  server_options.credentials = *std::move(credentials);
  server_options.service.get_chunk_bytes = get_chunk_kib << 10;
  // A Put chunk of the client's default size (1 MiB) and the Get chunk both fit.
  server_options.max_receive_message_bytes =
      std::max(cachestore::kDefaultMaxMessageBytes, server_options.service.get_chunk_bytes + (64 << 10));
  absl::StatusOr<std::unique_ptr<cachestore::CacheServer>> server = cachestore::CacheServer::Start(
      std::shared_ptr<cachestore::CacheStore>(std::move(*store)), server_options);
  if (!server.ok()) {
    LOG(ERROR) << "kvspan cachestore: " << server.status();
    return server.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::printf("kvspan cachestore: serving %s on %s\n", data_dir.c_str(),
              (*server)->address().c_str());
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  LOG(INFO) << "kvspan cachestore: signal " << signal_number << ", shutting down";
  (*server)->Shutdown();
  (*server)->Wait();
  return 0;
}

}  // namespace kvspan::node
