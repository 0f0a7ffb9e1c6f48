#include "frontend/cluster_backend.h"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "frontend/grpc_token_sink.h"
#include "proto/deadline.h"
#include "proto/status_conversion.h"
#include "transport/prefill_client.h"
#include "transport/store_counters.h"

namespace kvspan::frontend {
namespace {

using Clock = std::chrono::steady_clock;

// Splits host:port ([v6]:port too).
bool SplitHostPort(const std::string& address, std::string* host, std::string* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') *host = host->substr(1, host->size() - 2);
  return !host->empty();
}

// Every address `name` resolves to, as ip:port; the name itself when it does not resolve
// (its channel then keeps failing its probes, and it is retried at the next resolve).
std::vector<std::string> ResolveAll(const std::string& name) {
  std::string host, port;
  if (!SplitHostPort(name, &host, &port)) return {name};
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &result) != 0 || result == nullptr) return {name};
  std::set<std::string> out;
  for (addrinfo* a = result; a != nullptr; a = a->ai_next) {
    char ip[NI_MAXHOST];
    if (getnameinfo(a->ai_addr, a->ai_addrlen, ip, sizeof(ip), nullptr, 0, NI_NUMERICHOST) != 0) continue;
    const std::string ip_text(ip);
    out.insert(ip_text.find(':') != std::string::npos ? absl::StrCat("[", ip_text, "]:", port)
                                                      : absl::StrCat(ip_text, ":", port));
  }
  freeaddrinfo(result);
  if (out.empty()) return {name};
  return {out.begin(), out.end()};
}

// The request a decode worker runs: every token the model sees, the canonical policy and
// the generation options as the frontend resolved them.
v1::GenerateRequest ToGenerateRequest(const decode::SequenceHandoff& h) {
  v1::GenerateRequest r;
  r.mutable_token_ids()->mutable_ids()->Assign(h.tokens.begin(), h.tokens.end());
  const model::GenerationOptions& g = h.generation;
  r.mutable_sampling()->set_temperature(g.sampling.temperature);
  r.mutable_sampling()->set_top_k(g.sampling.top_k);
  r.mutable_sampling()->set_top_p(g.sampling.top_p);
  r.mutable_sampling()->set_seed(g.sampling.seed);
  r.set_max_tokens(g.max_tokens);
  for (const std::string& stop : g.stop_strings) r.add_stop(stop);
  for (int32_t id : g.stop_token_ids) r.add_stop_token_ids(id);
  r.set_ignore_eos(g.ignore_eos);
  r.set_policy(h.policy->canonical());
  r.set_session_id(h.session_id);
  r.set_request_id(h.request_id);
  r.set_tenant(h.tenant);
  return r;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ClusterBackend>> ClusterBackend::Create(const ClusterOptions& options,
                                                                      const model::ModelConfig& config) {
  if (options.decode_addresses.empty()) return absl::InvalidArgumentError("--decode: no decode worker address");
  for (const auto* list : {&options.decode_addresses, &options.prefill_addresses}) {
    for (const std::string& a : *list) {
      std::string host, port;
      if (!SplitHostPort(a, &host, &port)) {
        return absl::InvalidArgumentError(absl::StrCat("worker address '", a, "' is not host:port"));
      }
    }
  }
  std::unique_ptr<ClusterBackend> backend(new ClusterBackend(options, config));
  backend->Resolve();
  backend->ProbeAll();
  backend->probe_thread_ = std::thread([b = backend.get()] { b->ProbeLoop(); });
  backend->watch_thread_ = std::thread([b = backend.get()] { b->WatchLoop(); });
  return backend;
}

ClusterBackend::ClusterBackend(const ClusterOptions& options, const model::ModelConfig& config)
    : options_(options), config_(config) {}

ClusterBackend::~ClusterBackend() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    for (auto& call : calls_) call->context->TryCancel();
  }
  stop_cv_.notify_all();
  probe_thread_.join();
  watch_thread_.join();
  std::list<std::unique_ptr<Call>> calls;
  {
    std::lock_guard<std::mutex> lock(mu_);
    calls.swap(calls_);
  }
  for (auto& call : calls) call->thread.join();
}

