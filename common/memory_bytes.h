// Heap bytes held by standard containers, measured from what they allocated (capacity),
// for memory accounting such as model::KvCache::memory_bytes(). Header-only, pure,
// thread-safe.
#ifndef KVSPAN_COMMON_MEMORY_BYTES_H_
#define KVSPAN_COMMON_MEMORY_BYTES_H_

#include <cstdint>
#include <string>
#include <vector>

namespace kvspan {

// The bytes of `v`'s element buffer: capacity() * sizeof(T). Heap owned by the elements
// themselves (a vector of vectors) is not included: add it per element.
template <typename T>
int64_t CapacityBytes(const std::vector<T>& v) {
  return static_cast<int64_t>(v.capacity()) * static_cast<int64_t>(sizeof(T));
}

// The heap bytes of `s`: 0 while it fits the small-string buffer inside the object
// (capacity no larger than an empty string's), else capacity() + 1 (the terminator).
inline int64_t StringHeapBytes(const std::string& s) {
  return s.capacity() > std::string().capacity() ? static_cast<int64_t>(s.capacity()) + 1 : 0;
}

}  // namespace kvspan

#endif  // KVSPAN_COMMON_MEMORY_BYTES_H_
