// PrefillWorker: the prefill side of a request. It computes the request's span key chain,
// looks the prefix up in the cache store, Gets and parses the hit spans (SpanStore), and
// hands the sequence with its loaded spans to a decode worker through a SpanTransport.
// In `kvspan serve` the uncached rest of the prompt is computed inside the decode worker's
// batch (chunked prefill mixed with decode, span-aligned: decode/decode_worker.h), so that
// one process runs one Forward per step on its cores; docs/architecture.md says why.
// Store trouble never fails a request: it only means more to compute.
// Thread-safe; store I/O runs on the worker's own threads, never on the caller's.
#ifndef KVSPAN_PREFILL_PREFILL_WORKER_H_
#define KVSPAN_PREFILL_PREFILL_WORKER_H_

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "decode/handoff.h"
#include "prefill/store_router.h"
#include "transport/span_transport.h"

namespace kvspan::prefill {

class PrefillWorker {
 public:
  // `transport` is borrowed and must outlive the worker. `num_threads` >= 1 loads run at once.
  PrefillWorker(std::shared_ptr<StoreRouter> stores, transport::SpanTransport* transport, int num_threads);
  // Finishes the queued loads first.
  ~PrefillWorker();

  // Loads the cached prefix of handoff.tokens (unless handoff.use_resident), then sends the
  // handoff. Errors of the transport go to handoff.sink->OnError.
  void Submit(decode::SequenceHandoff handoff);
  // Requests queued here (not yet sent).
  int pending() const;

 private:
  void Run();
  void Load(decode::SequenceHandoff& handoff);

  const std::shared_ptr<StoreRouter> stores_;
  transport::SpanTransport* const transport_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<decode::SequenceHandoff> queue_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace kvspan::prefill

#endif  // KVSPAN_PREFILL_PREFILL_WORKER_H_
