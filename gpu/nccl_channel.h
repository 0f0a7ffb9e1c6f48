// NcclChannelFactory: DeviceByteChannel over NCCL (a CUDA build with NCCL only: target
// kvspan::gpu_link). Each Join makes a two-rank communicator from the pair id, which is an
// ncclUniqueId's 128 bytes (NewPairId: ncclGetUniqueId), with ncclCommInitRankConfig in
// NCCL's non-blocking mode (config.blocking = 0), so that every wait is a poll of
// ncclCommGetAsyncError (and cudaStreamQuery for a transfer) under a deadline: a peer that
// never joins or dies mid-transfer ends the call with DeadlineExceeded or NCCL's error as
// Unavailable, and the communicator is aborted (ncclCommAbort), never a hang. Send / Recv
// are ncclSend / ncclRecv of bytes (ncclUint8) on the channel's own stream.
// NOTE: NCCL refuses two ranks on one GPU ("Duplicate GPU detected"): the two ranks of a
// pair must be on different GPUs (two workers' devices), so one GPU cannot test it.
// This header includes nothing of CUDA or NCCL. Thread-safe; each channel is not.
#ifndef KVSPAN_GPU_NCCL_CHANNEL_H_
#define KVSPAN_GPU_NCCL_CHANNEL_H_

#include <memory>
#include <string>

#include "gpu/device_byte_channel.h"

namespace kvspan::gpu {

class NcclChannelFactory final : public DeviceByteChannelFactory {
 public:
  // Channels on CUDA device `device` (made current on the joining thread).
  explicit NcclChannelFactory(int device) : device_(device) {}
  absl::StatusOr<std::string> NewPairId() override;
  absl::StatusOr<std::unique_ptr<DeviceByteChannel>> Join(const std::string& pair_id, int rank,
                                                          ChannelDeadline deadline) override;

 private:
  const int device_;
};

}  // namespace kvspan::gpu

#endif  // KVSPAN_GPU_NCCL_CHANNEL_H_
