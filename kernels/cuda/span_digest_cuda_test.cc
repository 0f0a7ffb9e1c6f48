// span_digest_cuda.h against xxHash's own XXH3_64bits and SpanDigestRef (kernels/span_digest.h)
// on fresh random bytes: built twice, on the GPU (kernels_cuda_test; skips without a device)
// and in the CPU emulator (kernels_cuda_emulated_test, which runs everywhere). Digests are
// exact, so every comparison is equality.
#include "kernels/cuda/span_digest_cuda.h"

#include <cstdint>
#include <random>
#include <vector>

#include <xxhash.h>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/span_digest.h"

namespace kvspan::kernels {
namespace {

using ::kvspan::testing::StatusIs;

std::vector<uint8_t> RandomBytes(int64_t n, std::mt19937_64& rng) {
  std::vector<uint8_t> out(static_cast<size_t>(n));
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

// The device digest of host bytes: uploaded, digested, 8 bytes copied back.
uint64_t DeviceDigest(const std::vector<uint8_t>& bytes) {
  const int64_t n = static_cast<int64_t>(bytes.size());
  DeviceBuffer data, scratch, out;
  EXPECT_OK(data.Reserve(n + 1));
  if (n > 0) {
    EXPECT_OK(data.CopyFromHost(bytes.data(), n));
  }
  EXPECT_OK(scratch.Reserve(SpanDigestChunks(n) * 8 + 8));
  EXPECT_OK(out.Reserve(8));
  EXPECT_OK(SpanDigestCuda({.data = data.as<uint8_t>(), .size_bytes = n, .chunk_digests = scratch.as<uint64_t>(),
                            .digest = out.as<uint64_t>()},
                           nullptr));
  uint64_t digest = 0;
  EXPECT_OK(out.CopyToHost(&digest, 8));
  return digest;
}

TEST(Xxh3CudaTest, MatchesXxHashOnEveryLengthClassAndAlignment) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  std::mt19937_64 rng(13);
  // Every length through the short (0-16), mid (17-128, 129-240) and first long cases,
  // then block edges of the long case (1024-byte blocks, 64-byte stripes) and beyond.
  std::vector<int64_t> lengths;
  for (int64_t n = 0; n <= 300; ++n) lengths.push_back(n);
  for (int64_t n : {511, 512, 513, 1023, 1024, 1025, 1088, 2047, 2048, 2049, 4095, 4096, 4097, 10000, 65537}) {
    lengths.push_back(n);
  }
  const std::vector<uint8_t> pool = RandomBytes(65537 + 8, rng);
  DeviceBuffer data, out;
  ASSERT_OK(data.Assign(pool.data(), static_cast<int64_t>(pool.size())));
  ASSERT_OK(out.Reserve(8));
  for (int64_t n : lengths) {
    const int64_t offset = static_cast<int64_t>(rng() % 8);  // unaligned starts too
    ASSERT_OK(Xxh3Cuda(data.as<uint8_t>() + offset, n, out.as<uint64_t>(), nullptr));
    uint64_t got = 0;
    ASSERT_OK(out.CopyToHost(&got, 8));
    ASSERT_EQ(got, XXH3_64bits(pool.data() + offset, static_cast<size_t>(n))) << "length " << n << " at offset "
                                                                              << offset;
  }
}

TEST(SpanDigestCudaTest, EqualsTheReferenceAndSeesEveryByte) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  std::mt19937_64 rng(std::random_device{}());
  constexpr int64_t C = kSpanDigestChunkBytes;
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{17}, C - 1, C, C + 1, 2 * C, 3 * C + 17, 33 * C - 5,
                    int64_t{5} * 1000 * 1000 + 3}) {
    std::vector<uint8_t> bytes = RandomBytes(n, rng);
    const uint64_t ref = SpanDigestRef(bytes.data(), n);
    ASSERT_EQ(DeviceDigest(bytes), ref) << n << " bytes";
    if (n == 0) {
      EXPECT_EQ(ref, XXH3_64bits(nullptr, 0));
      continue;
    }
    // One flipped bit anywhere (first, last, and a random byte) changes the digest.
    for (int64_t at : {int64_t{0}, n - 1, static_cast<int64_t>(rng() % n)}) {
      std::vector<uint8_t> mutated = bytes;
      mutated[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
      const uint64_t mutated_ref = SpanDigestRef(mutated.data(), n);
      EXPECT_NE(mutated_ref, ref) << n << " bytes, byte " << at;
      EXPECT_EQ(DeviceDigest(mutated), mutated_ref) << n << " bytes, byte " << at;
    }
  }
}

TEST(SpanDigestCudaTest, ReferenceIsXxh3OfTheChunkDigests) {
  // The definition in span_digest.h, spelled out once for two chunks and a tail.
  std::mt19937_64 rng(7);
  constexpr int64_t C = kSpanDigestChunkBytes;
  const std::vector<uint8_t> bytes = RandomBytes(2 * C + 100, rng);
  const uint64_t d[3] = {XXH3_64bits(bytes.data(), C), XXH3_64bits(bytes.data() + C, C),
                         XXH3_64bits(bytes.data() + 2 * C, 100)};
  EXPECT_EQ(SpanDigestRef(bytes.data(), static_cast<int64_t>(bytes.size())), XXH3_64bits(d, sizeof(d)));  // x86: LE
}

TEST(SpanDigestCudaTest, BadArgumentsAreInvalidArgument) {
  DeviceBuffer out;
  if (CudaDeviceCount() > 0) {
    ASSERT_OK(out.Reserve(8));
  }
  EXPECT_THAT(SpanDigestCuda({.size_bytes = -1, .digest = out.as<uint64_t>()}, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SpanDigestCuda({.size_bytes = 10, .digest = out.as<uint64_t>()}, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SpanDigestCuda({.size_bytes = 0}, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Xxh3Cuda(nullptr, 5, out.as<uint64_t>(), nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace kvspan::kernels
