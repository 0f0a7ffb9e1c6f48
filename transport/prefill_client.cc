#include "transport/prefill_client.h"

#include <chrono>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/strings/str_cat.h"
#include "kvcache/span_format.h"
#include "proto/status_conversion.h"
#include "transport/tail_blob.h"

namespace kvspan::transport {
namespace {

using Clock = std::chrono::steady_clock;

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
                                          const kvcache::CachePolicy& policy) {
  const Clock::time_point start = Clock::now();
  Clock::time_point last_span = start;
  std::unique_ptr<grpc::ClientReaderInterface<v1::PrefillChunk>> reader = stub.Prefill(context, request);
  PulledPrefill out;
  absl::Status bad;  // set: stop reading, cancel the call
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
        absl::StatusOr<kvcache::Span> span = kvcache::ParseSpan(chunk.span().span());
        absl::Status check = span.ok() ? kvcache::CheckSpanIdentity(*span, config.fingerprint, policy.canonical(),
                                                                     geometry, index)
                                       : span.status();
        if (!check.ok()) {
          bad = absl::DataLossError(absl::StrCat("span ", index, " is bad: ", check.message()));
          break;
        }
        out.span_bytes += static_cast<int64_t>(chunk.span().span().size());
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
