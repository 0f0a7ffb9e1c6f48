// The BPE merge step: a table of merge rules (left id, right id) -> (rank, merged id) and the
// Hugging Face merge loop over one pre-token. Thread-safe after construction (const only).
#ifndef KVSPAN_MODEL_INTERNAL_BPE_H_
#define KVSPAN_MODEL_INTERNAL_BPE_H_

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace kvspan::model::internal {

class BpeMerges {
 public:
  // Adds a rule. A pair that is already present is overwritten, as Hugging Face does when a
  // file lists a pair twice (the later line wins).
  void Add(int32_t left, int32_t right, int32_t rank, int32_t merged);
  size_t size() const { return rules_.size(); }

  // Repeatedly merges the adjacent pair with the lowest rank (the leftmost one on a tie) until
  // no pair has a rule; `symbols` holds token ids and is rewritten in place.
  void Apply(std::vector<int32_t>* symbols) const;

  // The two algorithms behind Apply, exposed for tests (they must agree on every input):
  // a rescan per merge (fast for short pre-tokens) and a heap over a linked list (O(n log n),
  // for long ones such as a metaspace segment with no pre-tokenizer).
  void ApplyByScan(std::vector<int32_t>* symbols) const;
  void ApplyByHeap(std::vector<int32_t>* symbols) const;

 private:
  struct Rule {
    int32_t rank;
    int32_t merged;
  };
  static uint64_t Key(int32_t left, int32_t right) {
    return static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 |
           static_cast<uint32_t>(right);
  }
  const Rule* Find(int32_t left, int32_t right) const;

  absl::flat_hash_map<uint64_t, Rule> rules_;
};

}  // namespace kvspan::model::internal

#endif  // KVSPAN_MODEL_INTERNAL_BPE_H_
