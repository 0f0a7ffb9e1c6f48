// Test-only helpers for cachestore tests: a temporary directory removed on destruction,
// deterministic payloads, and keys. Not part of kvspan::cachestore.
#ifndef KVSPAN_CACHESTORE_INTERNAL_TEST_UTIL_H_
#define KVSPAN_CACHESTORE_INTERNAL_TEST_UTIL_H_

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "cachestore/span_key.h"
#include "common/temp_dir.h"
#include "gtest/gtest.h"

namespace kvspan::cachestore::testing {

using ::kvspan::testing::TempDir;  // common/temp_dir.h

// `size` bytes that depend on `seed` (a 64-bit LCG; not random-quality, just distinct).
inline std::string Payload(uint64_t seed, size_t size) {
  std::string out(size, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < size; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    out[i] = static_cast<char>(x >> 56);
  }
  return out;
}

// A key whose bytes are all `b` except the last, which is `i` (distinct for distinct i).
inline SpanKey TestKey(uint32_t i) {
  SpanKey k;
  for (int j = 0; j < 12; ++j) k.bytes[j] = 0xA5;
  for (int j = 0; j < 4; ++j) k.bytes[12 + j] = static_cast<uint8_t>(i >> (8 * (3 - j)));
  return k;
}

}  // namespace kvspan::cachestore::testing

#endif  // KVSPAN_CACHESTORE_INTERNAL_TEST_UTIL_H_
