#include "gpu/device_span_link.h"

#include <utility>

#include "common/status_macros.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/span_digest_cuda.h"

namespace kvspan::gpu {
namespace {

using Clock = std::chrono::steady_clock;

class ChannelSpanLink final : public transport::DeviceSpanLink {
 public:
  ChannelSpanLink(std::unique_ptr<DeviceByteChannel> channel, const ChannelSpanLinkOptions& options)
      : channel_(std::move(channel)), options_(options) {}

  absl::StatusOr<uint64_t> Stage(absl::string_view span_bytes) override {
    RETURN_IF_ERROR(kernels::CudaSetDevice(options_.device));
    const auto n = static_cast<int64_t>(span_bytes.size());
    RETURN_IF_ERROR(bytes_.Reserve(n));
    RETURN_IF_ERROR(bytes_.CopyFromHost(span_bytes.data(), n));
    staged_bytes_ = n;
    return Digest(n);
  }

  absl::Status SendStaged() override {
    if (staged_bytes_ < 0) return absl::FailedPreconditionError("DeviceSpanLink::SendStaged: nothing staged");
    const int64_t n = std::exchange(staged_bytes_, -1);
    RETURN_IF_ERROR(kernels::CudaSetDevice(options_.device));
    return channel_->Send(bytes_.data(), n, Clock::now() + options_.transfer_timeout);
  }

  absl::StatusOr<uint64_t> Receive(int64_t size_bytes) override {
    if (size_bytes <= 0) return absl::InvalidArgumentError("DeviceSpanLink::Receive: size must be positive");
    RETURN_IF_ERROR(kernels::CudaSetDevice(options_.device));
    received_bytes_ = -1;
    RETURN_IF_ERROR(bytes_.Reserve(size_bytes));
    RETURN_IF_ERROR(channel_->Recv(bytes_.data(), size_bytes, Clock::now() + options_.transfer_timeout));
    received_bytes_ = size_bytes;
    return Digest(size_bytes);
  }

  absl::StatusOr<std::string> CopyReceivedToHost() override {
    if (received_bytes_ < 0) return absl::FailedPreconditionError("DeviceSpanLink: nothing received");
    RETURN_IF_ERROR(kernels::CudaSetDevice(options_.device));
    std::string out(static_cast<size_t>(received_bytes_), '\0');
    RETURN_IF_ERROR(bytes_.CopyToHost(out.data(), received_bytes_));
    return out;
  }

 private:
  // The span digest of bytes_[0, n) on the device; 8 bytes come back.
  absl::StatusOr<uint64_t> Digest(int64_t n) {
    RETURN_IF_ERROR(scratch_.Reserve(kernels::SpanDigestChunks(n) * 8 + 8));  // + the result
    uint64_t* const chunk_digests = scratch_.as<uint64_t>() + 1;
    RETURN_IF_ERROR(kernels::SpanDigestCuda(
        {.data = bytes_.as<uint8_t>(), .size_bytes = n, .chunk_digests = chunk_digests, .digest = scratch_.as<uint64_t>()},
        nullptr));
    uint64_t digest = 0;
    RETURN_IF_ERROR(scratch_.CopyToHost(&digest, 8));  // NOTE: waits for the digest kernels
    return digest;
  }

  const std::unique_ptr<DeviceByteChannel> channel_;
  const ChannelSpanLinkOptions options_;
  kernels::DeviceBuffer bytes_;    // the span's bytes: staged to send, or received
  kernels::DeviceBuffer scratch_;  // [0]: the digest; [1 ..]: the chunk digests
  int64_t staged_bytes_ = -1;
  int64_t received_bytes_ = -1;
};

}  // namespace

ChannelSpanLinkFactory::ChannelSpanLinkFactory(std::unique_ptr<DeviceByteChannelFactory> channels,
                                               const ChannelSpanLinkOptions& options)
    : channels_(std::move(channels)), options_(options) {}

absl::StatusOr<std::string> ChannelSpanLinkFactory::NewPairId() { return channels_->NewPairId(); }

absl::StatusOr<std::unique_ptr<transport::DeviceSpanLink>> ChannelSpanLinkFactory::Join(
    const std::string& pair_id, transport::DeviceLinkRole role, std::chrono::steady_clock::time_point deadline) {
  RETURN_IF_ERROR(kernels::CudaSetDevice(options_.device));
  ASSIGN_OR_RETURN(std::unique_ptr<DeviceByteChannel> channel,
                   channels_->Join(pair_id, static_cast<int>(role), deadline));
  return std::unique_ptr<transport::DeviceSpanLink>(new ChannelSpanLink(std::move(channel), options_));
}

}  // namespace kvspan::gpu
