// Loading and building a Tokenizer. Encoding and decoding live in tokenizer_encode.cc.
#include "model/tokenizer.h"
#include "common/file_util.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "model/internal/byte_level.h"
#include "model/internal/tokenizer_config.h"

namespace kvspan::model {
namespace {

// Ids index a dense table, so a corrupt file with a huge id must not allocate gigabytes.
constexpr int32_t kMaxVocabSize = 1 << 24;

// "<0x41>" -> 0x41 for the tokens a ByteFallback decoder turns into bytes; -1 otherwise.
int ByteFallbackValue(absl::string_view token) {
  if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') return -1;
  int value = 0;
  for (char c : token.substr(3, 2)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

std::string ReplaceAll(absl::string_view s, absl::string_view from, absl::string_view to) {
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == absl::string_view::npos) break;
    absl::StrAppend(&out, s.substr(pos, hit - pos), to);
    pos = hit + from.size();
  }
  absl::StrAppend(&out, s.substr(pos));
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadFromDir(const std::string& dir) {
  ASSIGN_OR_RETURN(std::string json, ReadFile(dir + "/tokenizer.json"));
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, FromJson(json));
  ASSIGN_OR_RETURN(internal::SpecialTokenConfig config, internal::ReadSpecialTokenConfig(dir));
  RETURN_IF_ERROR(tokenizer->ApplySpecialTokenConfig(config));
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view tokenizer_json) {
  ASSIGN_OR_RETURN(internal::TokenizerSpec spec, internal::ParseTokenizerJson(tokenizer_json));
  std::optional<std::string> template_bos = spec.template_bos_token;
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  RETURN_IF_ERROR(tokenizer->Build(std::move(spec)));
  if (template_bos.has_value()) {
    tokenizer->bos_id_ = tokenizer->TokenToId(*template_bos);
    tokenizer->add_bos_ = tokenizer->bos_id_.has_value();
  }
  return tokenizer;
}

absl::Status Tokenizer::Build(internal::TokenizerSpec spec) {
  normalizer_ = std::move(spec.normalizer);
  pre_tokenizer_ = std::move(spec.pre_tokenizer);
  byte_level_ = std::any_of(pre_tokenizer_.begin(), pre_tokenizer_.end(), [](const auto& s) {
    return s.kind == internal::PreTokenizerStep::Kind::kByteLevel;
  });
  byte_fallback_ = spec.byte_fallback;
  fuse_unk_ = spec.fuse_unk;
  ignore_merges_ = spec.ignore_merges;
  strip_leading_spaces_ = spec.decoder.strip_leading_spaces;

  int32_t max_id = -1;
  for (const auto& [token, id] : spec.vocab) max_id = std::max(max_id, id);
  for (const auto& added : spec.added_tokens) max_id = std::max(max_id, added.id);
  if (max_id >= kMaxVocabSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer.json: token id ", max_id, " exceeds the supported maximum ", kMaxVocabSize - 1));
  }
  tokens_.resize(static_cast<size_t>(max_id) + 1);
  vocab_.reserve(spec.vocab.size());
  for (auto& [token, id] : spec.vocab) {
    TokenInfo& info = tokens_[id];
    if (info.present) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tokenizer.json: model.vocab: id %d is used by both \"%s\" and \"%s\"", id,
          info.text, token));
    }
    info.present = true;
    info.text = token;
    vocab_.emplace(std::move(token), id);
  }
  RETURN_IF_ERROR(BuildAddedTokens(spec.added_tokens));
  RETURN_IF_ERROR(BuildMerges(spec));
  RETURN_IF_ERROR(BuildInitialSymbols(spec));
  BuildDecoded(spec.decoder);
  FindWordSplitMarker();
  return absl::OkStatus();
}

void Tokenizer::FindWordSplitMarker() {
  if (byte_level_) return;
  std::string marker;  // what a space becomes: Metaspace's replacement or Replace(" ", x)
  for (const internal::NormalizerStep& step : normalizer_) {
    if (step.kind == internal::NormalizerStep::Kind::kReplace && step.text == " ") {
      marker = step.replacement;
    }
  }
  for (const internal::PreTokenizerStep& step : pre_tokenizer_) {
    if (step.kind == internal::PreTokenizerStep::Kind::kMetaspace) marker = step.replacement;
  }
  if (marker.empty()) return;
  for (const auto& [token, id] : vocab_) {
    for (size_t pos = token.find(marker, 1); pos != std::string::npos;
         pos = token.find(marker, pos + 1)) {
      const bool after_marker =
          pos >= marker.size() && token.compare(pos - marker.size(), marker.size(), marker) == 0;
      if (!after_marker) return;  // some token joins a character to a following marker
    }
  }
  word_split_marker_ = marker;
}

absl::Status Tokenizer::BuildAddedTokens(const std::vector<internal::AddedTokenSpec>& added) {
  for (const internal::AddedTokenSpec& a : added) {
    TokenInfo& info = tokens_[a.id];
    if (info.present && info.text != a.content) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tokenizer.json: added token \"%s\" has id %d, which the vocabulary gives to \"%s\"",
          a.content, a.id, info.text));
    }
    auto in_vocab = vocab_.find(a.content);
    if (in_vocab != vocab_.end() && in_vocab->second != a.id) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tokenizer.json: added token \"%s\" has id %d but vocabulary id %d", a.content, a.id,
          in_vocab->second));
    }
    auto [it, inserted] = added_ids_.emplace(a.content, a.id);
    if (!inserted && it->second != a.id) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tokenizer.json: added token \"%s\" appears with ids %d and %d", a.content,
          it->second, a.id));
    }
    info.present = true;
    info.text = a.content;
    info.special = a.special;
    if (inserted) {
      added_by_first_byte_[static_cast<unsigned char>(a.content[0])].emplace_back(a.content,
                                                                                   a.id);
    }
  }
  for (auto& list : added_by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [](const auto& x, const auto& y) {
      return x.first.size() > y.first.size();
    });
  }
  return absl::OkStatus();
}

