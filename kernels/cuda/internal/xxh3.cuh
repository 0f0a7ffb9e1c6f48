// XXH3-64 with seed 0 and the default secret, in device code of our own (the CUDA build
// cannot call xxHash's host library): a transcription of xxHash 0.8's scalar path
// (doc/xxhash_spec.md: the 0-16, 17-128, 129-240 byte cases and the long case of 64-byte
// stripes in 1024-byte blocks over eight accumulators). One thread hashes one buffer;
// bytes are read one at a time, so any alignment works. Tested bit for bit against
// xxHash's XXH3_64bits on every length class (span_digest_cuda_test.cc, Xxh3Cuda).
#ifndef KVSPAN_KERNELS_CUDA_INTERNAL_XXH3_CUH_
#define KVSPAN_KERNELS_CUDA_INTERNAL_XXH3_CUH_

#include <cstdint>

#include "kernels/cuda/internal/cuda_compat.h"

namespace kvspan::kernels::internal {

inline constexpr uint64_t kXxhPrime32_1 = 0x9E3779B1ULL;
inline constexpr uint64_t kXxhPrime32_2 = 0x85EBCA77ULL;
inline constexpr uint64_t kXxhPrime32_3 = 0xC2B2AE3DULL;
inline constexpr uint64_t kXxhPrime64_1 = 0x9E3779B185EBCA87ULL;
inline constexpr uint64_t kXxhPrime64_2 = 0xC2B2AE3D27D4EB4FULL;
inline constexpr uint64_t kXxhPrime64_3 = 0x165667B19E3779F9ULL;
inline constexpr uint64_t kXxhPrime64_4 = 0x85EBCA77C2B2AE63ULL;
inline constexpr uint64_t kXxhPrime64_5 = 0x27D4EB2F165667C5ULL;
inline constexpr int kXxh3SecretBytes = 192;  // the default secret's size
inline constexpr int kXxh3SecretSizeMin = 136;
inline constexpr int kXxh3StripeBytes = 64;

// The default secret (XXH3_kSecret).
KVSPAN_CONSTANT uint8_t kXxh3Secret[kXxh3SecretBytes] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

KVSPAN_DEVICE uint64_t Xxh3Read64(const uint8_t* p) {
  uint64_t v = 0;
  KVSPAN_UNROLL
  for (int i = 0; i < 8; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}
KVSPAN_DEVICE uint64_t Xxh3Read32(const uint8_t* p) {
  return uint64_t{p[0]} | (uint64_t{p[1]} << 8) | (uint64_t{p[2]} << 16) | (uint64_t{p[3]} << 24);
}
KVSPAN_DEVICE uint64_t Xxh3Rotl(uint64_t v, int r) { return (v << r) | (v >> (64 - r)); }
KVSPAN_DEVICE uint64_t Xxh3Swap64(uint64_t v) {
  uint64_t out = 0;
  KVSPAN_UNROLL
  for (int i = 0; i < 8; ++i) out |= ((v >> (8 * i)) & 0xff) << (8 * (7 - i));
  return out;
}
// The 128-bit product of a and b, its halves xor-ed.
KVSPAN_DEVICE uint64_t Xxh3Mul128Fold64(uint64_t a, uint64_t b) {
#if KVSPAN_EMULATED
  const unsigned __int128 p = static_cast<unsigned __int128>(a) * b;
  return static_cast<uint64_t>(p) ^ static_cast<uint64_t>(p >> 64);
#else
  return (a * b) ^ __umul64hi(a, b);
#endif
}
KVSPAN_DEVICE uint64_t Xxh3Avalanche(uint64_t h) {
  h ^= h >> 37;
  h *= 0x165667919E3779F9ULL;
  return h ^ (h >> 32);
}
KVSPAN_DEVICE uint64_t Xxh64Avalanche(uint64_t h) {
  h ^= h >> 33;
  h *= kXxhPrime64_2;
  h ^= h >> 29;
  h *= kXxhPrime64_3;
  return h ^ (h >> 32);
}
KVSPAN_DEVICE uint64_t Xxh3Rrmxmx(uint64_t h, uint64_t len) {
  h ^= Xxh3Rotl(h, 49) ^ Xxh3Rotl(h, 24);
  h *= 0x9FB21C651E98DF25ULL;
  h ^= (h >> 35) + len;
  h *= 0x9FB21C651E98DF25ULL;
  return h ^ (h >> 28);
}
KVSPAN_DEVICE uint64_t Xxh3Mix16(const uint8_t* in, const uint8_t* secret) {
  return Xxh3Mul128Fold64(Xxh3Read64(in) ^ Xxh3Read64(secret), Xxh3Read64(in + 8) ^ Xxh3Read64(secret + 8));
}

KVSPAN_DEVICE uint64_t Xxh3Upto16(const uint8_t* in, uint64_t len, const uint8_t* s) {
  if (len > 8) {
    const uint64_t lo = Xxh3Read64(in) ^ (Xxh3Read64(s + 24) ^ Xxh3Read64(s + 32));
    const uint64_t hi = Xxh3Read64(in + len - 8) ^ (Xxh3Read64(s + 40) ^ Xxh3Read64(s + 48));
    return Xxh3Avalanche(len + Xxh3Swap64(lo) + hi + Xxh3Mul128Fold64(lo, hi));
  }
  if (len >= 4) {
    const uint64_t in64 = Xxh3Read32(in + len - 4) + (Xxh3Read32(in) << 32);
    return Xxh3Rrmxmx(in64 ^ (Xxh3Read64(s + 8) ^ Xxh3Read64(s + 16)), len);
  }
  if (len > 0) {
    const uint64_t combined = (uint64_t{in[0]} << 16) | (uint64_t{in[len >> 1]} << 24) | uint64_t{in[len - 1]} |
                              (len << 8);
    return Xxh64Avalanche(combined ^ (Xxh3Read32(s) ^ Xxh3Read32(s + 4)));
  }
  return Xxh64Avalanche(Xxh3Read64(s + 56) ^ Xxh3Read64(s + 64));
}

KVSPAN_DEVICE uint64_t Xxh3Upto128(const uint8_t* in, uint64_t len, const uint8_t* s) {
  uint64_t acc = len * kXxhPrime64_1;
  if (len > 32) {
    if (len > 64) {
      if (len > 96) {
        acc += Xxh3Mix16(in + 48, s + 96);
        acc += Xxh3Mix16(in + len - 64, s + 112);
      }
      acc += Xxh3Mix16(in + 32, s + 64);
      acc += Xxh3Mix16(in + len - 48, s + 80);
    }
    acc += Xxh3Mix16(in + 16, s + 32);
    acc += Xxh3Mix16(in + len - 32, s + 48);
  }
  acc += Xxh3Mix16(in, s);
  acc += Xxh3Mix16(in + len - 16, s + 16);
  return Xxh3Avalanche(acc);
}

KVSPAN_DEVICE uint64_t Xxh3Upto240(const uint8_t* in, uint64_t len, const uint8_t* s) {
  uint64_t acc = len * kXxhPrime64_1;
  for (int i = 0; i < 8; ++i) acc += Xxh3Mix16(in + 16 * i, s + 16 * i);
  acc = Xxh3Avalanche(acc);
  const int rounds = static_cast<int>(len / 16);
  for (int i = 8; i < rounds; ++i) acc += Xxh3Mix16(in + 16 * i, s + 16 * (i - 8) + 3);
  acc += Xxh3Mix16(in + len - 16, s + kXxh3SecretSizeMin - 17);
  return Xxh3Avalanche(acc);
}

KVSPAN_DEVICE void Xxh3Accumulate512(uint64_t* acc, const uint8_t* in, const uint8_t* s) {
  KVSPAN_UNROLL
  for (int i = 0; i < 8; ++i) {
    const uint64_t value = Xxh3Read64(in + 8 * i);
    const uint64_t key = value ^ Xxh3Read64(s + 8 * i);
    acc[i ^ 1] += value;
    acc[i] += (key & 0xFFFFFFFFULL) * (key >> 32);
  }
}

KVSPAN_DEVICE void Xxh3Scramble(uint64_t* acc, const uint8_t* s) {
  KVSPAN_UNROLL
  for (int i = 0; i < 8; ++i) {
    uint64_t a = acc[i];
    a ^= a >> 47;
    a ^= Xxh3Read64(s + 8 * i);
    acc[i] = a * kXxhPrime32_1;
  }
}

KVSPAN_DEVICE uint64_t Xxh3Long(const uint8_t* in, uint64_t len, const uint8_t* s) {
  uint64_t acc[8] = {kXxhPrime32_3, kXxhPrime64_1, kXxhPrime64_2, kXxhPrime64_3,
                     kXxhPrime64_4, kXxhPrime32_2, kXxhPrime64_5, kXxhPrime32_1};
  constexpr uint64_t kStripesPerBlock = (kXxh3SecretBytes - kXxh3StripeBytes) / 8;  // 16
  constexpr uint64_t kBlockBytes = kXxh3StripeBytes * kStripesPerBlock;             // 1024
  const uint64_t blocks = (len - 1) / kBlockBytes;
  for (uint64_t b = 0; b < blocks; ++b) {
    for (uint64_t n = 0; n < kStripesPerBlock; ++n) {
      Xxh3Accumulate512(acc, in + b * kBlockBytes + n * kXxh3StripeBytes, s + n * 8);
    }
    Xxh3Scramble(acc, s + kXxh3SecretBytes - kXxh3StripeBytes);
  }
  const uint64_t stripes = ((len - 1) - kBlockBytes * blocks) / kXxh3StripeBytes;
  for (uint64_t n = 0; n < stripes; ++n) {
    Xxh3Accumulate512(acc, in + blocks * kBlockBytes + n * kXxh3StripeBytes, s + n * 8);
  }
  Xxh3Accumulate512(acc, in + len - kXxh3StripeBytes, s + kXxh3SecretBytes - kXxh3StripeBytes - 7);
  uint64_t result = len * kXxhPrime64_1;
  for (int i = 0; i < 4; ++i) {
    result += Xxh3Mul128Fold64(acc[2 * i] ^ Xxh3Read64(s + 11 + 16 * i), acc[2 * i + 1] ^ Xxh3Read64(s + 11 + 16 * i + 8));
  }
  return Xxh3Avalanche(result);
}

// XXH3_64bits(in, len): seed 0, the default secret.
KVSPAN_DEVICE uint64_t Xxh3_64(const uint8_t* in, uint64_t len) {
  const uint8_t* s = kXxh3Secret;
  if (len <= 16) return Xxh3Upto16(in, len, s);
  if (len <= 128) return Xxh3Upto128(in, len, s);
  if (len <= 240) return Xxh3Upto240(in, len, s);
  return Xxh3Long(in, len, s);
}

}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CUDA_INTERNAL_XXH3_CUH_
