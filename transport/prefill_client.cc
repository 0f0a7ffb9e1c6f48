#include "transport/prefill_client.h"

#include <algorithm>
#include <chrono>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kvcache/span_format.h"
#include "proto/status_conversion.h"
#include "transport/tail_blob.h"

namespace kvspan::transport {
namespace {

using Clock = std::chrono::steady_clock;
// How long the receiver waits for the prefill worker to join the device link.
constexpr std::chrono::seconds kDeviceLinkJoinTimeout(30);

double MsSince(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

absl::Status CheckHeader(const v1::PrefillHeader& h, const v1::PrefillRequest& request,
                         const model::ModelConfig& config, const kvcache::CachePolicy& policy) {
  if (h.model_fingerprint() != config.fingerprint || h.span_tokens() != policy.span_tokens() ||
      h.policy() != policy.canonical()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the prefill worker runs model \"", h.model_fingerprint(), "\" with S=", h.span_tokens(), " and policy \"",
        h.policy(), "\"; this worker wants \"", config.fingerprint, "\", S=", policy.span_tokens(), ", \"",
        policy.canonical(), "\""));
  }
  const int S = policy.span_tokens();
  const int want_spans = policy.dense() ? 0 : request.tokens_size() / S;
  if (h.num_layers() != config.num_layers || h.num_kv_heads() != config.num_kv_heads ||
      h.head_dim() != config.head_dim || h.num_tokens() != request.tokens_size() || h.num_spans() != want_spans) {
    return absl::DataLossError(absl::StrCat("the prefill header's geometry (", h.num_layers(), " layers, ",
                                            h.num_kv_heads(), " kv heads, head_dim ", h.head_dim(), ", ",
                                            h.num_tokens(), " tokens, ", h.num_spans(),
                                            " spans) is not the sequence's"));
  }
  return absl::OkStatus();
}

// Now + kDeviceLinkJoinTimeout, or the call's deadline when that comes first.
Clock::time_point JoinDeadline(const grpc::ClientContext& context) {
  const auto left = context.deadline() - std::chrono::system_clock::now();  // huge without a deadline
  if (left >= kDeviceLinkJoinTimeout) return Clock::now() + kDeviceLinkJoinTimeout;
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::max(left, decltype(left)::zero()));
}

// The serialized bytes of span chunk `c` over a device link: received on the device and
// checked there against the sender's digest (only the digest comes to the host), then
// copied to the host for ParseSpan.
absl::StatusOr<std::string> ReceiveOverLink(DeviceSpanLink& link, const v1::SpanChunk& c) {
  if (!c.span().empty() || c.size_bytes() <= 0 || c.size_bytes() > kMaxTransportMessageBytes) {
    return absl::DataLossError(absl::StrCat("span ", c.index(), " announced ", c.size_bytes(), " device bytes (and ",
                                            c.span().size(), " inline): not a device delivery"));
  }
  ASSIGN_OR_RETURN(const uint64_t digest, link.Receive(c.size_bytes()));
  if (digest != c.digest()) {
    return absl::DataLossError(absl::StrCat("span ", c.index(), ": the device digest of the ", c.size_bytes(),
                                            " bytes received is ", absl::Hex(digest, absl::kZeroPad16),
                                            ", the sender's ", absl::Hex(c.digest(), absl::kZeroPad16)));
  }
  return link.CopyReceivedToHost();
}

}  // namespace

std::shared_ptr<grpc::Channel> WorkerChannel(const std::string& address,
                                             std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxTransportMessageBytes);
  args.SetMaxSendMessageSize(kMaxTransportMessageBytes);
  // Notice a dead peer quickly even on an idle connection.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Reconnect soon after a worker comes back.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return grpc::CreateCustomChannel(address, credentials != nullptr ? credentials : grpc::InsecureChannelCredentials(),
                                   args);
}

