// ChannelSpanLinkFactory: transport::DeviceSpanLinkFactory over one GPU: span bytes in
// DeviceBuffers, their digest by kernels::SpanDigestCuda (kernels/span_digest.h), moved by a
// DeviceByteChannel (NCCL in kvspan::gpu_link, the loopback stand-in in
// kvspan::gpu_link_emulated). Every step is synchronous on the calling thread: a link's
// Stage returns after the copy and the digest, Receive after the bytes arrived and were
// digested (only the 8-byte digest comes back to the host); CopyReceivedToHost is the one
// full host copy, for ParseSpan (docs/architecture.md, "Disaggregation"). Thread-safe; each
// link is not.
#ifndef KVSPAN_GPU_DEVICE_SPAN_LINK_H_
#define KVSPAN_GPU_DEVICE_SPAN_LINK_H_

#include <chrono>
#include <memory>
#include <string>

#include "gpu/device_byte_channel.h"
#include "transport/device_span_link.h"

namespace kvspan::gpu {

struct ChannelSpanLinkOptions {
  int device = 0;  // the CUDA device the buffers and kernels use (the worker's)
  // Each Send / Recv must complete within this long (a peer that died mid-transfer ends
  // the call with DeadlineExceeded or the channel's Unavailable, not a hang).
  std::chrono::milliseconds transfer_timeout{30000};
};

class ChannelSpanLinkFactory final : public transport::DeviceSpanLinkFactory {
 public:
  // Owns `channels`.
  ChannelSpanLinkFactory(std::unique_ptr<DeviceByteChannelFactory> channels, const ChannelSpanLinkOptions& options);
  absl::StatusOr<std::string> NewPairId() override;
  absl::StatusOr<std::unique_ptr<transport::DeviceSpanLink>> Join(
      const std::string& pair_id, transport::DeviceLinkRole role,
      std::chrono::steady_clock::time_point deadline) override;

 private:
  const std::unique_ptr<DeviceByteChannelFactory> channels_;
  const ChannelSpanLinkOptions options_;
};

}  // namespace kvspan::gpu

#endif  // KVSPAN_GPU_DEVICE_SPAN_LINK_H_
