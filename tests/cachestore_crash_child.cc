// Helper process of cachestore_crash_test: opens the store in argv[1] and Puts values
// with known content (TestKey(i), Payload(i, size(i))) for i = argv[2], argv[2]+1, ...
// forever, writing "i\n" to stdout (unbuffered) after each Put returns OK — that line
// is the acknowledgement. The parent SIGKILLs it somewhere in the stream.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "cachestore/internal/test_util.h"
#include "cachestore/key_scheme.h"
#include "cachestore/store.h"
#include "tests/cachestore_crash_values.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s DIR FIRST_INDEX\n", argv[0]);
    return 2;
  }
  kvspan::cachestore::StoreOptions options;
  options.path = argv[1];
  absl::StatusOr<std::unique_ptr<kvspan::cachestore::CacheStore>> store =
      kvspan::cachestore::CacheStore::Open(options);
  if (!store.ok()) {
    std::fprintf(stderr, "open: %s\n", std::string(store.status().message()).c_str());
    return 1;
  }
  for (uint32_t i = static_cast<uint32_t>(std::atoi(argv[2]));; ++i) {
    const std::string value = kvspan::tests::CrashValue(i);
    absl::Status s = (*store)->Put(kvspan::tests::CrashKey(i), value,
                                   kvspan::cachestore::ValueChecksum(value));
    if (!s.ok()) {
      std::fprintf(stderr, "put %u: %s\n", i, std::string(s.message()).c_str());
      return 1;
    }
    const std::string ack = std::to_string(i) + "\n";
    if (write(STDOUT_FILENO, ack.data(), ack.size()) != static_cast<ssize_t>(ack.size())) return 1;
  }
}
