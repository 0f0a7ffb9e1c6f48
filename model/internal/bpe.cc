#include "model/internal/bpe.h"

#include <queue>

namespace kvspan::model::internal {
namespace {

// Pre-tokens up to this many symbols use the rescan; it beats the heap on short words.
constexpr size_t kMaxSymbolsForScan = 48;

}  // namespace

void BpeMerges::Add(int32_t left, int32_t right, int32_t rank, int32_t merged) {
  rules_[Key(left, right)] = Rule{rank, merged};
}

const BpeMerges::Rule* BpeMerges::Find(int32_t left, int32_t right) const {
  auto it = rules_.find(Key(left, right));
  return it == rules_.end() ? nullptr : &it->second;
}

void BpeMerges::Apply(std::vector<int32_t>* symbols) const {
  if (symbols->size() <= kMaxSymbolsForScan) {
    ApplyByScan(symbols);
  } else {
    ApplyByHeap(symbols);
  }
}

void BpeMerges::ApplyByScan(std::vector<int32_t>* symbols) const {
  std::vector<int32_t>& s = *symbols;
  while (s.size() > 1) {
    const Rule* best = nullptr;
    size_t best_pos = 0;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const Rule* r = Find(s[i], s[i + 1]);
      if (r != nullptr && (best == nullptr || r->rank < best->rank)) {
        best = r;
        best_pos = i;
      }
    }
    if (best == nullptr) break;
    s[best_pos] = best->merged;
    s.erase(s.begin() + best_pos + 1);
  }
}

void BpeMerges::ApplyByHeap(std::vector<int32_t>* symbols) const {
  std::vector<int32_t>& s = *symbols;
  const int n = static_cast<int>(s.size());
  if (n < 2) return;
  // Symbols stay at their original index; merged-away ones are marked dead and unlinked.
  std::vector<int> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int pos;
    int32_t left;   // the ids the rule was found for: a stale entry no longer matches them
    int32_t right;
    int32_t merged;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push = [&](int pos) {
    if (pos < 0 || next[pos] < 0) return;
    const Rule* r = Find(s[pos], s[next[pos]]);
    if (r != nullptr) queue.push({r->rank, pos, s[pos], s[next[pos]], r->merged});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    if (!alive[c.pos] || next[c.pos] < 0 || s[c.pos] != c.left || s[next[c.pos]] != c.right) {
      continue;
    }
    const int right = next[c.pos];
    s[c.pos] = c.merged;
    alive[right] = false;
    next[c.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  size_t out = 0;
  for (int i = 0; i < n; ++i) {
    if (alive[i]) s[out++] = s[i];
  }
  s.resize(out);
}

}  // namespace kvspan::model::internal
