#include "gpu/nccl_channel.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace kvspan::gpu {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::microseconds kPollInterval(100);

absl::Status NcclStatus(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return absl::OkStatus();
  std::string message = absl::StrCat("NCCL ", what, ": ", ncclGetErrorString(r));
  if (const char* last = ncclGetLastError(nullptr); last != nullptr && last[0] != '\0') {
    absl::StrAppend(&message, " (", last, ")");
  }
  if (r == ncclInvalidArgument || r == ncclInvalidUsage) return absl::InvalidArgumentError(message);
  return absl::UnavailableError(message);  // a system / remote / internal error: the link is down
}

// Polls the communicator's state until it leaves ncclInProgress or `deadline` passes.
absl::Status WaitComm(ncclComm_t comm, ChannelDeadline deadline, const char* what) {
  while (true) {
    ncclResult_t state = ncclSuccess;
    if (ncclResult_t r = ncclCommGetAsyncError(comm, &state); r != ncclSuccess) return NcclStatus(r, what);
    if (state != ncclInProgress) return NcclStatus(state, what);
    if (Clock::now() >= deadline) return absl::DeadlineExceededError(absl::StrCat("NCCL ", what, ": timed out"));
    std::this_thread::sleep_for(kPollInterval);
  }
}

class NcclChannel final : public DeviceByteChannel {
 public:
  NcclChannel(ncclComm_t comm, cudaStream_t stream, int rank) : comm_(comm), stream_(stream), rank_(rank) {}
  ~NcclChannel() override {
    if (!broken_) {
      // Flush and release; a peer that is gone makes this fail or time out: then abort.
      const ncclResult_t r = ncclCommFinalize(comm_);
      if ((r != ncclSuccess && r != ncclInProgress) ||
          !WaitComm(comm_, Clock::now() + std::chrono::seconds(5), "finalize").ok()) {
        broken_ = true;
      }
    }
    if (broken_) {
      ncclCommAbort(comm_);
    } else {
      ncclCommDestroy(comm_);
    }
    cudaStreamDestroy(stream_);
  }

  absl::Status Send(const void* device_data, int64_t size_bytes, ChannelDeadline deadline) override {
    return Transfer(device_data, nullptr, size_bytes, deadline);
  }
  absl::Status Recv(void* device_buffer, int64_t size_bytes, ChannelDeadline deadline) override {
    return Transfer(nullptr, device_buffer, size_bytes, deadline);
  }

 private:
  absl::Status Transfer(const void* send, void* recv, int64_t size_bytes, ChannelDeadline deadline) {
    if (broken_) return absl::UnavailableError("NCCL channel: aborted by an earlier error");
    const int peer = 1 - rank_;
    const ncclResult_t issued =
        send != nullptr ? ncclSend(send, static_cast<size_t>(size_bytes), ncclUint8, peer, comm_, stream_)
                        : ncclRecv(recv, static_cast<size_t>(size_bytes), ncclUint8, peer, comm_, stream_);
    absl::Status status = issued == ncclInProgress ? WaitComm(comm_, deadline, send != nullptr ? "send" : "recv")
                                                   : NcclStatus(issued, send != nullptr ? "send" : "recv");
    // The transfer runs on the stream: poll it and the communicator under the deadline.
    while (status.ok()) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) break;
      if (q != cudaErrorNotReady) {
        status = absl::UnavailableError(absl::StrCat("NCCL transfer: CUDA ", cudaGetErrorString(q)));
        break;
      }
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm_, &state);
      if (state != ncclSuccess && state != ncclInProgress) {
        status = NcclStatus(state, "transfer");
        break;
      }
      if (Clock::now() >= deadline) {
        status = absl::DeadlineExceededError(
            absl::StrCat("NCCL ", send != nullptr ? "send" : "recv", " of ", size_bytes, " bytes: timed out"));
        break;
      }
      std::this_thread::sleep_for(kPollInterval);
    }
    if (!status.ok()) {
      broken_ = true;
      LOG(WARNING) << "NCCL channel (rank " << rank_ << "): " << status << "; aborting the communicator";
    }
    return status;
  }

  const ncclComm_t comm_;
  const cudaStream_t stream_;
  const int rank_;
  bool broken_ = false;
};

}  // namespace

absl::StatusOr<std::string> NcclChannelFactory::NewPairId() {
  ncclUniqueId id;
  if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) return NcclStatus(r, "get unique id");
  return std::string(id.internal, sizeof(id.internal));
}

absl::StatusOr<std::unique_ptr<DeviceByteChannel>> NcclChannelFactory::Join(const std::string& pair_id, int rank,
                                                                             ChannelDeadline deadline) {
  ncclUniqueId id;
  if (pair_id.size() != sizeof(id.internal) || (rank != 0 && rank != 1)) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL pair: an id of ", pair_id.size(), " bytes (",
                                                   sizeof(id.internal), " expected), rank ", rank));
  }
  std::memcpy(id.internal, pair_id.data(), sizeof(id.internal));
  if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess) {
    return absl::UnavailableError(absl::StrCat("NCCL pair: CUDA device ", device_, ": ", cudaGetErrorString(e)));
  }
  cudaStream_t stream = nullptr;
  if (cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking); e != cudaSuccess) {
    return absl::UnavailableError(absl::StrCat("NCCL pair: stream: ", cudaGetErrorString(e)));
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // every wait below is ours, under the deadline
  ncclComm_t comm = nullptr;
  const ncclResult_t r = ncclCommInitRankConfig(&comm, 2, id, rank, &config);
  absl::Status status = (r == ncclSuccess || r == ncclInProgress) && comm != nullptr
                            ? WaitComm(comm, deadline, "communicator init")
                            : NcclStatus(r, "communicator init");
  if (!status.ok()) {
    if (comm != nullptr) ncclCommAbort(comm);
    cudaStreamDestroy(stream);
    return status;
  }
  return std::unique_ptr<DeviceByteChannel>(new NcclChannel(comm, stream, rank));
}

}  // namespace kvspan::gpu