absl::StatusOr<int32_t> Tokenizer::RequireToken(absl::string_view token,
                                                absl::string_view what) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json: ", what, ": \"", token, "\" is not in the vocabulary"));
  }
  return it->second;
}

absl::Status Tokenizer::BuildMerges(const internal::TokenizerSpec& spec) {
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [left, right] = spec.merges[rank];
    const std::string what = absl::StrCat("merge ", rank, " \"", left, " ", right, "\"");
    ASSIGN_OR_RETURN(int32_t left_id, RequireToken(left, what));
    ASSIGN_OR_RETURN(int32_t right_id, RequireToken(right, what));
    ASSIGN_OR_RETURN(int32_t merged_id, RequireToken(absl::StrCat(left, right), what));
    merges_.Add(left_id, right_id, static_cast<int32_t>(rank), merged_id);
  }
  if (spec.unk_token.has_value()) {
    ASSIGN_OR_RETURN(unk_id_, RequireToken(*spec.unk_token, "model.unk_token"));
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::BuildInitialSymbols(const internal::TokenizerSpec& spec) {
  if (byte_level_) {
    const auto& chars = internal::ByteLevelChars();
    for (int b = 0; b < 256; ++b) {
      ASSIGN_OR_RETURN(byte_ids_[b],
                       RequireToken(chars[b], absl::StrFormat("byte-level token of 0x%02X", b)));
    }
  } else if (byte_fallback_) {
    for (int b = 0; b < 256; ++b) {
      const std::string token = absl::StrFormat("<0x%02X>", b);
      ASSIGN_OR_RETURN(byte_ids_[b], RequireToken(token, "byte_fallback"));
    }
  } else if (!unk_id_.has_value()) {
    return absl::UnimplementedError(
        "tokenizer.json: a BPE model without byte-level pre-tokenization, byte_fallback or "
        "unk_token cannot encode every input; not supported");
  }
  return absl::OkStatus();
}

void Tokenizer::BuildDecoded(const internal::DecoderSpec& decoder) {
  for (TokenInfo& info : tokens_) {
    if (!info.present) continue;
    if (added_ids_.contains(info.text)) {
      info.decoded = info.text;  // added tokens decode to their content
      continue;
    }
    if (decoder.byte_level) {
      std::string bytes;
      // As Hugging Face: a token with a character outside the byte map stays as it is.
      info.decoded = internal::ByteLevelDecode(info.text, &bytes) ? bytes : info.text;
      continue;
    }
    const int byte = decoder.byte_fallback ? ByteFallbackValue(info.text) : -1;
    if (byte >= 0) {
      info.decoded = std::string(1, static_cast<char>(byte));
      continue;
    }
    info.decoded = info.text;
    for (const auto& [from, to] : decoder.replacements) {
      info.decoded = ReplaceAll(info.decoded, from, to);
    }
  }
}

absl::Status Tokenizer::ApplySpecialTokenConfig(const internal::SpecialTokenConfig& config) {
  auto lookup = [&](const std::string& token, const char* what) -> absl::StatusOr<int32_t> {
    std::optional<int32_t> id = TokenToId(token);
    if (!id.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer_config.json: ", what, " \"", token, "\" is not a known token"));
    }
    return *id;
  };
  auto check = [&](int32_t id, const char* what) -> absl::Status {
    if (id >= vocab_size() || !tokens_[id].present) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " ", id, " is outside the vocabulary of ", vocab_size()));
    }
    return absl::OkStatus();
  };
  if (config.bos_token_id.has_value()) {
    RETURN_IF_ERROR(check(*config.bos_token_id, "bos_token_id"));
    bos_id_ = config.bos_token_id;
  } else if (config.bos_token.has_value()) {
    ASSIGN_OR_RETURN(bos_id_, lookup(*config.bos_token, "bos_token"));
  }
  if (config.add_bos_token.has_value()) add_bos_ = *config.add_bos_token;
  if (config.eos_token_ids.has_value()) {
    for (int32_t id : *config.eos_token_ids) RETURN_IF_ERROR(check(id, "eos_token_id"));
    eos_ids_ = *config.eos_token_ids;
  } else if (config.eos_token.has_value()) {
    ASSIGN_OR_RETURN(int32_t eos, lookup(*config.eos_token, "eos_token"));
    eos_ids_ = {eos};
  }
  if (config.pad_token_id.has_value()) {
    RETURN_IF_ERROR(check(*config.pad_token_id, "pad_token_id"));
    pad_id_ = config.pad_token_id;
  } else if (config.pad_token.has_value()) {
    ASSIGN_OR_RETURN(pad_id_, lookup(*config.pad_token, "pad_token"));
  }
  return absl::OkStatus();
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  if (auto it = added_ids_.find(token); it != added_ids_.end()) return it->second;
  if (auto it = vocab_.find(token); it != vocab_.end()) return it->second;
  return std::nullopt;
}

std::optional<absl::string_view> Tokenizer::IdToToken(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !tokens_[id].present) return std::nullopt;
  return absl::string_view(tokens_[id].text);
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && tokens_[id].special;
}

absl::Status Tokenizer::CheckId(int32_t id) const {
  if (id < 0 || id >= vocab_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab_size(), ")"));
  }
  if (!tokens_[id].present) {
    return absl::InvalidArgumentError(absl::StrCat("token id ", id, " names no token"));
  }
  return absl::OkStatus();
}

}  // namespace kvspan::model
