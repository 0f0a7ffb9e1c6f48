#include "kvcache/internal/policy_table.h"

namespace kvspan::kvcache::internal {
namespace {

constexpr double kMaxTokens = 65536;

ParamDef Int(const char* name, double min, double max, double def) {
  return ParamDef{name, ParamType::kInt, min, max, false, def, ""};
}
ParamDef Ratio(const char* name, double def, bool zero_ok) {
  return ParamDef{name, ParamType::kReal, 0.0, 1.0, !zero_ok, def, ""};
}
ParamDef GroupSize() { return Int("g", 1, 65536, 32); }

}  // namespace

const std::vector<StageDef>& AllStages() {
  static const auto* const kStages = new std::vector<StageDef>{
      {"sinks", StageKind::kProtector, true, {Int("n", 0, kMaxTokens, 4)}},
      {"window", StageKind::kProtector, true, {Int("n", 0, kMaxTokens, 16)}},
      {"keynorm", StageKind::kMainReducer, true, {Ratio("keep", 0.5, false)}},
      {"expected-attn",
       StageKind::kMainReducer,
       true,
       {Ratio("keep", 0.5, false), Int("future", 1, kMaxTokens, 512)}},
      {"snapkv",
       StageKind::kMainReducer,
       false,
       {Ratio("keep", 0.5, false), Int("obs", 1, kMaxTokens, 16), Int("pool", 1, 255, 7)}},
      {"kvmerger",
       StageKind::kMainReducer,
       true,
       {ParamDef{"sim", ParamType::kReal, -1.0, 1.0, false, 0.9, ""},
        ParamDef{"sigma", ParamType::kReal, 0.0, 1e6, true, 1.0, ""}}},
      {"razor",
       StageKind::kMainReducer,
       true,
       {Int("sinks", 0, kMaxTokens, 4), Int("window", 0, kMaxTokens, 8),
        ParamDef{"retrieval", ParamType::kHeads, 0, 0, false, 0, "none"}}},
      {"sentinel-analogue", StageKind::kMainReducer, true, {Int("k", 1, kMaxTokens, 4)}},
      {"sentinel", StageKind::kMainReducer, true, {}},
      {"bf16", StageKind::kCodec, true, {}},
      {"fp16", StageKind::kCodec, true, {}},
      {"int8", StageKind::kCodec, true, {GroupSize()}},
      {"int4", StageKind::kCodec, true, {GroupSize()}},
      {"int2", StageKind::kCodec, true, {GroupSize()}},
      {"mikv",
       StageKind::kCodec,
       true,
       {ParamDef{"hi", ParamType::kCodecName, 0, 0, false, 0, "int8"},
        ParamDef{"lo", ParamType::kCodecName, 0, 0, false, 0, "int2"}, Ratio("keep_hi", 0.2, true),
        GroupSize()}},
      {"minicache",
       StageKind::kSharing,
       true,
       {Ratio("from", 0.5, true), Ratio("t", 0.5, true), Ratio("retain", 0.05, true)}},
      {"pod",
       StageKind::kSharing,
       true,
       {Ratio("from", 0.0, true), Int("group", 1, 1024, 2), Int("sinks", 0, kMaxTokens, 4),
        Int("window", 0, kMaxTokens, 16)}},
  };
  return *kStages;
}

const StageDef* FindStage(absl::string_view name) {
  for (const StageDef& s : AllStages()) {
    if (name == s.name) return &s;
  }
  return nullptr;
}

}  // namespace kvspan::kvcache::internal
