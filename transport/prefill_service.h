// PrefillService: the kvspan.v1.Prefill gRPC service of `kvspan prefill`. Each call is one
// sequence: the worker's PrefillWorker loads its cached prefix from the store, its
// DecodeWorker runs it prefill-only (continuous batching of prefills, span-aligned chunks,
// every new span put to the store), and the handler streams the header, each span in its
// serialized, checksummed form as soon as the model has compressed it (so the transfer of
// span i overlaps the prefill of span i + 1), then the tail blob (transport/tail_blob.h).
// A client that cancels (or whose deadline passes) stops the prefill at its next step.
// Thread-safe.
#ifndef KVSPAN_TRANSPORT_PREFILL_SERVICE_H_
#define KVSPAN_TRANSPORT_PREFILL_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "decode/decode_worker.h"
#include "kvcache/cache_policy.h"
#include "kvspan/v1/transport.grpc.pb.h"
#include "model/config.h"
#include "prefill/prefill_worker.h"
#include "prefill/store_router.h"
#include "transport/device_span_link.h"

namespace kvspan::transport {

struct PrefillServiceOptions {
  int span_tokens = 64;
  // The tail blob goes out in parts of at most this many bytes.
  int tail_part_bytes = 1 << 20;
  // Test hooks (`kvspan prefill --test-corrupt-span`, `--test-stall-after-spans`):
  // flips one byte of the n-th span this process sends (1-based; 0 = never), so a
  // receiver's check is exercised over a real socket; stops sending (holding the stream
  // open) once this many spans went out in total, so a test can kill the worker
  // mid-transfer (0 = never).
  int test_corrupt_span = 0;
  int test_stall_after_spans = 0;
  // The device links of SPAN_DELIVERY_DEVICE requests (README.md, "NCCL span delivery"),
  // borrowed; null: such a request is FailedPrecondition (a CPU worker, or no NCCL).
  DeviceSpanLinkFactory* device_links = nullptr;
};

class PrefillService final : public v1::Prefill::Service {
 public:
  // Every pointer is borrowed and must outlive the service. `worker` runs the prefills;
  // `prefill` loads the store prefix and hands to it; `stores` are reported by Info.
  PrefillService(const model::ModelConfig& config, prefill::PrefillWorker* prefill, decode::DecodeWorker* worker,
                 prefill::StoreRouter* stores, const PrefillServiceOptions& options);

  grpc::Status Prefill(grpc::ServerContext* context, const v1::PrefillRequest* request,
                       grpc::ServerWriter<v1::PrefillChunk>* writer) override;
  grpc::Status Info(grpc::ServerContext* context, const v1::WorkerInfoRequest* request,
                    v1::WorkerInfo* response) override;
  // Serialized span and tail bytes sent so far.
  int64_t bytes_sent() const { return span_bytes_sent_.load() + tail_bytes_sent_.load(); }

 private:
  absl::Status Run(grpc::ServerContext* context, const v1::PrefillRequest& request,
                   grpc::ServerWriter<v1::PrefillChunk>* writer);

  const model::ModelConfig config_;
  prefill::PrefillWorker* const prefill_;
  decode::DecodeWorker* const worker_;
  prefill::StoreRouter* const stores_;
  const PrefillServiceOptions options_;
  kvcache::PolicyCache policies_;
  std::atomic<int64_t> spans_total_{0};  // spans this process sent (the test hooks count them)
  std::atomic<int64_t> sequences_sent_{0};
  std::atomic<int64_t> span_bytes_sent_{0};
  std::atomic<int64_t> tail_bytes_sent_{0};
  std::atomic<int> in_flight_{0};
};

}  // namespace kvspan::transport

#endif  // KVSPAN_TRANSPORT_PREFILL_SERVICE_H_
