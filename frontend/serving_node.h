// ServingNode: one kvspan process in one of its roles (NodeRole). `kvspan serve` runs
// every role: the model and tokenizer, the cache store (embedded RocksDB in a directory, or
// a remote `kvspan cachestore`), the prefill worker, the decode worker, the in-process
// span transport, and the kvspan.v1.Serving gRPC service. The disaggregated roles run a
// part: `kvspan prefill` (kvspan.v1.Prefill), `kvspan decode` (kvspan.v1.Decode) and
// `kvspan frontend` (kvspan.v1.Serving over a ClusterBackend). Every role serves
// grpc.health.v1 and server reflection on its gRPC port and, when asked, an HTTP port with
// GET /metrics (Prometheus) and GET /health; the frontend roles add the OpenAI-compatible
// API (frontend/openai_routes.h).
// Thread-safe after Start.
#ifndef KVSPAN_FRONTEND_SERVING_NODE_H_
#define KVSPAN_FRONTEND_SERVING_NODE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "cachestore/client.h"
#include "decode/decode_worker.h"
#include "frontend/api_keys.h"
#include "frontend/cluster_backend.h"
#include "frontend/decode_service.h"
#include "frontend/http_server.h"
#include "frontend/openai_routes.h"
#include "frontend/serving_backend.h"
#include "frontend/serving_metrics.h"
#include "frontend/serving_service.h"
#include "frontend/tls.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "prefill/prefill_worker.h"
#include "prefill/session_store.h"
#include "prefill/store_router.h"
#include "transport/prefill_service.h"
#include "transport/span_transport.h"

namespace kvspan::frontend {

// Which roles the process runs (docs/architecture.md, "Disaggregation").
enum class NodeRole {
  kAll,       // kvspan serve: frontend, prefill and decode workers, in process
  kPrefill,   // kvspan prefill: the kvspan.v1.Prefill service
  kDecode,    // kvspan decode: the kvspan.v1.Decode service
  kFrontend,  // kvspan frontend: kvspan.v1.Serving over remote workers (no weights loaded)
};
const char* NodeRoleName(NodeRole role);

struct ServingNodeOptions {
  NodeRole role = NodeRole::kAll;
  // kFrontend: the workers (host:port each; a name may resolve to several).
  ClusterOptions cluster;
  // Test hooks of kPrefill (transport::PrefillServiceOptions).
  int test_corrupt_span = 0;
  int test_stall_after_spans = 0;
  std::string model_dir = "models/kvspan-brown";
  std::string listen_address = "127.0.0.1:0";  // port 0 picks a free one
  // The cache store: `store_address` (host:port of a `kvspan cachestore`) when set, else
  // an embedded store in `data_dir`.
  std::string data_dir = "data";
  std::string store_address;
  // host:port of the HTTP listener (GET /metrics, GET /health, /v1/...); empty = no HTTP.
  std::string http_listen_address;
  // The chat template of /v1/chat/completions: llama3, chatml, mistral or plain; empty =
  // recognised from the model's tokenizer_config.json (frontend/chat_template.h).
  std::string chat_template;
  // HTTP handler threads: each running /v1 call holds one until it ends, so /metrics and
  // /health stay answerable only while fewer calls than this run over HTTP.
  int http_threads = 16;
  // Keys a client must send (frontend/api_keys.h) on every kvspan.v1.Serving call and every
  // HTTP /v1/... call; empty = none needed. GET /health, GET /metrics, grpc.health.v1 and
  // reflection stay open.
  std::vector<std::string> api_keys;
  // TLS on the gRPC port (frontend/tls.h); all empty = plaintext.
  ServerTlsFiles tls;
  // kFrontend and kDecode: TLS of their calls to the workers; all empty = plaintext.
  PeerTlsFiles peer_tls;
  // TLS of the link to a remote `kvspan cachestore` (--store); all empty = plaintext.
  PeerTlsFiles store_tls;
  int64_t store_memory_budget_bytes = int64_t{256} << 20;  // embedded store's memory tier
  int num_threads = 0;       // model threads; 0 = all cores
  model::WeightsChoice weights;  // weight matrices in memory
  // Where the workers' model runs: "cpu", or "cuda:N" (or "cuda", device 0) for the GPU
  // backend (gpu/gpu_backend.h: weights in bf16, KV caches in device memory), in a build
  // with CUDA. Not kFrontend.
  std::string device = "cpu";
  // kDecode: how spans come from the prefill workers: "grpc" (the bytes in the stream), or
  // "nccl" (GPU to GPU, transport/README.md "NCCL span delivery": needs a cuda device and
  // a build with NCCL, and prefill workers on GPUs). A prefill worker on a GPU of an NCCL
  // build always accepts both.
  std::string span_transport = "grpc";
  // With a GPU and decode.kv_budget_bytes = 0: the share of the device's memory the
  // process may fill (weights, step scratch and KV), as vLLM's --gpu-memory-utilization.
  double gpu_memory_fraction = 0.9;
  int prefill_threads = 2;   // concurrent cache-store loads
  ServingOptions service;    // default policy, S, sessions
  // The decode worker's options; kv_budget_bytes = 0 means automatic: the
  // DecodeWorkerOptions default on the CPU, on a GPU what gpu_memory_fraction of its memory
  // leaves beside the weights and the step scratch (GpuBackend::KvBudgetBytes).
  decode::DecodeWorkerOptions decode;
};

class ServingNode {
 public:
  // Loads the model, opens the store, starts the workers and the gRPC server. Errors:
  // those of Model::Load / Tokenizer::LoadFromDir / CacheStore::Open, InvalidArgument for a
  // bad default policy or option or (with HTTP) a chat template that is not recognised or
  // inconsistent TLS flags or a device that is not "cpu" / "cuda:N" or --weights other than
  // bf16 on a GPU, FailedPrecondition for a GPU device in a build without CUDA, GpuModel's
  // errors (Unavailable without the device), MakeServerCredentials' errors for TLS files, Unavailable when an address (gRPC or HTTP) cannot be bound.
  static absl::StatusOr<std::unique_ptr<ServingNode>> Start(const ServingNodeOptions& options);
  // Shuts down (Shutdown(0)) if not done yet.
  ~ServingNode();

