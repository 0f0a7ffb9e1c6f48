// The NCCL span link between two GPUs of this machine: rank 0 (the prefill side) on device
// 0, rank 1 (the decode side) on device 1, one thread each, the pair made from an
// ncclUniqueId as the gRPC handshake does. Skips with fewer than two CUDA devices: NCCL
// refuses two ranks on one GPU ("Duplicate GPU detected"), so a one-GPU machine cannot run
// it either. The protocol over this link is tested in transport_test over the loopback
// stand-in (gpu/loopback_channel.h); this test is what that stand-in stands in for.
#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <thread>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gpu/device_span_link.h"
#include "gpu/nccl_channel.h"
#include "gtest/gtest.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/span_digest.h"

namespace kvspan::gpu {
namespace {

using ::kvspan::testing::StatusIs;
using Clock = std::chrono::steady_clock;
using transport::DeviceLinkRole;

std::string RandomBytes(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(static_cast<size_t>(n), '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

class NcclChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kernels::CudaDeviceCount() < 2) {
      GTEST_SKIP() << "needs two CUDA devices (NCCL refuses two ranks on one GPU); found "
                   << kernels::CudaDeviceCount();
    }
  }
  ChannelSpanLinkFactory sender_{std::make_unique<NcclChannelFactory>(0),
                                 {.device = 0, .transfer_timeout = std::chrono::seconds(10)}};
  ChannelSpanLinkFactory receiver_{std::make_unique<NcclChannelFactory>(1),
                                   {.device = 1, .transfer_timeout = std::chrono::seconds(10)}};
};

TEST_F(NcclChannelTest, SpansCrossBetweenTwoGpusWithEqualDigests) {
  ASSERT_OK_AND_ASSIGN(const std::string id, receiver_.NewPairId());
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(60);
  const int64_t sizes[] = {1, kernels::kSpanDigestChunkBytes + 1, int64_t{5} << 20};
  std::thread prefill_side([&] {
    ASSERT_OK_AND_ASSIGN(auto link, sender_.Join(id, DeviceLinkRole::kSender, deadline));
    for (int64_t n : sizes) {
      const std::string bytes = RandomBytes(n, static_cast<uint64_t>(n));
      ASSERT_OK_AND_ASSIGN(uint64_t digest, link->Stage(bytes));
      EXPECT_EQ(digest, kernels::SpanDigestRef(bytes.data(), n));
      ASSERT_OK(link->SendStaged());
    }
  });
  ASSERT_OK_AND_ASSIGN(auto link, receiver_.Join(id, DeviceLinkRole::kReceiver, deadline));
  for (int64_t n : sizes) {
    const std::string bytes = RandomBytes(n, static_cast<uint64_t>(n));
    ASSERT_OK_AND_ASSIGN(uint64_t digest, link->Receive(n));
    EXPECT_EQ(digest, kernels::SpanDigestRef(bytes.data(), n)) << n;
    ASSERT_OK_AND_ASSIGN(std::string received, link->CopyReceivedToHost());
    EXPECT_EQ(received, bytes) << n;
  }
  prefill_side.join();
}

TEST_F(NcclChannelTest, APeerThatNeverJoinsIsDeadlineExceeded) {
  ASSERT_OK_AND_ASSIGN(const std::string id, receiver_.NewPairId());
  EXPECT_THAT(receiver_.Join(id, DeviceLinkRole::kReceiver, Clock::now() + std::chrono::seconds(3)).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST_F(NcclChannelTest, APeerThatLeavesMidTransferEndsTheReceiveWithAnError) {
  ASSERT_OK_AND_ASSIGN(const std::string id, receiver_.NewPairId());
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(60);
  std::thread prefill_side([&] {
    ASSERT_OK_AND_ASSIGN(auto link, sender_.Join(id, DeviceLinkRole::kSender, deadline));
    // Leaves without sending: its communicator is finalized or aborted.
  });
  ASSERT_OK_AND_ASSIGN(auto link, receiver_.Join(id, DeviceLinkRole::kReceiver, deadline));
  const absl::Status received = link->Receive(4096).status();
  EXPECT_THAT(received, ::testing::AnyOf(StatusIs(absl::StatusCode::kDeadlineExceeded),
                                         StatusIs(absl::StatusCode::kUnavailable)));
  prefill_side.join();
}

TEST(NcclChannelIdTest, BadPairIdsAreInvalidArgument) {
  NcclChannelFactory channels(0);
  EXPECT_THAT(channels.Join("short", 0, Clock::now()).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(channels.Join(std::string(128, 'x'), 2, Clock::now()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace kvspan::gpu
