// Compression policies: the policy string (grammar in kvcache/README.md), its parser, its
// canonical form and fingerprint.
//
// A policy is: token reducers (optional) / one codec / cross-layer sharing (optional), e.g.
//   sinks(n=4)+window(n=16)/int4(g=32)     keynorm(keep=0.25)/int8
//   kvmerger(sim=0.9,sigma=1)/bf16         mikv(hi=int8,lo=int2,keep_hi=0.2,g=32)
//   razor(sinks=4,window=8,retrieval=0.1:2.0)/bf16    sentinel-analogue(k=4)/bf16
//   int4(g=32)/minicache(from=0.5)         bf16/pod(group=2,sinks=4,window=16)
// A sharing stage (kvcache/sharing.h) composes only with a codec-only policy (CompressSpan
// returns InvalidArgument otherwise).
// Reducers: at most one each of `sinks` and `window` (protect tokens, sinks_window.h) and at
// most one other ("main") reducer; with reducers but no main reducer, unprotected tokens
// are dropped; with no reducer at all every token is kept.
//
// Policy is a value type (thread-compatible); ParsePolicy is thread-safe.
#ifndef KVSPAN_KVCACHE_POLICY_H_
#define KVSPAN_KVCACHE_POLICY_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"

namespace kvspan::kvcache {

// One parameter with its parsed value. Numbers (int or real) are in `number`; codec-name
// parameters (mikv hi/lo) in `text`; head sets (razor retrieval) in `heads`, sorted,
// as (layer, kv_head) pairs.
struct PolicyParam {
  std::string name;
  double number = 0.0;
  std::string text;
  std::vector<std::pair<int, int>> heads;
  friend bool operator==(const PolicyParam&, const PolicyParam&) = default;
};

// One call of the grammar: a reducer, a codec or a sharing method, with EVERY parameter
// of that name (defaults filled in), in the order of the parameter table.
struct PolicyStage {
  std::string name;
  std::vector<PolicyParam> params;

  // The parameter called `param`. REQUIRES: `name` has such a parameter (programmer
  // error otherwise: aborts).
  const PolicyParam& Get(absl::string_view param) const;
  double Number(absl::string_view param) const { return Get(param).number; }
  friend bool operator==(const PolicyStage&, const PolicyStage&) = default;
};

struct Policy {
  std::vector<PolicyStage> reducers;    // canonical order: sinks, window, main reducer
  PolicyStage codec;                    // bf16 | fp16 | int8 | int4 | int2 | mikv
  absl::optional<PolicyStage> sharing;  // minicache | pod (kvcache/sharing.h)

  // False when a reducer looks at queries (snapkv): such a policy may compress spans on
  // the decode side only and must never write to the cache store.
  bool query_agnostic() const;
  // Canonical form: every parameter named, in table order, shortest round-tripping
  // numbers, no spaces. ParsePolicy(p.ToString()) == p.
  std::string ToString() const;
  // Stable 64-bit hash (XXH3-64, seed 0) of ToString(); part of cache-store keys.
  uint64_t fingerprint() const;
  // The main (non sinks/window) reducer, or nullptr.
  const PolicyStage* main_reducer() const;
  // The sinks / window stage, or nullptr.
  const PolicyStage* FindReducer(absl::string_view name) const;

  friend bool operator==(const Policy&, const Policy&) = default;
};

// Parses a policy string. InvalidArgument with a message naming the offending token and
// its 0-based byte position for: an empty string, an unknown name, a bad parameter name,
// value or range, a duplicate parameter, a missing codec, a duplicate codec, misplaced
// stages (a reducer after the codec, a codec after '+'), two main reducers, a duplicate
// sinks/window, trailing junk. `retrieval=@path` reads the head set from a file (one
// "layer.kv_head" or "layer kv_head" per line, '#' comments): NotFound when it cannot be
// read, InvalidArgument when a line is malformed. The canonical form inlines the set.
absl::StatusOr<Policy> ParsePolicy(absl::string_view text);

// OK when a span labelled with `policy_label` (its header's policy string) may be written to
// the cache store: the label parses and the policy is query_agnostic(). FailedPrecondition
// for a query-aware policy (snapkv: such spans serve one sequence's decode side only);
// InvalidArgument for a label that does not parse. Every writer to the store calls it.
absl::Status CheckStorable(absl::string_view policy_label);

}  // namespace kvspan::kvcache

#endif  // KVSPAN_KVCACHE_POLICY_H_
