#include "model/internal/tokenizer_spec.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace kvspan::model::internal {
namespace {

using Json = nlohmann::json;

absl::Status Malformed(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", where, ": ", what));
}

absl::Status Unsupported(absl::string_view where, absl::string_view what) {
  return absl::UnimplementedError(absl::StrCat("tokenizer.json: ", where, ": ", what));
}

// Field accessors that never throw: a missing field takes the default, a field of the wrong
// type is InvalidArgument.
absl::StatusOr<std::string> GetString(const Json& obj, const char* key, absl::string_view where) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) {
    return Malformed(where, absl::StrCat("field \"", key, "\" must be a string"));
  }
  return it->get<std::string>();
}

absl::StatusOr<bool> GetBool(const Json& obj, const char* key, bool fallback,
                             absl::string_view where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    return Malformed(where, absl::StrCat("field \"", key, "\" must be a boolean"));
  }
  return it->get<bool>();
}

absl::StatusOr<std::string> GetType(const Json& obj, absl::string_view where) {
  if (!obj.is_object()) return Malformed(where, "must be an object or null");
  return GetString(obj, "type", where);
}

// The String pattern of a Replace normalizer/decoder; a Regex pattern is unsupported.
absl::StatusOr<std::string> GetStringPattern(const Json& obj, absl::string_view where) {
  auto it = obj.find("pattern");
  if (it == obj.end() || !it->is_object()) return Malformed(where, "\"pattern\" must be an object");
  if (it->contains("String")) return GetString(*it, "String", where);
  if (it->contains("Regex")) return Unsupported(where, "Regex patterns are not supported");
  return Malformed(where, "\"pattern\" needs \"String\" or \"Regex\"");
}