  // "host:port" clients can dial.
  const std::string& address() const { return address_; }
  // "host:port" of the HTTP listener; empty when options.http_listen_address was.
  const std::string& http_address() const { return http_address_; }
  // Stops accepting calls (gRPC health NOT_SERVING, HTTP /health 503, /v1/... 503), lets
  // in-flight calls (gRPC and HTTP) finish for up to `grace_ms`, cancels the rest, stops
  // the HTTP listener, then
  // stops the workers and flushes queued store writes.
  void Shutdown(int64_t grace_ms);

  // The model's config (every role has it; kFrontend loads no weights).
  const model::ModelConfig& config() const { return config_; }
  // The workers' KV budget in bytes (resolved when options gave 0) and their backend's
  // name ("cpu", "cuda:0 (...)"); 0 and "" for kFrontend.
  int64_t kv_budget_bytes() const { return decode_ == nullptr ? 0 : decode_->options().kv_budget_bytes; }
  std::string device_name() const { return decode_ == nullptr ? "" : decode_->backend().name(); }

 private:
  ServingNode() = default;

  model::ModelConfig config_;
  std::unique_ptr<model::Model> model_;  // null for kFrontend
  std::unique_ptr<model::Tokenizer> tokenizer_;
  std::shared_ptr<cachestore::CacheClient> client_;
  std::shared_ptr<prefill::StoreRouter> stores_;
  std::unique_ptr<prefill::SessionStore> sessions_;
  std::unique_ptr<decode::DecodeWorker> decode_;
  std::unique_ptr<transport::InProcessTransport> transport_;
  std::unique_ptr<prefill::PrefillWorker> prefill_;
  std::unique_ptr<ServingBackend> backend_;
  std::unique_ptr<ServingMetrics> metrics_;
  std::unique_ptr<ApiKeys> api_keys_;  // null without options.api_keys
  std::unique_ptr<ServingService> service_;            // kAll, kFrontend
  // The device span links (NCCL): kDecode with span_transport "nccl", kPrefill on a GPU of
  // an NCCL build; else null. Outlives the services, which borrow it.
  std::unique_ptr<transport::DeviceSpanLinkFactory> device_links_;
  std::unique_ptr<transport::PrefillService> prefill_service_;  // kPrefill
  std::unique_ptr<DecodeService> decode_service_;       // kDecode
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::unique_ptr<HttpServer> http_;  // null without --http-listen
  std::string http_address_;
  HttpCallDrain http_calls_;  // the /v1/... calls, drained by Shutdown
  std::atomic<bool> serving_{false};  // what GET /health reports
  std::once_flag shutdown_once_;
};

}  // namespace kvspan::frontend

#endif  // KVSPAN_FRONTEND_SERVING_NODE_H_
