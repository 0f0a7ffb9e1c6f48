// Bounds-checked little-endian reader over a borrowed byte buffer (span_format.cc).
// Every read checks the remaining length first; a failed read returns false and leaves
// the output untouched. Not thread-safe (one parser owns it).
#ifndef KVSPAN_KVCACHE_INTERNAL_BYTE_READER_H_
#define KVSPAN_KVCACHE_INTERNAL_BYTE_READER_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace kvspan::kvcache::internal {

class ByteReader {
 public:
  explicit ByteReader(absl::string_view bytes) : data_(bytes) {}

  size_t remaining() const { return data_.size() - pos_; }

  template <typename T>
  bool Read(T* out) {
    if (remaining() < sizeof(T)) return false;
    std::memcpy(out, data_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }

  // Reads `count` elements of T into `out`. REQUIRES: count was already checked against
  // a bound that keeps count * sizeof(T) from overflowing (it is re-checked here).
  template <typename T>
  bool ReadArray(size_t count, std::vector<T>* out) {
    if (count > remaining() / sizeof(T)) return false;
    out->resize(count);
    if (count > 0) std::memcpy(out->data(), data_.data() + pos_, count * sizeof(T));
    pos_ += count * sizeof(T);
    return true;
  }

  bool ReadString(size_t size, std::string* out) {
    if (size > remaining()) return false;
    out->assign(data_.data() + pos_, size);
    pos_ += size;
    return true;
  }

 private:
  absl::string_view data_;
  size_t pos_ = 0;
};

}  // namespace kvspan::kvcache::internal

#endif  // KVSPAN_KVCACHE_INTERNAL_BYTE_READER_H_
