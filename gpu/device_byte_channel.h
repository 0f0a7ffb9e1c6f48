// DeviceByteChannel: the byte movement under a DeviceSpanLink (transport/device_span_link.h)
// between the two ranks of a pair, device memory to device memory. The real one is NCCL
// (nccl_channel.h, a CUDA build with NCCL); loopback_channel.h is the in-process stand-in
// over the emulated device memory that the transport's tests use, because NCCL cannot run
// without GPUs. This header includes nothing of CUDA.
#ifndef KVSPAN_GPU_DEVICE_BYTE_CHANNEL_H_
#define KVSPAN_GPU_DEVICE_BYTE_CHANNEL_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvspan::gpu {

using ChannelDeadline = std::chrono::steady_clock::time_point;

// One rank's end of a two-rank channel. Not thread-safe. Send and Recv are matched in
// order (the n-th Send of one rank is the n-th Recv of the other) and must agree on the
// size. Destroying a channel with a transfer pending aborts it; the peer's pending call
// then ends with an error.
class DeviceByteChannel {
 public:
  virtual ~DeviceByteChannel() = default;
  // Sends [device_data, + size_bytes) to the peer; returns when the bytes have left (the
  // buffer may be reused). Errors: Unavailable (the peer went away, the communicator
  // failed: NCCL's message), DeadlineExceeded (not complete by `deadline`: the channel is
  // aborted and every later call fails).
  virtual absl::Status Send(const void* device_data, int64_t size_bytes, ChannelDeadline deadline) = 0;
  // Receives exactly size_bytes into [device_buffer, + size_bytes). Errors as Send's.
  virtual absl::Status Recv(void* device_buffer, int64_t size_bytes, ChannelDeadline deadline) = 0;
};

// Makes channels. Thread-safe.
class DeviceByteChannelFactory {
 public:
  virtual ~DeviceByteChannelFactory() = default;
  // A fresh pair id (NCCL: ncclGetUniqueId's 128 bytes).
  virtual absl::StatusOr<std::string> NewPairId() = 0;
  // Joins pair `pair_id` as `rank` (0 or 1); returns when both ranks have joined.
  // DeadlineExceeded when the peer has not by `deadline`; InvalidArgument for a bad id.
  virtual absl::StatusOr<std::unique_ptr<DeviceByteChannel>> Join(const std::string& pair_id, int rank,
                                                                  ChannelDeadline deadline) = 0;
};

}  // namespace kvspan::gpu

#endif  // KVSPAN_GPU_DEVICE_BYTE_CHANNEL_H_
