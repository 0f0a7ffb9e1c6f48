#include "model/internal/tokenizer_config.h"
#include "common/file_util.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace kvspan::model::internal {
namespace {

using Json = nlohmann::json;

absl::StatusOr<std::optional<Json>> ReadOptionalJson(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (absl::IsNotFound(text.status())) return std::optional<Json>();
  if (!text.ok()) return text.status();
  Json j = Json::parse(*text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::DataLossError(absl::StrCat(path, " is not valid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, " is not an object"));
  return std::optional<Json>(std::move(j));
}

// A token field of tokenizer_config.json: "<s>", {"content": "<s>", ...} or null.
absl::Status ReadTokenField(const Json& cfg, const char* key, const std::string& path,
                            std::optional<std::string>* out) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {
    *out = it->get<std::string>();
    return absl::OkStatus();
  }
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) {
      *out = content->get<std::string>();
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": \"", key, "\" must be a string or {\"content\": string}"));
}

absl::Status ReadBoolField(const Json& cfg, const char* key, const std::string& path,
                           std::optional<bool>* out) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": \"", key, "\" must be a boolean"));
  }
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::StatusOr<int32_t> ToId(const Json& v, const char* key, const std::string& path) {
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": \"", key, "\" must hold non-negative integer ids"));
  }
  return static_cast<int32_t>(v.get<int64_t>());
}

// bos_token_id / eos_token_id / pad_token_id of config.json or generation_config.json.
absl::Status ReadIdFields(const Json& cfg, const std::string& path, SpecialTokenConfig* out) {
  auto bos = cfg.find("bos_token_id");
  if (bos != cfg.end() && !bos->is_null()) {
    ASSIGN_OR_RETURN(out->bos_token_id, ToId(*bos, "bos_token_id", path));
  }
  auto pad = cfg.find("pad_token_id");
  if (pad != cfg.end() && !pad->is_null()) {
    ASSIGN_OR_RETURN(out->pad_token_id, ToId(*pad, "pad_token_id", path));
  }
  auto eos = cfg.find("eos_token_id");
  if (eos != cfg.end() && !eos->is_null()) {
    std::vector<int32_t> ids;
    if (eos->is_array()) {
      for (const Json& v : *eos) {
        ASSIGN_OR_RETURN(int32_t id, ToId(v, "eos_token_id", path));
        ids.push_back(id);
      }
    } else {
      ASSIGN_OR_RETURN(int32_t id, ToId(*eos, "eos_token_id", path));
      ids.push_back(id);
    }
    out->eos_token_ids = std::move(ids);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SpecialTokenConfig> ReadSpecialTokenConfig(const std::string& dir) {
  SpecialTokenConfig out;
  const std::string tc_path = dir + "/tokenizer_config.json";
  ASSIGN_OR_RETURN(std::optional<Json> tc, ReadOptionalJson(tc_path));
  if (tc.has_value()) {
    RETURN_IF_ERROR(ReadTokenField(*tc, "bos_token", tc_path, &out.bos_token));
    RETURN_IF_ERROR(ReadTokenField(*tc, "eos_token", tc_path, &out.eos_token));
    RETURN_IF_ERROR(ReadTokenField(*tc, "pad_token", tc_path, &out.pad_token));
    RETURN_IF_ERROR(ReadBoolField(*tc, "add_bos_token", tc_path, &out.add_bos_token));
  }
  // config.json first, then generation_config.json overrides what it sets.
  for (const char* name : {"/config.json", "/generation_config.json"}) {
    const std::string path = dir + name;
    ASSIGN_OR_RETURN(std::optional<Json> cfg, ReadOptionalJson(path));
    if (cfg.has_value()) RETURN_IF_ERROR(ReadIdFields(*cfg, path, &out));
  }
  return out;
}

}  // namespace kvspan::model::internal