absl::Status ParseNormalizer(const Json& n, std::vector<NormalizerStep>* steps) {
  if (n.is_null()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string type, GetType(n, "normalizer"));
  if (type == "Sequence") {
    auto it = n.find("normalizers");
    if (it == n.end() || !it->is_array()) {
      return Malformed("normalizer", "Sequence needs a \"normalizers\" array");
    }
    for (const Json& child : *it) RETURN_IF_ERROR(ParseNormalizer(child, steps));
    return absl::OkStatus();
  }
  NormalizerStep step;
  if (type == "NFC") {
    step.kind = NormalizerStep::Kind::kNfc;
  } else if (type == "Prepend") {
    step.kind = NormalizerStep::Kind::kPrepend;
    ASSIGN_OR_RETURN(step.text, GetString(n, "prepend", "normalizer Prepend"));
  } else if (type == "Replace") {
    step.kind = NormalizerStep::Kind::kReplace;
    ASSIGN_OR_RETURN(step.text, GetStringPattern(n, "normalizer Replace"));
    ASSIGN_OR_RETURN(step.replacement, GetString(n, "content", "normalizer Replace"));
    if (step.text.empty()) return Malformed("normalizer Replace", "empty pattern");
  } else {
    return Unsupported("normalizer", absl::StrCat("type \"", type, "\" is not supported"));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

absl::StatusOr<PrependScheme> ParsePrependScheme(const Json& p, absl::string_view where) {
  auto it = p.find("prepend_scheme");
  if (it != p.end() && !it->is_null()) {
    if (!it->is_string()) return Malformed(where, "\"prepend_scheme\" must be a string");
    const std::string s = it->get<std::string>();
    if (s == "always") return PrependScheme::kAlways;
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    return Unsupported(where, absl::StrCat("prepend_scheme \"", s, "\""));
  }
  // Older files: add_prefix_space (default true) instead of prepend_scheme.
  ASSIGN_OR_RETURN(bool add_prefix_space, GetBool(p, "add_prefix_space", true, where));
  return add_prefix_space ? PrependScheme::kAlways : PrependScheme::kNever;
}

absl::Status ParsePreTokenizer(const Json& p, std::vector<PreTokenizerStep>* steps) {
  if (p.is_null()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string type, GetType(p, "pre_tokenizer"));
  if (!steps->empty() && steps->back().kind != PreTokenizerStep::Kind::kSplit) {
    return Unsupported("pre_tokenizer",
                       absl::StrCat("\"", type, "\" after ByteLevel or Metaspace"));
  }
  PreTokenizerStep step;
  if (type == "Sequence") {
    auto it = p.find("pretokenizers");
    if (it == p.end() || !it->is_array()) {
      return Malformed("pre_tokenizer", "Sequence needs a \"pretokenizers\" array");
    }
    for (const Json& child : *it) RETURN_IF_ERROR(ParsePreTokenizer(child, steps));
    return absl::OkStatus();
  } else if (type == "Split") {
    step.kind = PreTokenizerStep::Kind::kSplit;
    auto pat = p.find("pattern");
    if (pat == p.end() || !pat->is_object()) {
      return Malformed("pre_tokenizer Split", "\"pattern\" must be an object");
    }
    if (!pat->contains("Regex")) {
      return Unsupported("pre_tokenizer Split", "only Regex patterns are supported");
    }
    ASSIGN_OR_RETURN(std::string regex, GetString(*pat, "Regex", "pre_tokenizer Split"));
    std::optional<SplitPattern> known = FindSplitPattern(regex);
    if (!known.has_value()) {
      return Unsupported("pre_tokenizer Split",
                         absl::StrCat("unsupported regex \"", regex,
                                      "\" (supported: the GPT-2, Llama 3 and Qwen2 patterns)"));
    }
    step.pattern = *known;
    ASSIGN_OR_RETURN(std::string behavior, GetString(p, "behavior", "pre_tokenizer Split"));
    if (behavior != "Isolated") {
      return Unsupported("pre_tokenizer Split", absl::StrCat("behavior \"", behavior, "\""));
    }
    ASSIGN_OR_RETURN(bool invert, GetBool(p, "invert", false, "pre_tokenizer Split"));
    if (invert) return Unsupported("pre_tokenizer Split", "invert: true");
  } else if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::Kind::kByteLevel;
    ASSIGN_OR_RETURN(step.add_prefix_space,
                     GetBool(p, "add_prefix_space", false, "pre_tokenizer ByteLevel"));
    ASSIGN_OR_RETURN(step.use_regex, GetBool(p, "use_regex", true, "pre_tokenizer ByteLevel"));
  } else if (type == "Metaspace") {
    step.kind = PreTokenizerStep::Kind::kMetaspace;
    auto it = p.find("replacement");
    if (it != p.end()) {
      ASSIGN_OR_RETURN(step.replacement, GetString(p, "replacement", "pre_tokenizer Metaspace"));
    }
    ASSIGN_OR_RETURN(step.prepend_scheme, ParsePrependScheme(p, "pre_tokenizer Metaspace"));
    ASSIGN_OR_RETURN(step.split, GetBool(p, "split", true, "pre_tokenizer Metaspace"));
  } else {
    return Unsupported("pre_tokenizer", absl::StrCat("type \"", type, "\" is not supported"));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

absl::Status ParseDecoder(const Json& d, DecoderSpec* spec) {
  if (d.is_null()) return Unsupported("decoder", "null (no decoder) is not supported");
  ASSIGN_OR_RETURN(std::string type, GetType(d, "decoder"));
  if (type == "Sequence") {
    auto it = d.find("decoders");
    if (it == d.end() || !it->is_array()) {
      return Malformed("decoder", "Sequence needs a \"decoders\" array");
    }
    for (const Json& child : *it) RETURN_IF_ERROR(ParseDecoder(child, spec));
  } else if (type == "ByteLevel") {
    spec->byte_level = true;
  } else if (type == "ByteFallback") {
    spec->byte_fallback = true;
  } else if (type == "Fuse") {
    // Output is always fused (concatenated bytes).
  } else if (type == "Replace") {
    ASSIGN_OR_RETURN(std::string pattern, GetStringPattern(d, "decoder Replace"));
    ASSIGN_OR_RETURN(std::string content, GetString(d, "content", "decoder Replace"));
    if (pattern.empty()) return Malformed("decoder Replace", "empty pattern");
    spec->replacements.emplace_back(std::move(pattern), std::move(content));
  } else if (type == "Strip") {
    ASSIGN_OR_RETURN(std::string content, GetString(d, "content", "decoder Strip"));
    auto start = d.find("start");
    auto stop = d.find("stop");
    if (start == d.end() || !start->is_number_unsigned() || stop == d.end() ||
        !stop->is_number_unsigned()) {
      return Malformed("decoder Strip", "\"start\" and \"stop\" must be non-negative integers");
    }
    if (content != " " || stop->get<uint64_t>() != 0 || start->get<uint64_t>() > 1) {
      return Unsupported("decoder Strip", "only Strip(\" \", start <= 1, stop = 0) is supported");
    }
    spec->strip_leading_spaces = static_cast<int>(start->get<uint64_t>());
  } else if (type == "Metaspace") {
    std::string replacement = "\xE2\x96\x81";
    if (d.contains("replacement")) {
      ASSIGN_OR_RETURN(replacement, GetString(d, "replacement", "decoder Metaspace"));
    }
    ASSIGN_OR_RETURN(PrependScheme scheme, ParsePrependScheme(d, "decoder Metaspace"));
    spec->replacements.emplace_back(std::move(replacement), " ");
    spec->strip_leading_spaces = scheme == PrependScheme::kNever ? 0 : 1;
  } else {
    return Unsupported("decoder", absl::StrCat("type \"", type, "\" is not supported"));
  }
  return absl::OkStatus();
}

absl::Status ParseModel(const Json& m, TokenizerSpec* spec) {
  if (!m.is_object()) return Malformed("model", "must be an object");
  auto type = m.find("type");
  if (type != m.end()) {
    if (!type->is_string()) return Malformed("model", "\"type\" must be a string");
    if (type->get<std::string>() != "BPE") {
      return Unsupported("model", absl::StrCat("type \"", type->get<std::string>(),
                                               "\" is not supported (only BPE)"));
    }
  }
  auto vocab = m.find("vocab");
  if (vocab == m.end() || !vocab->is_object()) {
    return Malformed("model", "\"vocab\" must be an object");
  }
  spec->vocab.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > INT32_MAX) {
      return Malformed("model.vocab", absl::StrCat("token \"", it.key(),
                                                   "\" needs a non-negative 32-bit id"));
    }
    spec->vocab.emplace_back(it.key(), static_cast<int32_t>(it.value().get<int64_t>()));
  }
  auto merges = m.find("merges");
  if (merges == m.end() || !merges->is_array()) {
    return Malformed("model", "\"merges\" must be an array");
  }
  spec->merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const Json& merge = (*merges)[i];
    if (merge.is_string()) {
      const std::string line = merge.get<std::string>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        return Malformed("model.merges",
                         absl::StrCat("merge ", i, " \"", line, "\" is not \"left right\""));
      }
      spec->merges.emplace_back(line.substr(0, space), line.substr(space + 1));
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      spec->merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    } else {
      return Malformed("model.merges", absl::StrCat("merge ", i, " is not a string or a pair"));
    }
  }
  auto dropout = m.find("dropout");
  if (dropout != m.end() && !dropout->is_null() &&
      !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    return Unsupported("model", "BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = m.find(key);
    if (it != m.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty())) {
      return Unsupported("model", absl::StrCat("\"", key, "\" is not supported"));
    }
  }
  auto unk = m.find("unk_token");
  if (unk != m.end() && !unk->is_null()) {
    if (!unk->is_string()) return Malformed("model", "\"unk_token\" must be a string or null");
    spec->unk_token = unk->get<std::string>();
  }
  ASSIGN_OR_RETURN(spec->byte_fallback, GetBool(m, "byte_fallback", false, "model"));
  ASSIGN_OR_RETURN(spec->fuse_unk, GetBool(m, "fuse_unk", false, "model"));
  ASSIGN_OR_RETURN(spec->ignore_merges, GetBool(m, "ignore_merges", false, "model"));
  return absl::OkStatus();
}

