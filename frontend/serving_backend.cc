#include "frontend/serving_backend.h"

#include <tuple>

namespace kvspan::frontend {

BackendStats LocalBackend::Stats() const {
  const decode::DecodeWorkerStats d = decode_->Stats();
  BackendStats s;
  s.kv_budget_bytes = decode_->options().kv_budget_bytes;
  s.kv_bytes_in_use = d.kv_bytes_in_use;
  s.running = d.running;
  s.waiting = d.waiting + prefill_->pending();
  s.max_queue = decode_->options().max_queue;
  s.resident_sessions = d.resident_sessions;
  s.preemptions = d.preemptions;
  s.store = stores_->TotalStats();
  if (transfer_ != nullptr) std::tie(s.transfer_bytes_sent, s.transfer_bytes_received) = transfer_();
  return s;
}

}  // namespace kvspan::frontend