void ClusterBackend::Resolve() {
  std::vector<std::pair<std::string, bool>> wanted;  // address, decode
  for (const std::string& name : options_.decode_addresses) {
    for (const std::string& a : ResolveAll(name)) wanted.emplace_back(a, true);
  }
  for (const std::string& name : options_.prefill_addresses) {
    for (const std::string& a : ResolveAll(name)) wanted.emplace_back(a, false);
  }
  std::lock_guard<std::mutex> lock(mu_);
  last_resolve_ = Clock::now();
  std::vector<std::shared_ptr<Worker>> next;
  for (const auto& [address, decode] : wanted) {
    auto same = [&](const std::shared_ptr<Worker>& w) { return w->address == address && w->decode == decode; };
    if (std::any_of(next.begin(), next.end(), same)) continue;
    auto it = std::find_if(workers_.begin(), workers_.end(), same);
    if (it != workers_.end()) {
      next.push_back(*it);
      continue;
    }
    auto w = std::make_shared<Worker>();
    w->address = address;
    w->decode = decode;
    w->channel = transport::WorkerChannel(address, options_.credentials);
    if (decode) {
      w->decode_stub = v1::Decode::NewStub(w->channel);
    } else {
      w->prefill_stub = v1::Prefill::NewStub(w->channel);
    }
    w->health = grpc::health::v1::Health::NewStub(w->channel);
    LOG(INFO) << "frontend: " << (decode ? "decode" : "prefill") << " worker " << address << " joins";
    next.push_back(std::move(w));
  }
  for (const auto& w : workers_) {
    if (std::find(next.begin(), next.end(), w) == next.end()) {
      LOG(INFO) << "frontend: worker " << w->address << " left the resolved set";
    }
  }
  workers_ = std::move(next);
}

bool ClusterBackend::Probe(Worker& w, v1::WorkerInfo* info) const {
  const auto deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(options_.probe_timeout_ms);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(w.decode ? v1::Decode::service_full_name() : v1::Prefill::service_full_name());
  grpc::health::v1::HealthCheckResponse response;
  grpc::ClientContext health_context;
  health_context.set_deadline(deadline);
  if (!w.health->Check(&health_context, request, &response).ok() ||
      response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return false;
  }
  grpc::ClientContext info_context;
  info_context.set_deadline(deadline);
  const grpc::Status s = w.decode ? w.decode_stub->Info(&info_context, v1::WorkerInfoRequest(), info)
                                  : w.prefill_stub->Info(&info_context, v1::WorkerInfoRequest(), info);
  if (!s.ok()) return false;
  if (info->model_fingerprint() != config_.fingerprint || info->span_tokens() != options_.span_tokens) {
    LOG(WARNING) << "frontend: worker " << w.address << " runs model " << info->model_fingerprint() << " with S="
                 << info->span_tokens() << "; this frontend wants " << config_.fingerprint << " with S="
                 << options_.span_tokens << ": not routed to";
    return false;
  }
  return true;
}

void ClusterBackend::ProbeAll() {
  std::vector<std::shared_ptr<Worker>> workers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    workers = workers_;
  }
  for (const auto& w : workers) {
    v1::WorkerInfo info;
    const bool healthy = Probe(*w, &info);
    std::lock_guard<std::mutex> lock(mu_);
    if (healthy != w->healthy) {
      LOG(INFO) << "frontend: worker " << w->address << (healthy ? " is healthy" : " is not healthy");
    }
    w->healthy = healthy;
    if (healthy) {
      w->info = std::move(info);
      w->planned_in_flight = 0;  // its report now counts what it holds
    }
  }
}

void ClusterBackend::ProbeLoop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (stop_cv_.wait_for(lock, std::chrono::milliseconds(options_.probe_interval_ms), [&] { return stop_; })) {
        return;
      }
    }
    bool resolve;
    {
      std::lock_guard<std::mutex> lock(mu_);
      resolve = Clock::now() - last_resolve_ >= std::chrono::milliseconds(options_.resolve_interval_ms);
    }
    if (resolve) Resolve();
    ProbeAll();
  }
}

void ClusterBackend::WatchLoop() {
  while (true) {
    std::list<std::unique_ptr<Call>> finished;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (stop_cv_.wait_for(lock, std::chrono::milliseconds(50), [&] { return stop_; })) return;
      for (auto it = calls_.begin(); it != calls_.end();) {
        Call& call = **it;
        if (call.done.load()) {
          finished.push_back(std::move(*it));
          it = calls_.erase(it);
          continue;
        }
        if (call.handoff.sink->cancelled()) call.context->TryCancel();
        ++it;
      }
    }
    for (auto& call : finished) call->thread.join();
  }
}

