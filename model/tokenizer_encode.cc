// Encoding and decoding with a built Tokenizer (loading is in tokenizer.cc).
#include <algorithm>
#include <utility>

#include "common/status_macros.h"
#include "model/internal/byte_level.h"
#include "model/internal/nfc.h"
#include "model/internal/pretokenize.h"
#include "model/internal/unicode.h"
#include "model/tokenizer.h"

namespace kvspan::model {
namespace {

using internal::NormalizerStep;
using internal::PreTokenizerStep;

void ReplaceAllInPlace(std::string* s, absl::string_view from, absl::string_view to) {
  if (s->find(from.data(), 0, from.size()) == std::string::npos) return;
  std::string out;
  out.reserve(s->size());
  size_t pos = 0;
  while (true) {
    const size_t hit = s->find(from.data(), pos, from.size());
    if (hit == std::string::npos) break;
    out.append(*s, pos, hit - pos);
    out.append(to.data(), to.size());
    pos = hit + from.size();
  }
  out.append(*s, pos, std::string::npos);
  *s = std::move(out);
}

std::string Normalize(const std::vector<NormalizerStep>& steps, absl::string_view text) {
  std::string s(text);
  for (const NormalizerStep& step : steps) {
    switch (step.kind) {
      case NormalizerStep::Kind::kNfc:
        s = internal::NormalizeNfc(s);
        break;
      case NormalizerStep::Kind::kPrepend:
        if (!s.empty()) s.insert(0, step.text);
        break;
      case NormalizerStep::Kind::kReplace:
        ReplaceAllInPlace(&s, step.text, step.replacement);
        break;
    }
  }
  return s;
}

// Splits before every occurrence of `delimiter` (Hugging Face's MergedWithNext behaviour).
void SplitBefore(const std::string& s, absl::string_view delimiter,
                 std::vector<std::string>* out) {
  size_t start = 0;
  size_t pos = s.find(delimiter.data(), 0, delimiter.size());
  while (pos != std::string::npos) {
    if (pos > start) out->push_back(s.substr(start, pos - start));
    start = pos;
    pos = s.find(delimiter.data(), pos + delimiter.size(), delimiter.size());
  }
  if (start < s.size()) out->push_back(s.substr(start));
}

void SplitInto(const std::string& s, internal::SplitPattern pattern,
               std::vector<std::string>* out) {
  std::vector<absl::string_view> views;
  internal::SplitWithPattern(s, pattern, &views);
  for (absl::string_view v : views) out->emplace_back(v);
}

}  // namespace

std::vector<int32_t> Tokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  size_t segment_start = 0;
  for (size_t pos = 0; pos < text.size();) {
    const auto [length, id] = MatchAddedToken(text, pos);
    if (length == 0) {
      ++pos;
      continue;
    }
    EncodeSegment(text.substr(segment_start, pos - segment_start), segment_start == 0, &ids);
    ids.push_back(id);
    pos += length;
    segment_start = pos;
  }
  EncodeSegment(text.substr(segment_start), segment_start == 0, &ids);
  return ids;
}

