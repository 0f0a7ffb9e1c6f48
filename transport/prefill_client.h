// The decode worker's side of the span transport: pulls one sequence's prefill from a
// prefill worker's kvspan.v1.Prefill stream and verifies every byte before anything uses
// it — the header against this worker's model, span length, policy and prompt; each span
// through ParseSpan (its checksum and format) and kvcache::CheckSpanIdentity (model, policy,
// geometry, index, in order); the tail blob through ParseTail (checksum, sizes). Bad bytes
// are DataLoss and the call is cancelled: the caller re-prefills the sequence elsewhere,
// never decodes from them.
#ifndef KVSPAN_TRANSPORT_PREFILL_CLIENT_H_
#define KVSPAN_TRANSPORT_PREFILL_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/status/statusor.h"
#include "kvcache/cache_policy.h"
#include "kvcache/span.h"
#include "kvspan/v1/transport.grpc.pb.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "transport/device_span_link.h"

namespace kvspan::transport {

// Messages between the roles may be this large (a span of a big model, a tail part).
inline constexpr int kMaxTransportMessageBytes = 64 << 20;

// A channel to a worker at `address` with kMaxTransportMessageBytes, over `credentials`
// (null: insecure).
std::shared_ptr<grpc::Channel> WorkerChannel(const std::string& address,
                                             std::shared_ptr<grpc::ChannelCredentials> credentials);

// The server side of WorkerChannel's settings, for every server the roles call: message
// sizes up to kMaxTransportMessageBytes, and the channels' keepalive pings accepted (a
// server that refuses them sends GOAWAY "too_many_pings" during a long prefill).
void ConfigureWorkerServer(grpc::ServerBuilder& builder);

struct PulledPrefill {
  std::vector<kvcache::Span> spans;  // spans 0 .. n-1 of the prompt, verified
  model::DenseRows rows;             // the dense rows after them, verified
  std::vector<float> logits;         // the last prompt token's logits
  int store_prompt_tokens = 0;       // loaded from the cache store by the prefill worker
  double prefill_ms = 0;             // the prefill worker's time
  int64_t span_bytes = 0;            // serialized span bytes received
  int64_t tail_bytes = 0;            // tail blob bytes received
  double transfer_ms = 0;            // call start to the last byte
  double tail_wait_ms = 0;           // the last span (or the header) to the end of the tail
};

// Runs `request` on `stub` under `context` (its deadline and cancellation are the
// caller's). Errors: the call's own status (Unavailable when the worker is gone,
// DeadlineExceeded, Cancelled, ResourceExhausted for an oversized message, ...);
// FailedPrecondition when the header names another model, span length or policy; DataLoss
// for a bad header geometry, a bad, missing or out-of-order span, a bad tail, or a stream
// that ends before its tail is complete.
//
// With `device_links` (borrowed for the call; null = the bytes over gRPC) the spans come
// over a device link instead (README.md, "NCCL span delivery"): the request asks for
// SPAN_DELIVERY_DEVICE with a fresh pair id, this side joins the pair as the receiver, and
// for each SpanChunk receives its size_bytes on the device and compares their device
// digest with the chunk's: a size out of range, bytes in the chunk, or a different digest
// is DataLoss ("device digest") before any byte reaches the host; then the span is copied
// to the host and checked as over gRPC. The link's own errors (the peer never joined or
// died: DeadlineExceeded, Unavailable) are returned as they are.
absl::StatusOr<PulledPrefill> PullPrefill(v1::Prefill::StubInterface& stub, grpc::ClientContext* context,
                                          const v1::PrefillRequest& request, const model::ModelConfig& config,
                                          const kvcache::CachePolicy& policy,
                                          DeviceSpanLinkFactory* device_links = nullptr);

}  // namespace kvspan::transport

#endif  // KVSPAN_TRANSPORT_PREFILL_CLIENT_H_
