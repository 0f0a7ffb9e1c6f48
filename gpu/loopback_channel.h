// LoopbackChannelFactory: a STAND-IN for NCCL in tests, because NCCL cannot run on a
// machine without GPUs (and refuses two ranks on one GPU). The two ranks of a pair are two
// channels in this process; a Send copies the bytes into a queue toward the peer and a Recv
// takes them out, with memcpy, so it works only where "device" memory is host memory: the
// emulated build (kernels/cuda/device_memory.h, kvspan::gpu_link_emulated, which is the
// only library that has it). It keeps NCCL's contract where the transport depends on it:
// rendezvous by id with a deadline, transfers matched in order and by size, a peer that is
// destroyed ends the other side's pending and later calls with Unavailable, a deadline with
// DeadlineExceeded. A test hook flips a byte in flight.
// Thread-safe.
#ifndef KVSPAN_GPU_LOOPBACK_CHANNEL_H_
#define KVSPAN_GPU_LOOPBACK_CHANNEL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "gpu/device_byte_channel.h"

namespace kvspan::gpu {

struct LoopbackChannelOptions {
  // Test hook: flips one byte (the middle one) of the n-th transfer made through this
  // factory's channels (1-based; 0 = never), as a corrupting link would.
  int corrupt_transfer = 0;
};

class LoopbackChannelFactory final : public DeviceByteChannelFactory {
 public:
  explicit LoopbackChannelFactory(const LoopbackChannelOptions& options = {});
  ~LoopbackChannelFactory() override;
  absl::StatusOr<std::string> NewPairId() override;
  absl::StatusOr<std::unique_ptr<DeviceByteChannel>> Join(const std::string& pair_id, int rank,
                                                          ChannelDeadline deadline) override;
  // Transfers made so far (Sends).
  int transfers() const { return transfers_.load(); }

  struct Pair;  // internal

 private:
  friend class LoopbackChannel;
  const LoopbackChannelOptions options_;
  std::atomic<int> transfers_{0};
  std::atomic<int64_t> next_id_{0};
  std::mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Pair>> pairs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvspan::gpu

#endif  // KVSPAN_GPU_LOOPBACK_CHANNEL_H_
