#include "gpu/loopback_channel.h"

#include <condition_variable>
#include <cstring>
#include <deque>

#include "absl/strings/str_cat.h"

namespace kvspan::gpu {

struct LoopbackChannelFactory::Pair {
  std::mutex mu;
  std::condition_variable cv;
  bool joined[2] = {false, false};
  bool closed[2] = {false, false};  // rank r's channel is gone
  std::deque<std::string> toward[2];  // toward[r]: bytes sent to rank r, in order
};

class LoopbackChannel final : public DeviceByteChannel {
 public:
  LoopbackChannel(LoopbackChannelFactory* factory, std::shared_ptr<LoopbackChannelFactory::Pair> pair, int rank)
      : factory_(factory), pair_(std::move(pair)), rank_(rank) {}
  ~LoopbackChannel() override {
    {
      std::lock_guard<std::mutex> lock(pair_->mu);
      pair_->closed[rank_] = true;
    }
    pair_->cv.notify_all();
  }

  absl::Status Send(const void* device_data, int64_t size_bytes, ChannelDeadline) override {
    std::string bytes(static_cast<const char*>(device_data), static_cast<size_t>(size_bytes));  // emulated memory
    const int n = factory_->transfers_.fetch_add(1) + 1;
    if (factory_->options_.corrupt_transfer == n && !bytes.empty()) bytes[bytes.size() / 2] ^= 0x20;
    {
      std::lock_guard<std::mutex> lock(pair_->mu);
      if (pair_->closed[1 - rank_]) return absl::UnavailableError("loopback channel: the peer is gone");
      pair_->toward[1 - rank_].push_back(std::move(bytes));
    }
    pair_->cv.notify_all();
    return absl::OkStatus();
  }

  absl::Status Recv(void* device_buffer, int64_t size_bytes, ChannelDeadline deadline) override {
    std::unique_lock<std::mutex> lock(pair_->mu);
    std::deque<std::string>& in = pair_->toward[rank_];
    if (!pair_->cv.wait_until(lock, deadline, [&] { return !in.empty() || pair_->closed[1 - rank_]; })) {
      return absl::DeadlineExceededError("loopback channel: nothing arrived by the deadline");
    }
    if (in.empty()) return absl::UnavailableError("loopback channel: the peer is gone");
    std::string bytes = std::move(in.front());
    in.pop_front();
    if (static_cast<int64_t>(bytes.size()) != size_bytes) {
      // NCCL leaves a size mismatch undefined; the transport never makes one (the receiver
      // takes the size from the sender's SpanChunk).
      return absl::InternalError(
          absl::StrCat("loopback channel: ", bytes.size(), " bytes sent, ", size_bytes, " received"));
    }
    std::memcpy(device_buffer, bytes.data(), bytes.size());
    return absl::OkStatus();
  }

 private:
  LoopbackChannelFactory* const factory_;
  const std::shared_ptr<LoopbackChannelFactory::Pair> pair_;
  const int rank_;
};

LoopbackChannelFactory::LoopbackChannelFactory(const LoopbackChannelOptions& options) : options_(options) {}
LoopbackChannelFactory::~LoopbackChannelFactory() = default;

absl::StatusOr<std::string> LoopbackChannelFactory::NewPairId() {
  return absl::StrCat("loopback-", next_id_.fetch_add(1));
}

absl::StatusOr<std::unique_ptr<DeviceByteChannel>> LoopbackChannelFactory::Join(const std::string& pair_id, int rank,
                                                                                ChannelDeadline deadline) {
  if (rank != 0 && rank != 1) return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " of a pair"));
  std::shared_ptr<Pair> pair;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::shared_ptr<Pair>& slot = pairs_[pair_id];
    if (slot == nullptr) slot = std::make_shared<Pair>();
    pair = slot;
  }
  std::unique_lock<std::mutex> lock(pair->mu);
  if (pair->joined[rank]) return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " of ", pair_id, " joined twice"));
  pair->joined[rank] = true;
  pair->cv.notify_all();
  if (!pair->cv.wait_until(lock, deadline, [&] { return pair->joined[1 - rank]; })) {
    pair->closed[rank] = true;
    return absl::DeadlineExceededError(absl::StrCat("loopback channel ", pair_id, ": the peer did not join"));
  }
  if (pair->joined[0] && pair->joined[1]) {  // both in: the id is spent
    lock.unlock();
    std::lock_guard<std::mutex> factory_lock(mu_);
    pairs_.erase(pair_id);
  }
  return std::unique_ptr<DeviceByteChannel>(new LoopbackChannel(this, std::move(pair), rank));
}

}  // namespace kvspan::gpu