void ConfigureWorkerServer(grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(kMaxTransportMessageBytes);
  builder.SetMaxSendMessageSize(kMaxTransportMessageBytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
}

absl::StatusOr<PulledPrefill> PullPrefill(v1::Prefill::StubInterface& stub, grpc::ClientContext* context,
                                          const v1::PrefillRequest& request, const model::ModelConfig& config,
                                          const kvcache::CachePolicy& policy, DeviceSpanLinkFactory* device_links) {
  const Clock::time_point start = Clock::now();
  Clock::time_point last_span = start;
  v1::PrefillRequest device_request;
  if (device_links != nullptr) {
    device_request = request;
    device_request.set_span_delivery(v1::SPAN_DELIVERY_DEVICE);
    ASSIGN_OR_RETURN(*device_request.mutable_device_pair_id(), device_links->NewPairId());
  }
  std::unique_ptr<grpc::ClientReaderInterface<v1::PrefillChunk>> reader =
      stub.Prefill(context, device_links != nullptr ? device_request : request);
  PulledPrefill out;
  absl::Status bad;  // set: stop reading, cancel the call
  std::unique_ptr<DeviceSpanLink> link;  // with device_links: joined once the header is in
  bool have_header = false;
  bool complete = false;
  std::string blob;
  const int S = policy.span_tokens();
  const kvcache::SpanGeometry geometry{config.num_layers, config.num_kv_heads, config.head_dim, S};
  TailExpectation tail;
  v1::PrefillChunk chunk;
  while (bad.ok() && !complete && reader->Read(&chunk)) {
    switch (chunk.part_case()) {
      case v1::PrefillChunk::kHeader: {
        if (have_header) {
          bad = absl::DataLossError("a second prefill header");
          break;
        }
        have_header = true;
        bad = CheckHeader(chunk.header(), request, config, policy);
        if (bad.ok() && device_links != nullptr) {
          // The sender joins after writing its header (so a refusal ends the call at once).
          absl::StatusOr<std::unique_ptr<DeviceSpanLink>> joined = device_links->Join(
              device_request.device_pair_id(), DeviceLinkRole::kReceiver, JoinDeadline(*context));
          if (!joined.ok()) {
            bad = joined.status();
            break;
          }
          link = *std::move(joined);
        }
        tail.num_layers = config.num_layers;
        tail.num_kv_heads = config.num_kv_heads;
        tail.num_heads = config.num_heads;
        tail.head_dim = config.head_dim;
        tail.vocab_size = config.vocab_size;
        tail.first_position = chunk.header().num_spans() * S;
        tail.num_tokens = request.tokens_size() - tail.first_position;
        tail.with_queries = policy.keeps_queries();
        break;
      }
      case v1::PrefillChunk::kSpan: {
        const int index = chunk.span().index();
        if (!have_header || index != static_cast<int>(out.spans.size()) ||
            index >= request.tokens_size() / S || policy.dense()) {
          bad = absl::DataLossError(absl::StrCat("span ", index, " out of order (", out.spans.size(),
                                                 " received)"));
          break;
        }
        absl::StatusOr<std::string> received;
        if (link != nullptr) {
          received = ReceiveOverLink(*link, chunk.span());
          if (!received.ok()) {
            bad = received.status();
            break;
          }
        }
        const absl::string_view bytes = link != nullptr ? absl::string_view(*received) : chunk.span().span();
        absl::StatusOr<kvcache::Span> span = kvcache::ParseSpan(bytes);
        absl::Status check = span.ok() ? kvcache::CheckSpanIdentity(*span, config.fingerprint, policy.canonical(),
                                                                     geometry, index)
                                       : span.status();
        if (!check.ok()) {
          bad = absl::DataLossError(absl::StrCat("span ", index, " is bad: ", check.message()));
          break;
        }
        out.span_bytes += static_cast<int64_t>(bytes.size());
        out.spans.push_back(*std::move(span));
        last_span = Clock::now();
        break;
      }
      case v1::PrefillChunk::kTail: {
        if (!have_header || static_cast<int>(out.spans.size()) * S != tail.first_position) {
          bad = absl::DataLossError(absl::StrCat("the tail came after ", out.spans.size(), " spans"));
          break;
        }
        blob += chunk.tail().data();
        if (static_cast<int64_t>(blob.size()) > TailBytes(tail)) {
          bad = absl::DataLossError(absl::StrCat("the tail blob exceeds its ", TailBytes(tail), " bytes"));
          break;
        }
        if (!chunk.tail().last()) break;
        absl::StatusOr<TailContents> parsed = ParseTail(blob, tail);
        if (!parsed.ok()) {
          bad = parsed.status();
          break;
        }
        out.rows = std::move(parsed->rows);
        out.logits = std::move(parsed->logits);
        out.store_prompt_tokens = chunk.tail().store_prompt_tokens();
        out.prefill_ms = chunk.tail().prefill_ms();
        out.tail_bytes = static_cast<int64_t>(blob.size());
        complete = true;
        break;
      }
      default:
        bad = absl::DataLossError("an empty prefill chunk");
    }
  }
  if (!bad.ok()) context->TryCancel();  // stop the sender: nothing it sends is used
  link.reset();  // aborts a transfer the sender still has pending
  const grpc::Status finished = reader->Finish();
  if (!bad.ok()) return bad;
  if (complete) {
    out.transfer_ms = MsSince(start);
    out.tail_wait_ms = std::chrono::duration<double, std::milli>(Clock::now() - last_span).count();
    return out;
  }
  if (!finished.ok()) return proto::FromGrpcStatus(finished);
  return absl::DataLossError(absl::StrCat("the prefill stream ended after ", out.spans.size(),
                                          " spans without its tail"));
}

}  // namespace kvspan::transport