void ClusterBackend::MarkUnhealthy(const std::shared_ptr<Worker>& worker, const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (worker->healthy) LOG(WARNING) << "frontend: worker " << worker->address << " marked unhealthy: " << why;
  worker->healthy = false;
}

std::shared_ptr<ClusterBackend::Worker> ClusterBackend::ChooseDecodeLocked(
    const std::vector<std::shared_ptr<Worker>>& exclude) const {
  std::shared_ptr<Worker> best;
  int64_t best_free = 0;
  for (const auto& w : workers_) {
    if (!w->decode || !w->healthy || std::find(exclude.begin(), exclude.end(), w) != exclude.end()) continue;
    const int64_t free = w->info.kv_budget_bytes() - w->info.kv_bytes_in_use() - w->planned_in_flight;
    if (best == nullptr || free > best_free || (free == best_free && w->in_flight < best->in_flight)) {
      best = w;
      best_free = free;
    }
  }
  return best;
}

void ClusterBackend::Submit(decode::SequenceHandoff handoff) {
  auto call = std::make_unique<Call>();
  const int capacity = static_cast<int>(std::min<int64_t>(
      config_.max_position_embeddings, static_cast<int64_t>(handoff.tokens.size()) + handoff.generation.max_tokens));
  call->planned = handoff.policy->PlannedBytes(capacity);
  v1::DecodeRequest request;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) {
      handoff.sink->OnError(absl::UnavailableError("the frontend is stopping"));
      return;
    }
    if (handoff.use_resident) {
      auto it = affinity_.find(handoff.session_id);
      for (const auto& w : workers_) {
        if (it != affinity_.end() && w->decode && w->healthy && w->address == it->second) call->decode = w;
      }
    }
    if (call->decode == nullptr) {
      handoff.use_resident = false;
      call->decode = ChooseDecodeLocked({});
    }
    if (call->decode == nullptr) {
      handoff.sink->OnError(absl::UnavailableError("no decode worker is healthy"));
      return;
    }
    std::vector<std::shared_ptr<Worker>> prefill;
    for (const auto& w : workers_) {
      if (!w->decode && w->healthy) prefill.push_back(w);
    }
    auto load = [](const Worker& w) {
      return w.info.running_sequences() + w.info.waiting_requests() + w.in_flight;
    };
    std::stable_sort(prefill.begin(), prefill.end(),
                     [&](const auto& a, const auto& b) { return load(*a) < load(*b); });
    for (const auto& w : prefill) request.add_prefill_workers(w->address);
    if (!prefill.empty()) {
      call->first_prefill = prefill.front();
      ++call->first_prefill->in_flight;
    }
    ++call->decode->in_flight;
    call->decode->planned_in_flight += call->planned;
  }
  *request.mutable_request() = ToGenerateRequest(handoff);
  request.set_use_resident(handoff.use_resident);
  request.set_model_fingerprint(config_.fingerprint);
  request.set_span_tokens(options_.span_tokens);
  call->handoff = std::move(handoff);
  call->context = std::make_unique<grpc::ClientContext>();
  call->context->set_deadline(proto::SystemDeadline(call->handoff.deadline));
  Call* raw = call.get();
  std::lock_guard<std::mutex> lock(mu_);
  calls_.push_back(std::move(call));
  raw->thread = std::thread([this, raw, request = std::move(request)]() mutable { RunCall(raw, std::move(request)); });
}

void ClusterBackend::ReleaseDecodeLocked(Call& call) {
  --call.decode->in_flight;
  call.decode->planned_in_flight = std::max<int64_t>(0, call.decode->planned_in_flight - call.planned);
}

