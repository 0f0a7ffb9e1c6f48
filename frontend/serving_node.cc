#include "frontend/serving_node.h"

#include <chrono>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cachestore/embedded_client.h"
#include "cachestore/remote_client.h"
#include "cachestore/store.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "frontend/chat_template.h"
#include "frontend/openai_routes.h"
#include "transport/prefill_client.h"
#if KVSPAN_HAVE_CUDA
#include "gpu/gpu_backend.h"
#endif
#if KVSPAN_HAVE_NCCL
#include "gpu/device_span_link.h"
#include "gpu/nccl_channel.h"
#endif

namespace kvspan::frontend {
namespace {

absl::StatusOr<std::shared_ptr<cachestore::CacheClient>> OpenStore(const ServingNodeOptions& o) {
  if (!o.store_address.empty()) {
    cachestore::RemoteClientOptions remote;
    remote.target = o.store_address;
    ASSIGN_OR_RETURN(remote.credentials, MakePeerCredentials(o.store_tls, "--store-tls"));
    ASSIGN_OR_RETURN(auto client, cachestore::RemoteCacheClient::Create(remote));
    return std::shared_ptr<cachestore::CacheClient>(std::move(client));
  }
  cachestore::StoreOptions store;
  store.path = o.data_dir;
  store.memory_budget_bytes = o.store_memory_budget_bytes;
  ASSIGN_OR_RETURN(std::unique_ptr<cachestore::CacheStore> opened, cachestore::CacheStore::Open(store));
  return std::shared_ptr<cachestore::CacheClient>(
      std::make_shared<cachestore::EmbeddedCacheClient>(std::shared_ptr<cachestore::CacheStore>(std::move(opened))));
}

// GET /metrics and GET /health. `metrics` and `serving` outlive the server (the node
// stops it in Shutdown before anything they read goes).
void AddHttpRoutes(HttpServer& http, const ServingMetrics& metrics, const std::atomic<bool>& serving) {
  http.Get("/metrics", [&metrics](const httplib::Request&, httplib::Response& response) {
    response.set_content(metrics.Render(), "text/plain; version=0.0.4");
  });
  http.Get("/health", [&serving](const httplib::Request&, httplib::Response& response) {
    const bool up = serving.load();
    response.status = up ? 200 : 503;
    response.set_content(up ? "ok" : "shutting down", "text/plain");
  });
}

}  // namespace

const char* NodeRoleName(NodeRole role) {
  switch (role) {
    case NodeRole::kAll: return "serve";
    case NodeRole::kPrefill: return "prefill";
    case NodeRole::kDecode: return "decode";
    case NodeRole::kFrontend: return "frontend";
  }
  return "?";
}

namespace {

// The device index of "cuda" / "cuda:N"; -1 for "cpu".
absl::StatusOr<int> ParseDevice(const std::string& device) {
  if (device == "cpu") return -1;
  if (device == "cuda") return 0;
  int index = 0;
  if (absl::StartsWith(device, "cuda:") && absl::SimpleAtoi(device.substr(5), &index) && index >= 0) return index;
  return absl::InvalidArgumentError(absl::StrCat("device '", device, "' is not cpu, cuda or cuda:N"));
}

// The workers' backend for `options.device` (the CPU model is kept in *cpu_model, which the
// backend borrows), with the KV budget resolved into *kv_budget_bytes when it is 0.
absl::StatusOr<std::unique_ptr<decode::DecodeBackend>> LoadBackend(const ServingNodeOptions& options,
                                                                    std::unique_ptr<model::Model>* cpu_model,
                                                                    int64_t* kv_budget_bytes) {
  ASSIGN_OR_RETURN(const int device, ParseDevice(options.device));
  if (device < 0) {
    ASSIGN_OR_RETURN(*cpu_model, model::Model::Load(options.model_dir,
                                                    {.num_threads = options.num_threads, .weights = options.weights}));
    if (*kv_budget_bytes == 0) *kv_budget_bytes = decode::DecodeWorkerOptions{}.kv_budget_bytes;
    return std::make_unique<decode::CpuBackend>(cpu_model->get());
  }
  if (options.weights.mode != model::WeightsMode::kAuto && options.weights.mode != model::WeightsMode::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("--weights ", model::WeightsModeName(options.weights.mode),
                                                   ": the GPU backend keeps its weights in bf16 (--weights bf16)"));
  }
#if KVSPAN_HAVE_CUDA
  ASSIGN_OR_RETURN(std::unique_ptr<gpu::GpuBackend> gpu, gpu::GpuBackend::Load(options.model_dir, {.device = device}));
  if (*kv_budget_bytes == 0) {
    ASSIGN_OR_RETURN(*kv_budget_bytes, gpu->KvBudgetBytes(options.gpu_memory_fraction, options.decode.step_tokens));
  }
  return std::unique_ptr<decode::DecodeBackend>(std::move(gpu));
#else
  return absl::FailedPreconditionError(absl::StrCat(
      "--device ", options.device, ": this kvspan was built without CUDA (configure found no nvcc; see "
      "docs/architecture.md, \"GPU\")"));
#endif
}

// The device span links of a worker on CUDA device `device` (-1: the CPU): the NCCL ones
// where this build has NCCL; null where there are none. With `required` (kDecode with
// --span-transport nccl) having none is FailedPrecondition.
absl::StatusOr<std::unique_ptr<transport::DeviceSpanLinkFactory>> DeviceLinks(int device, bool required) {
  if (device < 0) {
    if (!required) return nullptr;
    return absl::FailedPreconditionError(
        "--span-transport nccl: the spans go GPU to GPU, so the worker needs --device cuda:N");
  }
#if KVSPAN_HAVE_NCCL
  return std::unique_ptr<transport::DeviceSpanLinkFactory>(new gpu::ChannelSpanLinkFactory(
      std::make_unique<gpu::NcclChannelFactory>(device), gpu::ChannelSpanLinkOptions{.device = device}));
#else
  if (!required) return nullptr;
  return absl::FailedPreconditionError(
      "--span-transport nccl: this kvspan was built without CUDA and NCCL (configure found no nvcc, nccl.h or "
      "libnccl; see transport/README.md)");
#endif
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServingNode>> ServingNode::Start(const ServingNodeOptions& options) {
  const size_t colon = options.listen_address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("listen address '", options.listen_address, "' has no :port"));
  }
  const NodeRole role = options.role;
  const bool client_facing = role == NodeRole::kAll || role == NodeRole::kFrontend;
  ChatTemplate chat_template = ChatTemplate::kPlain;
  if (!options.http_listen_address.empty() && client_facing) {
    ASSIGN_OR_RETURN(chat_template, ChatTemplateForModel(options.model_dir, options.chat_template));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, MakeServerCredentials(options.tls));
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> peer_credentials, MakePeerCredentials(options.peer_tls));
  std::unique_ptr<ServingNode> node(new ServingNode());
  if (options.span_transport != "grpc" && options.span_transport != "nccl") {
    return absl::InvalidArgumentError(
        absl::StrCat("--span-transport '", options.span_transport, "' is not grpc or nccl"));
  }
  if (role == NodeRole::kDecode || role == NodeRole::kPrefill) {
    // Before the model loads: a decode worker that cannot have NCCL ends at once.
    ASSIGN_OR_RETURN(const int device, ParseDevice(options.device));
    ASSIGN_OR_RETURN(node->device_links_,
                     DeviceLinks(device, role == NodeRole::kDecode && options.span_transport == "nccl"));
    if (role == NodeRole::kDecode && options.span_transport == "grpc") node->device_links_.reset();
  }
  std::unique_ptr<decode::DecodeBackend> backend;  // the workers' (every role but the frontend)
  decode::DecodeWorkerOptions decode_options = options.decode;
  if (role == NodeRole::kFrontend) {
    ASSIGN_OR_RETURN(node->config_, model::Model::LoadConfig(options.model_dir, options.weights));
  } else {
    ASSIGN_OR_RETURN(backend, LoadBackend(options, &node->model_, &decode_options.kv_budget_bytes));
    node->config_ = backend->config();
    LOG(INFO) << "model " << options.model_dir << " on " << backend->name() << ", KV budget "
              << decode_options.kv_budget_bytes << " bytes";
  }
  ASSIGN_OR_RETURN(node->tokenizer_, model::Tokenizer::LoadFromDir(options.model_dir));
  ASSIGN_OR_RETURN(node->client_, OpenStore(options));
  const model::ModelConfig& config = node->config_;
  prefill::StoreRouterOptions router;
  router.client = node->client_;
  router.model_fingerprint = config.fingerprint;
  router.geometry = {config.num_layers, config.num_kv_heads, config.head_dim, options.service.span_tokens};
  router.get_threads = options.prefill_threads * 2;
  node->stores_ = std::make_shared<prefill::StoreRouter>(router);
  LocalBackend* local_backend = nullptr;  // every role but the frontend
  if (role == NodeRole::kFrontend) {
    ClusterOptions cluster = options.cluster;
    cluster.span_tokens = options.service.span_tokens;
    cluster.credentials = peer_credentials;
    ASSIGN_OR_RETURN(std::unique_ptr<ClusterBackend> backend, ClusterBackend::Create(cluster, config));
    node->backend_ = std::move(backend);
  } else {
    node->decode_ = std::make_unique<decode::DecodeWorker>(std::move(backend), node->tokenizer_.get(), node->stores_,
                                                           decode_options);
    node->transport_ = std::make_unique<transport::InProcessTransport>(node->decode_.get());
    node->prefill_ = std::make_unique<prefill::PrefillWorker>(node->stores_, node->transport_.get(),
                                                              options.prefill_threads);
    auto local = std::make_unique<LocalBackend>(node->decode_.get(), node->prefill_.get(), node->stores_.get());
    local_backend = local.get();
    node->backend_ = std::move(local);
  }
  ServingOptions service = options.service;
  if (service.model_name.empty()) {
    const size_t slash = options.model_dir.find_last_of('/', options.model_dir.size() - 2);
    service.model_name = options.model_dir.substr(slash == std::string::npos ? 0 : slash + 1);
    while (!service.model_name.empty() && service.model_name.back() == '/') service.model_name.pop_back();
  }
  service.store_description = options.store_address.empty() ? absl::StrCat("embedded ", options.data_dir)
                                                            : absl::StrCat("remote ", options.store_address);
  node->metrics_ = std::make_unique<ServingMetrics>(ServingMetrics::Sources{.backend = node->backend_.get()});
  if (!options.api_keys.empty()) node->api_keys_ = std::make_unique<ApiKeys>(options.api_keys);
  std::string service_name;
  grpc::Service* grpc_service = nullptr;
  if (client_facing) {
    ASSIGN_OR_RETURN(node->sessions_, prefill::SessionStore::Create({.client = node->client_, .now_ms = {}}));
    ServingParts parts{.config = &node->config_, .tokenizer = node->tokenizer_.get(),
                       .backend = node->backend_.get(), .sessions = node->sessions_.get(),
                       .metrics = node->metrics_.get(), .api_keys = node->api_keys_.get()};
    ASSIGN_OR_RETURN(node->service_, ServingService::Create(service, parts));
    grpc_service = node->service_.get();
    service_name = v1::Serving::service_full_name();
  } else if (role == NodeRole::kPrefill) {
    node->prefill_service_ = std::make_unique<transport::PrefillService>(
        config, node->prefill_.get(), node->decode_.get(), node->stores_.get(),
        transport::PrefillServiceOptions{.span_tokens = options.service.span_tokens,
                                         .test_corrupt_span = options.test_corrupt_span,
                                         .test_stall_after_spans = options.test_stall_after_spans,
                                         .device_links = node->device_links_.get()});
    grpc_service = node->prefill_service_.get();
    service_name = v1::Prefill::service_full_name();
    transport::PrefillService* prefill_service = node->prefill_service_.get();
    local_backend->SetTransferSource([prefill_service] {
      return std::pair<int64_t, int64_t>(prefill_service->bytes_sent(), 0);
    });
  } else {
    node->decode_service_ = std::make_unique<DecodeService>(
        config, node->decode_.get(), node->prefill_.get(), node->stores_.get(),
        DecodeServiceOptions{.span_tokens = options.service.span_tokens,
                             .default_max_tokens = options.service.default_max_tokens,
                             .peer_credentials = peer_credentials,
                             .device_links = node->device_links_.get()});
    grpc_service = node->decode_service_.get();
    service_name = v1::Decode::service_full_name();
    DecodeService* decode_service = node->decode_service_.get();
    local_backend->SetTransferSource([decode_service] {
      return std::pair<int64_t, int64_t>(0, decode_service->bytes_received());
    });
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen_address, credentials, &port);
  builder.RegisterService(grpc_service);
  transport::ConfigureWorkerServer(builder);
  node->server_ = builder.BuildAndStart();
  if (node->server_ == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen_address));
  }
  // After gRPC: httplib cannot release a socket it bound but never served (Stop is a
  // no-op then), so nothing may fail between Create and Start.
  if (!options.http_listen_address.empty()) {
    ASSIGN_OR_RETURN(node->http_, HttpServer::Create({.listen_address = options.http_listen_address,
                                                         .num_threads = options.http_threads,
                                                         .tls = options.tls}));
    AddHttpRoutes(*node->http_, *node->metrics_, node->serving_);
    if (node->service_ != nullptr) {
      AddOpenAiRoutes(*node->http_, *node->service_,
                      {.model_name = node->service_->options().model_name, .chat_template = chat_template,
                       .drain = &node->http_calls_, .api_keys = node->api_keys_.get()});
    }
    node->http_address_ = node->http_->address();
  }
  if (grpc::HealthCheckServiceInterface* health = node->server_->GetHealthCheckService()) {
    health->SetServingStatus(true);
    health->SetServingStatus(service_name, true);
  }
  std::string host = options.listen_address.substr(0, colon);
  if (host.empty() || host == "0.0.0.0" || host == "[::]") host = "127.0.0.1";
  node->address_ = absl::StrCat(host, ":", port);
  node->serving_ = true;
  if (node->http_ != nullptr) node->http_->Start();
  return node;
}

ServingNode::~ServingNode() { Shutdown(0); }

void ServingNode::Shutdown(int64_t grace_ms) {
  std::call_once(shutdown_once_, [&] {
    serving_ = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
    http_calls_.StopAccepting();
    if (server_ != nullptr) {
      if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) health->Shutdown();
      // Waits for in-flight Generate streams until the deadline, then cancels them (their
      // sinks see the cancellation and the decode worker drops the sequences).
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(grace_ms));
      server_->Wait();
    }
    // The HTTP calls get what is left of the grace period, then are cancelled; /metrics
    // reads the workers: the listener goes before them.
    http_calls_.DrainUntil(deadline);
    if (http_ != nullptr) http_->Stop();
    backend_.reset();  // a cluster backend's calls end here
    prefill_.reset();
    decode_.reset();
    if (stores_ != nullptr) stores_->FlushAll();
  });
}

}  // namespace kvspan::frontend
