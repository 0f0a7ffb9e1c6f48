// The values cachestore_crash_child writes and cachestore_crash_test checks: key i holds
// CrashValue(i), sized between 1 KiB and ~2 MiB so that a SIGKILL often lands inside
// the WAL write of a large value.
#ifndef KVSPAN_TESTS_CACHESTORE_CRASH_VALUES_H_
#define KVSPAN_TESTS_CACHESTORE_CRASH_VALUES_H_

#include <cstdint>
#include <string>

#include "cachestore/internal/test_util.h"
#include "cachestore/span_key.h"

namespace kvspan::tests {

inline cachestore::SpanKey CrashKey(uint32_t i) { return cachestore::testing::TestKey(i); }

inline std::string CrashValue(uint32_t i) {
  const size_t sizes[] = {1024, 200 * 1024, 2 * 1024 * 1024 + 7, 64 * 1024};
  return cachestore::testing::Payload(i, sizes[i % 4]);
}

}  // namespace kvspan::tests

#endif  // KVSPAN_TESTS_CACHESTORE_CRASH_VALUES_H_