std::vector<int32_t> Tokenizer::EncodeForGeneration(absl::string_view text) const {
  std::vector<int32_t> ids;
  if (add_bos()) ids.push_back(*bos_id_);
  std::vector<int32_t> body = Encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

std::pair<size_t, int32_t> Tokenizer::MatchAddedToken(absl::string_view text, size_t pos) const {
  const auto& candidates = added_by_first_byte_[static_cast<unsigned char>(text[pos])];
  for (const auto& [content, id] : candidates) {  // longest first
    if (text.substr(pos, content.size()) == content) return {content.size(), id};
  }
  return {0, -1};
}

void Tokenizer::EncodeSegment(absl::string_view segment, bool at_text_start,
                              std::vector<int32_t>* ids) const {
  if (segment.empty()) return;
  std::string normalized = Normalize(normalizer_, segment);
  if (normalized.empty()) return;
  for (const std::string& word : PreTokenize(std::move(normalized), at_text_start)) {
    EncodeWord(word, ids);
  }
}

std::vector<std::string> Tokenizer::PreTokenize(std::string normalized,
                                                bool at_text_start) const {
  std::vector<std::string> pieces;
  pieces.push_back(std::move(normalized));
  for (const PreTokenizerStep& step : pre_tokenizer_) {
    std::vector<std::string> next;
    for (size_t i = 0; i < pieces.size(); ++i) {
      std::string& piece = pieces[i];
      switch (step.kind) {
        case PreTokenizerStep::Kind::kSplit:
          SplitInto(piece, step.pattern, &next);
          break;
        case PreTokenizerStep::Kind::kByteLevel:
          if (step.add_prefix_space && piece[0] != ' ') piece.insert(0, " ");
          if (step.use_regex) {
            SplitInto(piece, internal::SplitPattern::kGpt2, &next);
          } else {
            next.push_back(std::move(piece));
          }
          break;
        case PreTokenizerStep::Kind::kMetaspace: {
          ReplaceAllInPlace(&piece, " ", step.replacement);
          // As Hugging Face: no second replacement in front of one already there; "first"
          // prepends only to the piece that starts the whole text.
          const bool starts_with_replacement = piece.rfind(step.replacement, 0) == 0;
          const bool prepend =
              !starts_with_replacement &&
              (step.prepend_scheme == internal::PrependScheme::kAlways ||
               (step.prepend_scheme == internal::PrependScheme::kFirst && i == 0 &&
                at_text_start));
          if (prepend) piece.insert(0, step.replacement);
          if (step.split) {
            SplitBefore(piece, step.replacement, &next);
          } else {
            next.push_back(std::move(piece));
          }
          break;
        }
      }
    }
    pieces = std::move(next);
  }
  return pieces;
}

void Tokenizer::EncodeWord(absl::string_view word, std::vector<int32_t>* ids) const {
  if (ignore_merges_) {
    // A pre-token that is itself a token is emitted whole (Llama 3's ignore_merges).
    std::string model_form;
    if (byte_level_) {
      const auto& chars = internal::ByteLevelChars();
      for (char c : word) model_form += chars[static_cast<unsigned char>(c)];
    }
    auto it = vocab_.find(byte_level_ ? absl::string_view(model_form) : word);
    if (it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  if (word_split_marker_.empty()) {
    EncodeChunk(word, ids);
    return;
  }
  // Cut before each marker that follows another character (see word_split_marker_).
  const absl::string_view marker = word_split_marker_;
  size_t start = 0;
  for (size_t pos = word.find(marker, 1); pos != absl::string_view::npos;
       pos = word.find(marker, pos + marker.size())) {
    if (word.substr(pos - std::min(pos, marker.size()), marker.size()) == marker) continue;
    EncodeChunk(word.substr(start, pos - start), ids);
    start = pos;
  }
  EncodeChunk(word.substr(start), ids);
}

void Tokenizer::EncodeChunk(absl::string_view word, std::vector<int32_t>* ids) const {
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  if (byte_level_) {
    for (char c : word) symbols.push_back(byte_ids_[static_cast<unsigned char>(c)]);
  } else {
    bool last_was_unk = false;
    for (size_t pos = 0; pos < word.size();) {
      const internal::Utf8Unit u = internal::DecodeUtf8(word, pos);
      const absl::string_view ch = word.substr(pos, u.length);
      pos += u.length;
      auto it = vocab_.find(ch);
      if (it != vocab_.end()) {
        symbols.push_back(it->second);
        last_was_unk = false;
      } else if (byte_fallback_) {
        for (char c : ch) symbols.push_back(byte_ids_[static_cast<unsigned char>(c)]);
        last_was_unk = false;
      } else {
        if (!(fuse_unk_ && last_was_unk)) symbols.push_back(*unk_id_);
        last_was_unk = true;
      }
    }
  }
  merges_.Apply(&symbols);
  ids->insert(ids->end(), symbols.begin(), symbols.end());
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              const DecodeOptions& options) const {
  std::string out;
  for (int32_t id : ids) {
    RETURN_IF_ERROR(CheckId(id));
    const TokenInfo& info = tokens_[id];
    if (options.skip_special_tokens && info.special) continue;
    out += info.decoded;
  }
  for (int i = 0; i < strip_leading_spaces_ && !out.empty() && out[0] == ' '; ++i) {
    out.erase(0, 1);
  }
  return out;
}

}  // namespace kvspan::model
