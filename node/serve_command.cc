// `kvspan serve --model DIR --listen ADDR`: every role in one process (frontend, prefill,
// decode, and an embedded cache store in --data, or --store ADDR for a running
// `kvspan cachestore`). Prints `kvspan serve: listening on HOST:PORT` and then
// `kvspan serve: ready` on stdout. SIGTERM or SIGINT: stop accepting, let in-flight streams
// finish within --grace-ms, exit 0.
#include <signal.h>

#include <cstdio>
#include <string>
#include <vector>

#include "common/api_key_file.h"
#include "common/flags.h"
#include "common/logging.h"
#include "frontend/serving_node.h"
#include "node/commands.h"

namespace kvspan::node {

int RunServe(int argc, const char* const* argv) {
  frontend::ServingNodeOptions o;
  o.listen_address = "0.0.0.0:7400";
  int64_t grace_ms = 10000;
  int64_t store_memory_mib = 256;
  std::string api_key_file;
  FlagSet flags("kvspan serve",
                "Serves the kvspan.v1.Serving gRPC API (Generate, sessions, ServerInfo) with every role in "
                "this process: continuous batching over compressed KV caches, prefix reuse through the "
                "cache store.");
  flags.Add("model", &o.model_dir, "model directory (config.json, *.safetensors, tokenizer.json)");
  flags.Add("listen", &o.listen_address, "host:port to serve on (port 0 picks a free one)");
  flags.Add("http-listen", &o.http_listen_address,
            "host:port of the HTTP listener: GET /metrics (Prometheus), GET /health, the OpenAI-compatible "
            "POST /v1/completions, POST /v1/chat/completions, GET /v1/models; port 0 picks a free one; "
            "empty = no HTTP");
  flags.Add("http-threads", &o.http_threads,
            "HTTP handler threads; each running /v1 call holds one (keep it above the concurrent HTTP calls)");
  flags.Add("chat-template", &o.chat_template,
            "chat template of /v1/chat/completions: llama3, chatml, mistral or plain; empty = recognised from "
            "the model's tokenizer_config.json (none there: plain)");
  flags.Add("api-key-file", &api_key_file,
            "file of API keys, one per line ('#' comments): every kvspan.v1.Serving call and HTTP /v1 call "
            "then needs 'authorization: Bearer <key>'; /health, /metrics and grpc.health.v1 stay open");
  flags.Add("tls-cert", &o.tls.cert_file, "PEM certificate chain of the gRPC port (with --tls-key: TLS)");
  flags.Add("tls-key", &o.tls.key_file, "PEM private key of --tls-cert");
  flags.Add("tls-client-ca", &o.tls.client_ca_file,
            "PEM CA bundle: gRPC clients must present a certificate it signed (mutual TLS)");
  flags.Add("data", &o.data_dir, "directory of the embedded cache store (RocksDB)");
  flags.Add("store", &o.store_address, "host:port of a `kvspan cachestore` to use instead of --data");
  flags.Add("store-memory-mib", &store_memory_mib, "memory tier of the embedded store, MiB");
  flags.Add("policy", &o.service.default_policy,
            "default compression policy (kvcache/README.md grammar, or 'dense' for none)");
  flags.Add("span-tokens", &o.service.span_tokens, "tokens per compressed span (S)");
  flags.Add("kv-budget-bytes", &o.decode.kv_budget_bytes, "KV memory over all sequences, bytes (measured)");
  flags.Add("max-queue", &o.decode.max_queue, "requests waiting for admission at most");
  flags.Add("max-running", &o.decode.max_running, "sequences in the running batch at most");
  flags.Add("step-tokens", &o.decode.step_tokens, "tokens per batch step (decode first, then prefill chunks)");
  flags.Add("max-tokens", &o.service.default_max_tokens, "default max_tokens of a request");
  flags.Add("idle-timeout-ms", &o.service.default_idle_timeout_ms, "default idle timeout of a session");
  flags.Add("threads", &o.num_threads, "model threads; 0 = all cores");
  model::AddWeightsFlag(flags, &o.weights);
  flags.Add("prefill-threads", &o.prefill_threads, "concurrent cache-store loads");
  flags.Add("grace-ms", &grace_ms, "on SIGTERM, how long in-flight streams may take to finish");
  if (std::optional<int> code = flags.ParseOrExitCode(argc, argv)) return *code;
  o.store_memory_budget_bytes = store_memory_mib << 20;
  if (!api_key_file.empty()) {
    absl::StatusOr<std::vector<std::string>> keys = LoadApiKeyFile(api_key_file);
    if (!keys.ok()) {
      std::fprintf(stderr, "kvspan serve: --api-key-file: %s\n", keys.status().ToString().c_str());
      return 2;
    }
    o.api_keys = *std::move(keys);
  }

  // Block the stop signals before any thread starts, so that only sigwait() sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  absl::StatusOr<std::unique_ptr<frontend::ServingNode>> node = frontend::ServingNode::Start(o);
  if (!node.ok()) {
    std::fprintf(stderr, "kvspan serve: %s\n", node.status().ToString().c_str());
    return node.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::printf("kvspan serve: listening on %s\n", (*node)->address().c_str());
  if (!(*node)->http_address().empty()) std::printf("kvspan serve: http on %s\n", (*node)->http_address().c_str());
  std::printf("kvspan serve: ready (model %s, policy %s, S=%d, KV budget %lld bytes)\n", o.model_dir.c_str(),
              o.service.default_policy.c_str(), o.service.span_tokens,
              static_cast<long long>(o.decode.kv_budget_bytes));
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  LOG(INFO) << "kvspan serve: signal " << signal_number << ", finishing in-flight streams (" << grace_ms << " ms)";
  (*node)->Shutdown(grace_ms);
  LOG(INFO) << "kvspan serve: stopped";
  return 0;
}

}  // namespace kvspan::node
