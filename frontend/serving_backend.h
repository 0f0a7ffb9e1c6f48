// ServingBackend: what the client-facing service (ServingService) runs its sequences on.
// `kvspan serve` has LocalBackend (its own prefill and decode workers, in process);
// `kvspan frontend` has ClusterBackend (frontend/cluster_backend.h: remote decode and
// prefill workers over gRPC). The client cannot tell them apart: the service, its
// validation, sessions and the HTTP routes are the same code over either.
// Implementations are thread-safe.
#ifndef KVSPAN_FRONTEND_SERVING_BACKEND_H_
#define KVSPAN_FRONTEND_SERVING_BACKEND_H_

#include <cstdint>
#include <functional>
#include <utility>
#include <string>

#include "decode/decode_worker.h"
#include "decode/handoff.h"
#include "prefill/prefill_worker.h"
#include "prefill/span_store.h"
#include "prefill/store_router.h"

namespace kvspan::frontend {

// The gauges and totals ServerInfo and /metrics report.
struct BackendStats {
  int64_t kv_budget_bytes = 0;  // over every decode worker
  int64_t kv_bytes_in_use = 0;
  int running = 0;
  int waiting = 0;
  int max_queue = 0;
  int resident_sessions = 0;
  int64_t preemptions = 0;
  prefill::SpanStoreStats store;  // the span stores of every worker
  // Span transport bytes (serialized spans + tail blobs) this node's workers sent and
  // received between roles; 0 in `kvspan serve` (the in-process transport moves nothing).
  int64_t transfer_bytes_sent = 0;
  int64_t transfer_bytes_received = 0;
};

class ServingBackend {
 public:
  virtual ~ServingBackend() = default;
  // Runs `handoff` (validated by the service); its sink hears everything from now on,
  // errors included.
  virtual void Submit(decode::SequenceHandoff handoff) = 0;
  // Whether `session_id`'s cache under `policy` (canonical) is resident on a decode worker.
  virtual bool HasResident(const std::string& session_id, const std::string& policy) = 0;
  // Frees `session_id`'s resident cache wherever it is.
  virtual void DropResident(const std::string& session_id) = 0;
  // Waits for the span Puts queued so far where the backend can (a session turn's spans
  // reach the store before the turn is acknowledged).
  virtual void FlushStore(const kvcache::CachePolicy& policy, const std::string& tenant) = 0;
  virtual BackendStats Stats() const = 0;
};

// The in-process workers of `kvspan serve`. Every pointer is borrowed and must outlive it.
class LocalBackend final : public ServingBackend {
 public:
  LocalBackend(decode::DecodeWorker* decode, prefill::PrefillWorker* prefill, prefill::StoreRouter* stores)
      : decode_(decode), prefill_(prefill), stores_(stores) {}
  void Submit(decode::SequenceHandoff handoff) override { prefill_->Submit(std::move(handoff)); }
  bool HasResident(const std::string& session_id, const std::string& policy) override {
    return decode_->ResidentTokens(session_id, policy) > 0;
  }
  void DropResident(const std::string& session_id) override { decode_->DropResident(session_id); }
  void FlushStore(const kvcache::CachePolicy& policy, const std::string& tenant) override {
    if (auto store = stores_->For(policy, tenant); store != nullptr) store->Flush();
  }
  BackendStats Stats() const override;
  // The transfer byte counts of this node's transport service (a prefill or decode role),
  // as {sent, received}. Call before Stats is first called.
  void SetTransferSource(std::function<std::pair<int64_t, int64_t>()> source) { transfer_ = std::move(source); }

 private:
  std::function<std::pair<int64_t, int64_t>()> transfer_;
  decode::DecodeWorker* const decode_;
  prefill::PrefillWorker* const prefill_;
  prefill::StoreRouter* const stores_;
};

}  // namespace kvspan::frontend

#endif  // KVSPAN_FRONTEND_SERVING_BACKEND_H_
