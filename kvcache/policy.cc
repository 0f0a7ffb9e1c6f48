#include "kvcache/policy.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "kvcache/internal/policy_table.h"
#include "xxhash.h"

namespace kvspan::kvcache {

using internal::ParamDef;
using internal::ParamType;
using internal::StageDef;
using internal::StageKind;

const PolicyParam& PolicyStage::Get(absl::string_view param) const {
  for (const PolicyParam& p : params) {
    if (p.name == param) return p;
  }
  std::fprintf(stderr, "PolicyStage::Get: %s has no parameter %s\n", name.c_str(),
               std::string(param).c_str());
  std::abort();
}

namespace {

absl::Status Error(size_t pos, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("policy: ", what, " at position ", pos));
}

// Shortest %.*g form that parses back to `x`.
std::string FormatNumber(double x) {
  char buf[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  return buf;
}

std::string FormatHeads(const std::vector<std::pair<int, int>>& heads) {
  if (heads.empty()) return "none";
  return absl::StrJoin(heads, ":", [](std::string* out, const std::pair<int, int>& h) {
    absl::StrAppend(out, h.first, ".", h.second);
  });
}

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

// One head "l.h" or "l h"; false when malformed.
bool ParseHead(absl::string_view s, std::pair<int, int>* head) {
  std::vector<absl::string_view> parts =
      absl::StrSplit(s, absl::ByAnyChar(". \t"), absl::SkipEmpty());
  return parts.size() == 2 && absl::SimpleAtoi(parts[0], &head->first) &&
         absl::SimpleAtoi(parts[1], &head->second) && head->first >= 0 && head->first < 1024 &&
         head->second >= 0 && head->second < 1024 &&
         parts[0].find_first_not_of("0123456789") == absl::string_view::npos &&
         parts[1].find_first_not_of("0123456789") == absl::string_view::npos;
}

absl::Status ParseHeads(absl::string_view value, size_t pos, PolicyParam* param) {
  std::vector<std::string> items;
  if (absl::ConsumePrefix(&value, "@")) {
    std::ifstream in{std::string(value)};
    if (!in) {
      return absl::NotFoundError(
          absl::StrCat("policy: cannot read retrieval-head file '", value, "' at position ", pos));
    }
    std::string line;
    while (std::getline(in, line)) {
      line.resize(std::min(line.size(), line.find('#')));
      const absl::string_view l = absl::StripAsciiWhitespace(line);
      if (!l.empty()) items.emplace_back(l);
    }
  } else if (value != "none") {
    items = absl::StrSplit(value, ':');
  }
  for (const std::string& item : items) {
    std::pair<int, int> head;
    if (!ParseHead(item, &head)) {
      return Error(pos, absl::StrCat("bad head '", item, "' in retrieval (want layer.head)"));
    }
    param->heads.push_back(head);
  }
  std::sort(param->heads.begin(), param->heads.end());
  param->heads.erase(std::unique(param->heads.begin(), param->heads.end()), param->heads.end());
  return absl::OkStatus();
}

absl::Status ParseValue(const StageDef& stage, const ParamDef& def, absl::string_view value,
                        size_t pos, PolicyParam* param) {
  const std::string where = absl::StrCat(stage.name, "(", def.name, "=", value, ")");
  switch (def.type) {
    case ParamType::kHeads:
      return ParseHeads(value, pos, param);
    case ParamType::kCodecName: {
      const StageDef* c = internal::FindStage(value);
      if (c == nullptr || c->kind != StageKind::kCodec || value == "mikv") {
        return Error(pos,
                     absl::StrCat("bad value in ", where, ": want bf16, fp16, int8, int4 or int2"));
      }
      param->text = std::string(value);
      return absl::OkStatus();
    }
    case ParamType::kInt:
    case ParamType::kReal:
      break;
  }
  double x = 0.0;
  const bool numeric =
      !value.empty() && value.find_first_not_of("0123456789.eE+-") == absl::string_view::npos;
  if (!numeric || !absl::SimpleAtod(value, &x) || !std::isfinite(x)) {
    return Error(pos, absl::StrCat("bad value in ", where, ": not a number"));
  }
  if (def.type == ParamType::kInt && x != std::floor(x)) {
    return Error(pos, absl::StrCat("bad value in ", where, ": not an integer"));
  }
  if (x > def.max || x < def.min || (def.min_open && x == def.min)) {
    return Error(pos,
                 absl::StrCat("value out of range in ", where, ": want ", def.min_open ? "(" : "[",
                              FormatNumber(def.min), ", ", FormatNumber(def.max), "]"));
  }
  param->number = x;
  return absl::OkStatus();
}

class Parser {
 public:
  explicit Parser(absl::string_view text) : text_(text) {}

  // stage := name [ "(" [ param { "," param } ] ")" ]
  absl::StatusOr<PolicyStage> ParseStage(const StageDef** def_out, size_t* start) {
    *start = pos_;
    while (pos_ < text_.size() && IsNameChar(text_[pos_])) ++pos_;
    const absl::string_view name = text_.substr(*start, pos_ - *start);
    if (name.empty()) {
      return Error(*start, pos_ < text_.size()
                               ? absl::StrCat("unexpected '", text_.substr(pos_, 1), "'")
                               : std::string("expected a name"));
    }
    const StageDef* def = internal::FindStage(name);
    if (def == nullptr) return Error(*start, absl::StrCat("unknown reducer '", name, "'"));
    *def_out = def;
    PolicyStage stage;
    stage.name = std::string(name);
    std::vector<bool> seen(def->params.size(), false);
    std::vector<PolicyParam> values(def->params.size());
    if (pos_ < text_.size() && text_[pos_] == '(') {
      ++pos_;
      for (int index = 0; pos_ < text_.size() && text_[pos_] != ')'; ++index) {
        if (index > 0) {
          if (text_[pos_] != ',') return Error(pos_, "expected ',' or ')'");
          ++pos_;
        }
        RETURN_IF_ERROR(ParseParam(*def, index, &seen, &values));
      }
      if (pos_ >= text_.size()) return Error(pos_, absl::StrCat("missing ')' after '", name, "'"));
      ++pos_;
    }
    for (size_t i = 0; i < def->params.size(); ++i) {
      const ParamDef& p = def->params[i];
      values[i].name = p.name;
      if (seen[i]) continue;
      values[i].number = p.default_number;
      if (p.type == ParamType::kCodecName) values[i].text = p.default_text;
    }
    stage.params = std::move(values);
    return stage;
  }

  size_t pos() const { return pos_; }
  bool done() const { return pos_ >= text_.size(); }
  char peek() const { return text_[pos_]; }
  void advance() { ++pos_; }

 private:
  // param := [ ident "=" ] value ; a bare value binds to the stage's first parameter.
  absl::Status ParseParam(const StageDef& def, int index, std::vector<bool>* seen,
                          std::vector<PolicyParam>* values) {
    const size_t start = pos_;
    int depth = 0;
    while (pos_ < text_.size() && !(depth == 0 && (text_[pos_] == ',' || text_[pos_] == ')'))) {
      if (text_[pos_] == '(') ++depth;
      if (text_[pos_] == ')') --depth;
      ++pos_;
    }
    absl::string_view item = text_.substr(start, pos_ - start);
    absl::string_view name, value;
    const size_t eq = item.find('=');
    if (eq == absl::string_view::npos) {
      if (index != 0 || def.params.empty()) {
        return Error(start, absl::StrCat("parameter '", item, "' of '", def.name,
                                         "' needs a name (name=value)"));
      }
      name = def.params[0].name;
      value = item;
    } else {
      name = item.substr(0, eq);
      value = item.substr(eq + 1);
    }
    for (size_t i = 0; i < def.params.size(); ++i) {
      if (name != def.params[i].name) continue;
      if ((*seen)[i]) {
        return Error(start, absl::StrCat("duplicate parameter '", name, "' of '", def.name, "'"));
      }
      (*seen)[i] = true;
      return ParseValue(def, def.params[i], value, start + (item.size() - value.size()),
                        &(*values)[i]);
    }
    std::vector<std::string> names;
    for (const ParamDef& p : def.params) names.push_back(p.name);
    return Error(start,
                 absl::StrCat("unknown parameter '", name, "' of '", def.name, "' (parameters: ",
                              names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

bool Policy::query_agnostic() const {
  for (const PolicyStage& r : reducers) {
    const StageDef* def = internal::FindStage(r.name);
    if (def != nullptr && !def->query_agnostic) return false;
  }
  return true;
}

const PolicyStage* Policy::main_reducer() const {
  for (const PolicyStage& r : reducers) {
    const StageDef* def = internal::FindStage(r.name);
    if (def != nullptr && def->kind == StageKind::kMainReducer) return &r;
  }
  return nullptr;
}

const PolicyStage* Policy::FindReducer(absl::string_view name) const {
  for (const PolicyStage& r : reducers) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

std::string Policy::ToString() const {
  auto stage_string = [](const PolicyStage& s) {
    const StageDef* def = internal::FindStage(s.name);
    std::string out = s.name;
    if (def == nullptr || def->params.empty()) return out;
    std::vector<std::string> parts;
    for (size_t i = 0; i < def->params.size() && i < s.params.size(); ++i) {
      const PolicyParam& p = s.params[i];
      switch (def->params[i].type) {
        case ParamType::kHeads:
          parts.push_back(p.name + "=" + FormatHeads(p.heads));
          break;
        case ParamType::kCodecName:
          parts.push_back(p.name + "=" + p.text);
          break;
        default:
          parts.push_back(p.name + "=" + FormatNumber(p.number));
          break;
      }
    }
    return absl::StrCat(out, "(", absl::StrJoin(parts, ","), ")");
  };
  std::vector<std::string> segments;
  if (!reducers.empty()) {
    std::vector<std::string> rs;
    for (const PolicyStage& r : reducers) rs.push_back(stage_string(r));
    segments.push_back(absl::StrJoin(rs, "+"));
  }
  segments.push_back(stage_string(codec));
  if (sharing.has_value()) segments.push_back(stage_string(*sharing));
  return absl::StrJoin(segments, "/");
}

uint64_t Policy::fingerprint() const {
  const std::string s = ToString();
  return XXH3_64bits(s.data(), s.size());
}

// policy := [ reducer { "+" reducer } "/" ] codec [ "/" sharing ]
absl::StatusOr<Policy> ParsePolicy(absl::string_view text) {
  if (text.empty()) return Error(0, "empty policy (want e.g. 'keynorm(keep=0.5)/int4')");
  Parser parser(text);
  Policy policy;
  bool have_codec = false;
  char separator = 0;  // the separator before the current stage; 0 for the first
  std::vector<std::pair<int, PolicyStage>> reducers;  // (canonical rank, stage)
  while (true) {
    const StageDef* def = nullptr;
    size_t start = 0;
    ASSIGN_OR_RETURN(PolicyStage stage, parser.ParseStage(&def, &start));
    const std::string quoted = absl::StrCat("'", stage.name, "'");
    switch (def->kind) {
      case StageKind::kProtector:
      case StageKind::kMainReducer: {
        if (have_codec) return Error(start, absl::StrCat("reducer ", quoted, " after the codec"));
        if (separator == '/') return Error(start, absl::StrCat("expected a codec, found ", quoted));
        const int rank = def->kind == StageKind::kMainReducer ? 2 : stage.name == "sinks" ? 0 : 1;
        for (const auto& [other_rank, other] : reducers) {
          if (other_rank != rank) continue;
          return Error(start, rank == 2
                                  ? absl::StrCat("second main reducer ", quoted, " (already '",
                                                 other.name, "'; at most one besides sinks/window)")
                                  : absl::StrCat("duplicate reducer ", quoted));
        }
        reducers.emplace_back(rank, std::move(stage));
        break;
      }
      case StageKind::kCodec:
        if (have_codec) return Error(start, absl::StrCat("duplicate codec ", quoted));
        if (separator == '+') {
          return Error(start, absl::StrCat("codec ", quoted, " must follow '/', not '+'"));
        }
        have_codec = true;
        policy.codec = std::move(stage);
        break;
      case StageKind::kSharing:
        if (!have_codec || separator != '/') {
          return Error(start, absl::StrCat("sharing ", quoted, " must follow '<codec>/'"));
        }
        if (policy.sharing.has_value()) {
          return Error(start, absl::StrCat("duplicate sharing ", quoted));
        }
        policy.sharing = std::move(stage);
        break;
    }
    if (parser.done()) break;
    const char c = parser.peek();
    if (c != '+' && c != '/') {
      return Error(parser.pos(), absl::StrCat("trailing junk '", text.substr(parser.pos()), "'"));
    }
    if (c == '+' && def->kind != StageKind::kProtector && def->kind != StageKind::kMainReducer) {
      return Error(parser.pos(), "'+' may only join reducers");
    }
    separator = c;
    parser.advance();
  }
  if (!have_codec) {
    return Error(text.size(), "missing codec (want '/<codec>', e.g. '/bf16' or '/int4(g=32)')");
  }
  std::stable_sort(reducers.begin(), reducers.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& r : reducers) policy.reducers.push_back(std::move(r.second));
  return policy;
}

absl::Status CheckStorable(absl::string_view policy_label) {
  absl::StatusOr<Policy> policy = ParsePolicy(policy_label);
  if (!policy.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CheckStorable: span policy label does not parse: ", policy.status().message()));
  }
  if (!policy->query_agnostic()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CheckStorable: span compressed with query-aware policy '", policy_label,
        "' serves one sequence's decode side only and may not be stored"));
  }
  return absl::OkStatus();
}

}  // namespace kvspan::kvcache
