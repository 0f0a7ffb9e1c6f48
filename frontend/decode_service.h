// DecodeService: the kvspan.v1.Decode gRPC service of `kvspan decode`. One Generate call is
// one sequence from the frontend:
//   1. checks (same model and S as the frontend, tokens, policy, sampling);
//   2. a session turn whose cache is resident here continues from it (no transfer);
//   3. otherwise reserves the sequence's planned KV bytes (DecodeWorker::Reserve: flow
//      control before the transfer, so a worker without budget waits or refuses before any
//      byte moves), then pulls its prefill from the prefill workers the frontend named, in
//      order (transport/prefill_client.h: every span and the tail verified), trying the
//      next one when a pull fails — bad bytes (DataLoss) included; with none left it
//      prefills the sequence itself (decode-only fallback, counted);
//   4. admits the shipped sequence into continuous batching and streams Started, Tokens
//      and Finished back to the frontend. A session turn's spans reach the store before
//      its Finished is sent.
// The frontend's deadline and cancellation propagate to the prefill call (the child call
// is made from the server context); a frontend that cancels frees the KV here at the next
// step and stops the prefill worker's work.
// Thread-safe.
#ifndef KVSPAN_FRONTEND_DECODE_SERVICE_H_
#define KVSPAN_FRONTEND_DECODE_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/security/credentials.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "decode/decode_worker.h"
#include "kvcache/cache_policy.h"
#include "kvspan/v1/transport.grpc.pb.h"
#include "model/config.h"
#include "prefill/prefill_worker.h"
#include "prefill/store_router.h"
#include "transport/device_span_link.h"

namespace kvspan::frontend {

struct DecodeServiceOptions {
  int span_tokens = 64;
  int default_max_tokens = 128;
  // Credentials of the calls to prefill workers; null = insecure.
  std::shared_ptr<grpc::ChannelCredentials> peer_credentials;
  // Borrowed; set: the spans come GPU to GPU (`--span-transport nccl`, PullPrefill's
  // device_links); null: over gRPC.
  transport::DeviceSpanLinkFactory* device_links = nullptr;
};

class DecodeService final : public v1::Decode::Service {
 public:
  // Every pointer is borrowed and must outlive the service. `local_prefill` loads store
  // prefixes for the resident and fallback paths and hands to `decode`.
  DecodeService(const model::ModelConfig& config, decode::DecodeWorker* decode,
                prefill::PrefillWorker* local_prefill, prefill::StoreRouter* stores,
                const DecodeServiceOptions& options);

  grpc::Status Generate(grpc::ServerContext* context, const v1::DecodeRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status DropSession(grpc::ServerContext* context, const v1::DropSessionRequest* request,
                           v1::DropSessionResponse* response) override;
  grpc::Status Info(grpc::ServerContext* context, const v1::WorkerInfoRequest* request,
                    v1::WorkerInfo* response) override;
  // Serialized span and tail bytes received so far.
  int64_t bytes_received() const {
    return counters_.span_bytes_received.load() + counters_.tail_bytes_received.load();
  }

 private:
  absl::Status Run(grpc::ServerContext* context, const v1::DecodeRequest& request,
                   grpc::ServerWriter<v1::GenerateResponse>* writer);
  // Pulls the prefill of `handoff` from the listed workers; false when none delivered.
  bool PullFromPrefillWorkers(grpc::ServerContext* context, const v1::DecodeRequest& request,
                              decode::SequenceHandoff* handoff);
  std::shared_ptr<v1::Prefill::Stub> StubFor(const std::string& address);

  const model::ModelConfig config_;
  decode::DecodeWorker* const decode_;
  prefill::PrefillWorker* const local_prefill_;
  prefill::StoreRouter* const stores_;
  const DecodeServiceOptions options_;
  kvcache::PolicyCache policies_;

  std::mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<v1::Prefill::Stub>> stubs_ ABSL_GUARDED_BY(mu_);

  struct Counters {
    std::atomic<int64_t> sequences_received{0};
    std::atomic<int64_t> spans_received{0};
    std::atomic<int64_t> span_bytes_received{0};
    std::atomic<int64_t> tail_bytes_received{0};
    std::atomic<int64_t> bad_transfers{0};
    std::atomic<int64_t> failed_transfers{0};
    std::atomic<int64_t> prefill_retries{0};
    std::atomic<int64_t> local_prefills{0};
    std::atomic<int64_t> resident_turns{0};
    std::atomic<int64_t> pull_us{0};
    std::atomic<int64_t> remote_prefill_us{0};
  } counters_;
};

}  // namespace kvspan::frontend

#endif  // KVSPAN_FRONTEND_DECODE_SERVICE_H_
