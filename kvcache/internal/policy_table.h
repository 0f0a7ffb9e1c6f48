// The table of policy names and their parameters (types, ranges, defaults), shared by the
// parser and the printer. Private to kvcache/.
#ifndef KVSPAN_KVCACHE_INTERNAL_POLICY_TABLE_H_
#define KVSPAN_KVCACHE_INTERNAL_POLICY_TABLE_H_

#include <vector>

#include "absl/strings/string_view.h"

namespace kvspan::kvcache::internal {

enum class StageKind { kProtector, kMainReducer, kCodec, kSharing };
enum class ParamType { kInt, kReal, kCodecName, kHeads };

struct ParamDef {
  const char* name;
  ParamType type;
  double min = 0.0;       // numbers: inclusive lower bound unless min_open
  double max = 0.0;       // numbers: inclusive upper bound
  bool min_open = false;  // numbers: lower bound excluded
  double default_number = 0.0;
  const char* default_text = "";  // codec names and head sets
};

struct StageDef {
  const char* name;
  StageKind kind;
  bool query_agnostic;
  std::vector<ParamDef> params;
};

// nullptr for an unknown name.
const StageDef* FindStage(absl::string_view name);
// Every name, for error messages ("one of: ...").
const std::vector<StageDef>& AllStages();

}  // namespace kvspan::kvcache::internal

#endif  // KVSPAN_KVCACHE_INTERNAL_POLICY_TABLE_H_
