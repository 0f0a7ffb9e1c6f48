// DeviceSpanLink: the device-to-device half of a pull whose spans travel over NCCL
// (transport/README.md, "NCCL span delivery"). The gRPC stream still carries the header,
// each span's index, byte size and span digest (kernels/span_digest.h), and the tail blob;
// the span bytes go from the prefill worker's GPU to the decode worker's over the link.
// The protocol (order, sizes, the digest comparison, DataLoss) lives in prefill_client.cc
// and prefill_service.cc; a link only moves bytes and digests them on its device, so the
// protocol is tested over a loopback link (gpu/loopback_channel.h) where NCCL cannot run.
//
// Implementations: gpu/device_span_link.h (device memory, the digest kernel and a byte
// channel: NCCL in a CUDA build, the loopback stand-in in the emulated one). This header
// includes nothing of CUDA.
#ifndef KVSPAN_TRANSPORT_DEVICE_SPAN_LINK_H_
#define KVSPAN_TRANSPORT_DEVICE_SPAN_LINK_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvspan::transport {

// One side of one pull's link. Not thread-safe: one pull's thread drives it. Destroying a
// link mid-transfer ends the peer's pending Receive / SendStaged with an error (the link's
// communicator is aborted), never a hang.
class DeviceSpanLink {
 public:
  virtual ~DeviceSpanLink() = default;

  // Sender. Copies `span_bytes` to this side's device and computes their span digest there;
  // returns it (8 bytes back to the host). The bytes stay staged until SendStaged.
  virtual absl::StatusOr<uint64_t> Stage(absl::string_view span_bytes) = 0;
  // Sends the staged bytes to the peer; returns once they have left this side. Errors:
  // Unavailable (the peer or the link failed), DeadlineExceeded (no completion within the
  // link's timeout), FailedPrecondition (nothing staged).
  virtual absl::Status SendStaged() = 0;

  // Receiver. Receives exactly `size_bytes` (> 0) into this side's device memory and
  // returns the span digest of what arrived, computed on the device (8 bytes back to the
  // host). Errors as SendStaged's.
  virtual absl::StatusOr<uint64_t> Receive(int64_t size_bytes) = 0;
  // The last received bytes copied to the host. NOTE: a host copy of the whole span: the
  // decode worker's caches start from host kvcache::Span today (transport/README.md).
  virtual absl::StatusOr<std::string> CopyReceivedToHost() = 0;
};

enum class DeviceLinkRole { kSender = 0, kReceiver = 1 };  // the ranks of the pair

// Makes the links of one worker (one device). Thread-safe.
class DeviceSpanLinkFactory {
 public:
  virtual ~DeviceSpanLinkFactory() = default;
  // A fresh rendezvous id for a new pair (an ncclUniqueId's bytes), made by the receiver
  // and sent to the sender in its PrefillRequest.
  virtual absl::StatusOr<std::string> NewPairId() = 0;
  // Joins pair `pair_id` in `role`; returns when both sides have joined. Errors:
  // DeadlineExceeded when the peer has not joined by `deadline`, InvalidArgument for an id
  // this factory cannot read, Unavailable or Internal for the link's own errors.
  virtual absl::StatusOr<std::unique_ptr<DeviceSpanLink>> Join(const std::string& pair_id, DeviceLinkRole role,
                                                                std::chrono::steady_clock::time_point deadline) = 0;
};

}  // namespace kvspan::transport

#endif  // KVSPAN_TRANSPORT_DEVICE_SPAN_LINK_H_