void ClusterBackend::RunCall(Call* call, v1::DecodeRequest request) {
  auto sink = std::static_pointer_cast<GrpcTokenSink>(call->handoff.sink);
  std::vector<std::shared_ptr<Worker>> tried;
  bool finished = false;
  absl::Status end;
  while (true) {
    grpc::ClientContext* context;
    {
      std::lock_guard<std::mutex> lock(mu_);
      context = call->context.get();
    }
    std::unique_ptr<grpc::ClientReaderInterface<v1::GenerateResponse>> reader =
        call->decode->decode_stub->Generate(context, request);
    bool any_message = false;
    v1::GenerateResponse message;
    while (!finished && reader->Read(&message)) {
      any_message = true;
      finished = message.has_finished();
      sink->OnRemoteMessage(message);
    }
    const grpc::Status status = reader->Finish();
    if (finished) break;
    end = proto::FromGrpcStatus(status);
    if (end.ok()) end = absl::UnavailableError("the decode worker ended the stream before the sequence finished");
    if (end.code() != absl::StatusCode::kUnavailable) break;
    MarkUnhealthy(call->decode, end.ToString());
    end = absl::UnavailableError(absl::StrCat("decode worker ", call->decode->address, " failed: ", end.message()));
    // Nothing reached the client yet (the worker died or was unreachable before it
    // admitted the sequence): another decode worker can run it from the start.
    if (any_message || sink->cancelled() || decode::Clock::now() >= call->handoff.deadline) break;
    std::lock_guard<std::mutex> lock(mu_);
    tried.push_back(call->decode);
    std::shared_ptr<Worker> next = ChooseDecodeLocked(tried);
    if (next == nullptr || stop_) break;
    LOG(WARNING) << "frontend: request " << call->handoff.request_id << ": " << end.message() << "; retrying on "
                 << next->address;
    ReleaseDecodeLocked(*call);
    call->decode = next;
    ++call->decode->in_flight;
    call->decode->planned_in_flight += call->planned;
    request.set_use_resident(false);
    call->context = std::make_unique<grpc::ClientContext>();
    call->context->set_deadline(proto::SystemDeadline(call->handoff.deadline));
  }
  if (!finished) sink->OnError(end);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ReleaseDecodeLocked(*call);
    if (call->first_prefill != nullptr) --call->first_prefill->in_flight;
    if (!call->handoff.session_id.empty()) {
      if (finished) {
        affinity_[call->handoff.session_id] = call->decode->address;
      } else {
        affinity_.erase(call->handoff.session_id);
      }
    }
  }
  call->done.store(true);
}

bool ClusterBackend::HasResident(const std::string& session_id, const std::string&) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = affinity_.find(session_id);
  if (it == affinity_.end()) return false;
  for (const auto& w : workers_) {
    if (w->decode && w->healthy && w->address == it->second) return true;
  }
  return false;
}

void ClusterBackend::DropResident(const std::string& session_id) {
  std::vector<std::shared_ptr<Worker>> decode;
  {
    std::lock_guard<std::mutex> lock(mu_);
    affinity_.erase(session_id);
    for (const auto& w : workers_) {
      if (w->decode && w->healthy) decode.push_back(w);
    }
  }
  v1::DropSessionRequest request;
  request.set_session_id(session_id);
  for (const auto& w : decode) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(options_.probe_timeout_ms));
    v1::DropSessionResponse response;
    (void)w->decode_stub->DropSession(&context, request, &response);  // best effort: the worker may be gone
  }
}

BackendStats ClusterBackend::Stats() const {
  BackendStats s;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& w : workers_) {
    s.store += transport::FromProto(w->info.store_counters());
    const v1::TransportCounters& t = w->info.transport();
    s.transfer_bytes_sent += t.span_bytes_sent() + t.tail_bytes_sent();
    s.transfer_bytes_received += t.span_bytes_received() + t.tail_bytes_received();
    if (!w->decode) {
      s.waiting += w->info.waiting_requests();
      continue;
    }
    if (!w->healthy) continue;
    s.kv_budget_bytes += w->info.kv_budget_bytes();
    s.kv_bytes_in_use += w->info.kv_bytes_in_use();
    s.running += w->info.running_sequences();
    s.waiting += w->info.waiting_requests();
    s.max_queue += w->info.max_queue();
    s.resident_sessions += w->info.resident_sessions();
  }
  return s;
}

std::vector<WorkerStatus> ClusterBackend::Workers() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<WorkerStatus> out;
  for (const auto& w : workers_) out.push_back({w->address, w->decode, w->healthy, w->info});
  return out;
}

}  // namespace kvspan::frontend
