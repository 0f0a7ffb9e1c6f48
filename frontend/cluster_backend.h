// ClusterBackend: the ServingBackend of `kvspan frontend` — remote decode and prefill
// workers over gRPC (docs/architecture.md, "Disaggregation").
//
// Discovery: each configured address is host:port; a host name may resolve to several
// records (a Kubernetes headless service) and is resolved again every resolve interval,
// so workers that appear join and workers that vanish leave.
// Health: a probe thread calls grpc.health.v1 Check and kvspan.v1 Info on every worker at
// each probe interval; a worker that fails either, answers NOT_SERVING, or runs another
// model or span length is not routed to until it passes again. A call that fails with
// Unavailable marks its worker unhealthy at once.
// Routing: a session turn goes to the decode worker that ran the session's last turn while
// it is healthy (its cache may still be resident there), else to the healthy decode worker
// with the most free KV budget (its last reported use plus what this frontend sent it
// since); the decode worker pulls the prefill from the healthy prefill workers in order of
// load (fewest running and waiting first).
// Calls: each sequence is one Decode.Generate stream read by a thread of its own, which
// turns its messages into the sink's events (GrpcTokenSink::OnRemoteMessage). A watcher
// cancels the calls whose client went away; the deadline travels with the call. A decode
// worker that dies ends its streams with Unavailable as soon as the connection breaks; a
// call it had not yet answered (nothing reached the client) is retried on another one.
// REQUIRES: every handoff's sink is a GrpcTokenSink (ServingService makes them).
// Thread-safe.
#ifndef KVSPAN_FRONTEND_CLUSTER_BACKEND_H_
#define KVSPAN_FRONTEND_CLUSTER_BACKEND_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/security/credentials.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "frontend/serving_backend.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "kvspan/v1/transport.grpc.pb.h"
#include "model/config.h"

namespace kvspan::frontend {

struct ClusterOptions {
  std::vector<std::string> prefill_addresses;  // host:port each
  std::vector<std::string> decode_addresses;   // host:port each; at least one
  int span_tokens = 64;
  // Credentials of the calls to the workers; null = insecure.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  int64_t probe_interval_ms = 200;
  int64_t probe_timeout_ms = 1000;
  int64_t resolve_interval_ms = 2000;
};

// One worker as the frontend sees it (tests, ServerInfo, metrics).
struct WorkerStatus {
  std::string address;  // resolved ip:port
  bool decode = false;  // else prefill
  bool healthy = false;
  v1::WorkerInfo info;  // its last Info
};

class ClusterBackend final : public ServingBackend {
 public:
  // InvalidArgument for no decode address or an address without a port. Starts the probe
  // and watcher threads and probes every worker once before returning.
  static absl::StatusOr<std::unique_ptr<ClusterBackend>> Create(const ClusterOptions& options,
                                                                const model::ModelConfig& config);
  // Cancels the calls in flight and joins every thread.
  ~ClusterBackend() override;

  void Submit(decode::SequenceHandoff handoff) override;
  // True while the session's last decode worker is healthy (its cache may be resident).
  bool HasResident(const std::string& session_id, const std::string& policy) override;
  void DropResident(const std::string& session_id) override;
  // Nothing to do here: a decode worker flushes a session turn's spans before it reports
  // the turn finished.
  void FlushStore(const kvcache::CachePolicy&, const std::string&) override {}
  BackendStats Stats() const override;

  std::vector<WorkerStatus> Workers() const;

 private:
  struct Worker {
    std::string address;
    bool decode = false;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::Decode::Stub> decode_stub;
    std::unique_ptr<v1::Prefill::Stub> prefill_stub;
    std::unique_ptr<grpc::health::v1::Health::Stub> health;
    // Guarded by the backend's mu_.
    bool healthy = false;
    v1::WorkerInfo info;
    int in_flight = 0;             // calls this frontend has on it (or led by it, prefill)
    int64_t planned_in_flight = 0; // KV bytes of those calls not yet in its reported use
  };
  struct Call {
    decode::SequenceHandoff handoff;
    std::shared_ptr<Worker> decode;
    std::shared_ptr<Worker> first_prefill;  // null when none was healthy
    int64_t planned = 0;
    // The current attempt's context (replaced, under mu_, when the call is retried on
    // another decode worker).
    std::unique_ptr<grpc::ClientContext> context;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  ClusterBackend(const ClusterOptions& options, const model::ModelConfig& config);
  void Resolve();
  void ProbeAll();
  // Check + Info on one worker; returns whether it may be routed to, and its Info.
  bool Probe(Worker& worker, v1::WorkerInfo* info) const;
  void ProbeLoop();
  void WatchLoop();
  // The call's thread: streams from its decode worker into the sink; a worker that fails
  // before it sent anything is replaced by another healthy one.
  void RunCall(Call* call, v1::DecodeRequest request);
  // Takes `call` off its decode worker's in-flight counts.
  void ReleaseDecodeLocked(Call& call) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The healthy decode worker with the most free KV budget, not in `exclude`; null if none.
  std::shared_ptr<Worker> ChooseDecodeLocked(const std::vector<std::shared_ptr<Worker>>& exclude) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MarkUnhealthy(const std::shared_ptr<Worker>& worker, const std::string& why);

  const ClusterOptions options_;
  const model::ModelConfig config_;

  mutable std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::shared_ptr<Worker>> workers_ ABSL_GUARDED_BY(mu_);
  // A session's last decode worker (its address).
  absl::flat_hash_map<std::string, std::string> affinity_ ABSL_GUARDED_BY(mu_);
  std::list<std::unique_ptr<Call>> calls_ ABSL_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point last_resolve_ ABSL_GUARDED_BY(mu_);
  std::thread probe_thread_;
  std::thread watch_thread_;
};

}  // namespace kvspan::frontend

#endif  // KVSPAN_FRONTEND_CLUSTER_BACKEND_H_