absl::Status ParseAddedTokens(const Json& added, TokenizerSpec* spec) {
  if (added.is_null()) return absl::OkStatus();
  if (!added.is_array()) return Malformed("added_tokens", "must be an array");
  for (const Json& t : added) {
    if (!t.is_object()) return Malformed("added_tokens", "each entry must be an object");
    AddedTokenSpec a;
    auto id = t.find("id");
    if (id == t.end() || !id->is_number_integer() || id->get<int64_t>() < 0 ||
        id->get<int64_t>() > INT32_MAX) {
      return Malformed("added_tokens", "each entry needs a non-negative 32-bit \"id\"");
    }
    a.id = static_cast<int32_t>(id->get<int64_t>());
    ASSIGN_OR_RETURN(a.content, GetString(t, "content", "added_tokens"));
    if (a.content.empty()) return Malformed("added_tokens", "empty \"content\"");
    ASSIGN_OR_RETURN(a.special, GetBool(t, "special", false, "added_tokens"));
    spec->added_tokens.push_back(std::move(a));
  }
  return absl::OkStatus();
}

// TemplateProcessing {"single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": ...}]}, alone
// or inside a Sequence post-processor (Llama 3). Anything else is ignored: post-processors do
// not change Encode (which never adds bos/eos).
void ParseTemplateBos(const Json& p, TokenizerSpec* spec) {
  if (!p.is_object()) return;
  auto type = p.find("type");
  if (type == p.end() || !type->is_string()) return;
  if (*type == "Sequence") {
    auto it = p.find("processors");
    if (it == p.end() || !it->is_array()) return;
    for (const Json& child : *it) ParseTemplateBos(child, spec);
    return;
  }
  if (*type != "TemplateProcessing") return;
  auto single = p.find("single");
  if (single == p.end() || !single->is_array() || single->empty()) return;
  const Json& first = (*single)[0];
  if (!first.is_object()) return;
  auto special = first.find("SpecialToken");
  if (special == first.end() || !special->is_object()) return;
  auto id = special->find("id");
  if (id != special->end() && id->is_string()) spec->template_bos_token = id->get<std::string>();
}

}  // namespace

absl::StatusOr<TokenizerSpec> ParseTokenizerJson(absl::string_view json) {
  Json root = Json::parse(json.begin(), json.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::DataLossError("tokenizer.json is not valid JSON (truncated or corrupted?)");
  }
  if (!root.is_object()) return Malformed("top level", "must be an object");
  TokenizerSpec spec;
  auto model = root.find("model");
  if (model == root.end()) return Malformed("top level", "no \"model\"");
  RETURN_IF_ERROR(ParseModel(*model, &spec));
  const Json null_json;
  auto field = [&](const char* key) -> const Json& {
    auto it = root.find(key);
    return it == root.end() ? null_json : *it;
  };
  RETURN_IF_ERROR(ParseAddedTokens(field("added_tokens"), &spec));
  RETURN_IF_ERROR(ParseNormalizer(field("normalizer"), &spec.normalizer));
  RETURN_IF_ERROR(ParsePreTokenizer(field("pre_tokenizer"), &spec.pre_tokenizer));
  RETURN_IF_ERROR(ParseDecoder(field("decoder"), &spec.decoder));
  ParseTemplateBos(field("post_processor"), &spec);
  return spec;
}

}  // namespace kvspan::model::internal
