// `kvspan serve --model DIR --listen ADDR`: every role in one process (frontend, prefill,
// decode, and an embedded cache store in --data, or --store ADDR for a running
// `kvspan cachestore`). The disaggregated roles, the same binary:
//   kvspan prefill  --model DIR --listen ADDR --store ADDR
//   kvspan decode   --model DIR --listen ADDR --store ADDR --kv-budget-bytes N [--device cuda:N]
//                   [--span-transport grpc|nccl]
//   kvspan frontend --listen ADDR --prefill ADDR[,ADDR...] --decode ADDR[,ADDR...] --store ADDR
// Each prints `kvspan <role>: listening on HOST:PORT` and then `kvspan <role>: ready` on
// stdout. SIGTERM or SIGINT: stop accepting, let in-flight streams finish within
// --grace-ms, exit 0.
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

namespace {

constexpr char kServeHelp[] =
    "Serves the kvspan.v1.Serving gRPC API (Generate, sessions, ServerInfo) with every role in this process: "
    "continuous batching over compressed KV caches, prefix reuse through the cache store.";
constexpr char kPrefillHelp[] =
    "Serves kvspan.v1.Prefill: looks up and loads cached spans, prefills the rest, compresses, puts new spans "
    "to the store and streams each span to the decode worker that asks, as soon as it is compressed.";
constexpr char kDecodeHelp[] =
    "Serves kvspan.v1.Decode: admits sequences from the frontend within its KV budget, pulls their compressed "
    "prefill from the prefill workers, runs continuous batching and streams the tokens back.";
constexpr char kFrontendHelp[] =
    "Serves the kvspan.v1.Serving API of `kvspan serve` over remote prefill and decode workers: validation, "
    "sessions, routing by free KV budget and session affinity, health checks. Loads no weights.";

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace

int RunNode(frontend::NodeRole role, int argc, const char* const* argv) {
  using frontend::NodeRole;
  const std::string name = std::string("kvspan ") + frontend::NodeRoleName(role);
  const bool client_facing = role == NodeRole::kAll || role == NodeRole::kFrontend;
  const bool runs_model = role != NodeRole::kFrontend;
  frontend::ServingNodeOptions o;
  o.role = role;
  o.listen_address = role == NodeRole::kAll        ? "0.0.0.0:7400"
                     : role == NodeRole::kFrontend ? "0.0.0.0:7400"
                     : role == NodeRole::kPrefill  ? "0.0.0.0:7410"
                                                   : "0.0.0.0:7420";
  int64_t grace_ms = 10000;
  int64_t store_memory_mib = 256;
  std::string api_key_file;
  std::string prefill_list;
  std::string decode_list;
  FlagSet flags(name, role == NodeRole::kAll        ? kServeHelp
                      : role == NodeRole::kPrefill  ? kPrefillHelp
                      : role == NodeRole::kDecode   ? kDecodeHelp
                                                    : kFrontendHelp);
  flags.Add("model", &o.model_dir,
            runs_model ? "model directory (config.json, *.safetensors, tokenizer.json)"
                       : "model directory: its config, tokenizer and checkpoint headers (no weights are loaded)");
  flags.Add("listen", &o.listen_address, "host:port to serve on (port 0 picks a free one)");
  flags.Add("http-listen", &o.http_listen_address,
            client_facing ? "host:port of the HTTP listener: GET /metrics (Prometheus), GET /health, the "
                            "OpenAI-compatible POST /v1/completions, POST /v1/chat/completions, GET /v1/models; "
                            "port 0 picks a free one; empty = no HTTP"
                          : "host:port of the HTTP listener: GET /metrics (Prometheus), GET /health; empty = none");
  flags.Add("http-threads", &o.http_threads,
            "HTTP handler threads; each running /v1 call holds one (keep it above the concurrent HTTP calls)");
  if (role == NodeRole::kFrontend) {
    flags.Add("prefill", &prefill_list,
              "prefill workers, host:port[,host:port...]; a host name may resolve to several (headless service)");
    flags.Add("decode", &decode_list, "decode workers, host:port[,host:port...] (as --prefill)");
    flags.Add("probe-interval-ms", &o.cluster.probe_interval_ms, "how often every worker is health-checked");
  }
  if (client_facing) {
    flags.Add("chat-template", &o.chat_template,
              "chat template of /v1/chat/completions: llama3, chatml, mistral or plain; empty = recognised from "
              "the model's tokenizer_config.json (none there: plain)");
    flags.Add("api-key-file", &api_key_file,
              "file of API keys, one per line ('#' comments): every kvspan.v1.Serving call and HTTP /v1 call "
              "then needs 'authorization: Bearer <key>'; /health, /metrics and grpc.health.v1 stay open");
  }
  flags.Add("tls-cert", &o.tls.cert_file,
            "PEM certificate chain of the gRPC and HTTP ports (with --tls-key: TLS; the HTTP port is then HTTPS only)");
  flags.Add("tls-key", &o.tls.key_file, "PEM private key of --tls-cert");
  flags.Add("tls-client-ca", &o.tls.client_ca_file,
            "PEM CA bundle: gRPC and HTTP clients must present a certificate it signed (mutual TLS)");
  if (role == NodeRole::kFrontend || role == NodeRole::kDecode) {
    flags.Add("peer-tls-ca", &o.peer_tls.ca_file,
              "PEM CA bundle the workers' certificates must chain to: calls to the workers over TLS");
    flags.Add("peer-tls-cert", &o.peer_tls.cert_file,
              "PEM client certificate for the calls to the workers (workers with --tls-client-ca)");
    flags.Add("peer-tls-key", &o.peer_tls.key_file, "PEM private key of --peer-tls-cert");
  }
  flags.Add("store-tls-ca", &o.store_tls.ca_file,
            "PEM CA bundle the --store server's certificate must chain to: the store link over TLS");
  flags.Add("store-tls-cert", &o.store_tls.cert_file,
            "PEM client certificate for the --store link (a cachestore with --tls-client-ca)");
  flags.Add("store-tls-key", &o.store_tls.key_file, "PEM private key of --store-tls-cert");
  flags.Add("data", &o.data_dir, "directory of the embedded cache store (RocksDB)");
  flags.Add("store", &o.store_address, "host:port of a `kvspan cachestore` to use instead of --data");
  flags.Add("store-memory-mib", &store_memory_mib, "memory tier of the embedded store, MiB");
  if (client_facing) {
    flags.Add("policy", &o.service.default_policy,
              "default compression policy (kvcache/README.md grammar, or 'dense' for none)");
  }
  flags.Add("span-tokens", &o.service.span_tokens, "tokens per compressed span (S); equal on every role");
  if (runs_model) {
    o.decode.kv_budget_bytes = 0;  // automatic unless given
    flags.Add("kv-budget-bytes", &o.decode.kv_budget_bytes,
              "KV memory over all sequences, bytes (measured); 0 = automatic: 1 GiB on the CPU, on a GPU what "
              "--gpu-memory-fraction leaves beside the weights and the step scratch");
    flags.Add("device", &o.device,
              "where the model runs: cpu, or cuda:N (the GPU backend: bf16 weights, KV caches in device memory; "
              "one worker per GPU)");
    flags.Add("gpu-memory-fraction", &o.gpu_memory_fraction,
              "with --device cuda:N and an automatic KV budget: the share of the GPU's memory this process may fill");
    flags.Add("max-queue", &o.decode.max_queue, "requests waiting for admission at most");
    flags.Add("max-running", &o.decode.max_running, "sequences in the running batch at most");
    flags.Add("step-tokens", &o.decode.step_tokens, "tokens per batch step (decode first, then prefill chunks)");
  }
  if (role == NodeRole::kDecode) {
    flags.Add("span-transport", &o.span_transport,
              "how spans come from the prefill workers: grpc (in the stream), or nccl (GPU to GPU: needs --device "
              "cuda:N, a build with NCCL and prefill workers on GPUs; the digest of each span is checked on the "
              "device)");
  }
  if (role != NodeRole::kPrefill) {
    flags.Add("max-tokens", &o.service.default_max_tokens, "default max_tokens of a request");
  }
  if (client_facing) {
    flags.Add("idle-timeout-ms", &o.service.default_idle_timeout_ms, "default idle timeout of a session");
  }
  if (runs_model) {
    flags.Add("threads", &o.num_threads, "model threads; 0 = all cores");
    flags.Add("prefill-threads", &o.prefill_threads, "concurrent cache-store loads");
  }
  // The frontend takes the workers' --weights too: a quantized format is part of the model's
  // fingerprint, which it checks each worker against.
  model::AddWeightsFlag(flags, &o.weights);
  if (role == NodeRole::kPrefill) {
    flags.Add("test-corrupt-span", &o.test_corrupt_span,
              "TEST HOOK: flip a byte of the n-th span this process sends (1-based; 0 = never)");
    flags.Add("test-stall-after-spans", &o.test_stall_after_spans,
              "TEST HOOK: stop sending after this many spans in total, holding the streams open (0 = never)");
  }
  flags.Add("grace-ms", &grace_ms, "on SIGTERM, how long in-flight streams may take to finish");
  if (std::optional<int> code = flags.ParseOrExitCode(argc, argv)) return *code;
  o.store_memory_budget_bytes = store_memory_mib << 20;
  o.cluster.prefill_addresses = SplitList(prefill_list);
  o.cluster.decode_addresses = SplitList(decode_list);
  if (role == NodeRole::kFrontend && o.cluster.decode_addresses.empty()) {
    std::fprintf(stderr, "%s: --decode: at least one decode worker is needed\n", name.c_str());
    return 2;
  }
  if (!api_key_file.empty()) {
    absl::StatusOr<std::vector<std::string>> keys = LoadApiKeyFile(api_key_file);
    if (!keys.ok()) {
      std::fprintf(stderr, "%s: --api-key-file: %s\n", name.c_str(), keys.status().ToString().c_str());
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
  // httplib (and OpenSSL under it) writes with plain send()/write(): an HTTP(S) client that
  // hangs up mid-response would otherwise kill the process with SIGPIPE. gRPC happens to
  // ignore it too; this does not rely on that.
  signal(SIGPIPE, SIG_IGN);

  absl::StatusOr<std::unique_ptr<frontend::ServingNode>> node = frontend::ServingNode::Start(o);
  if (!node.ok()) {
    std::fprintf(stderr, "%s: %s\n", name.c_str(), node.status().ToString().c_str());
    return node.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::printf("%s: listening on %s\n", name.c_str(), (*node)->address().c_str());
  if (!(*node)->http_address().empty()) std::printf("%s: http on %s\n", name.c_str(), (*node)->http_address().c_str());
  if (role == NodeRole::kFrontend) {
    std::printf("%s: ready (model %s, %zu prefill and %zu decode addresses, S=%d)\n", name.c_str(),
                o.model_dir.c_str(), o.cluster.prefill_addresses.size(), o.cluster.decode_addresses.size(),
                o.service.span_tokens);
  } else if (role == NodeRole::kAll) {
    std::printf("%s: ready (model %s on %s, policy %s, S=%d, KV budget %lld bytes)\n", name.c_str(),
                o.model_dir.c_str(), (*node)->device_name().c_str(), o.service.default_policy.c_str(),
                o.service.span_tokens, static_cast<long long>((*node)->kv_budget_bytes()));
  } else {
    std::printf("%s: ready (model %s on %s, S=%d, KV budget %lld bytes)\n", name.c_str(), o.model_dir.c_str(),
                (*node)->device_name().c_str(), o.service.span_tokens,
                static_cast<long long>((*node)->kv_budget_bytes()));
  }
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  LOG(INFO) << name << ": signal " << signal_number << ", finishing in-flight streams (" << grace_ms << " ms)";
  (*node)->Shutdown(grace_ms);
  LOG(INFO) << name << ": stopped";
  return 0;
}

int RunServe(int argc, const char* const* argv) { return RunNode(frontend::NodeRole::kAll, argc, argv); }
int RunPrefill(int argc, const char* const* argv) { return RunNode(frontend::NodeRole::kPrefill, argc, argv); }
int RunDecode(int argc, const char* const* argv) { return RunNode(frontend::NodeRole::kDecode, argc, argv); }
int RunFrontend(int argc, const char* const* argv) { return RunNode(frontend::NodeRole::kFrontend, argc, argv); }

}  // namespace kvspan::node
