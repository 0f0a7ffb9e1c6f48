#include "decode/sequence.h"

#include <algorithm>

#include "cachestore/key_scheme.h"

namespace kvspan::decode {

int Sequence::NextChunk(int limit, int dense_chunk) const {
  int n = static_cast<int>(tokens.size()) - num_fed;
  if (handoff.policy->dense()) {
    n = std::min(n, dense_chunk);
  } else {
    const int S = handoff.policy->span_tokens();
    n = std::min(n, S - num_fed % S);
  }
  return std::max(0, std::min(n, limit));
}

const cachestore::SpanKey& Sequence::KeyOf(int index) {
  const int S = handoff.policy->span_tokens();
  while (static_cast<int>(keys.size()) <= index) {
    const int i = static_cast<int>(keys.size());
    const cachestore::SpanKey& previous = i == 0 ? store->namespace_key() : keys.back();
    std::vector<uint32_t> ids(tokens.begin() + int64_t{i} * S, tokens.begin() + int64_t{i + 1} * S);
    keys.push_back(cachestore::NextSpanKey(previous, ids));
  }
  return keys[index];
}

}  // namespace kvspan::decode
