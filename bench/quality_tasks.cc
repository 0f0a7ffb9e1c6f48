#include "bench/quality_tasks.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace kvspan::bench {
namespace {

int Argmax(const float* x, int n) { return static_cast<int>(std::max_element(x, x + n) - x); }

// Room in a task cache for the answer tokens.
constexpr int kAnswerRoom = 16;

// Feeds prompt[from..] to `cache` in chunks of `chunk`, then greedy-decodes as many tokens as
// the answer has; true when they decode to exactly the answer.
absl::StatusOr<bool> AnswerMatches(const model::Model& m, const model::Tokenizer& tok, model::KvCache* cache,
                                   const std::vector<int32_t>& prompt, size_t from, const std::string& answer,
                                   int chunk) {
  const int n = static_cast<int>(tok.Encode(answer).size());
  const std::vector<int32_t> rest(prompt.begin() + static_cast<int64_t>(from), prompt.end());
  ASSIGN_OR_RETURN(std::vector<int32_t> out, Greedy(m, cache, rest, chunk, n));
  ASSIGN_OR_RETURN(std::string text, tok.Decode(out));
  return text == answer;
}

// A fresh cache for `capacity` tokens: dense fp32 without a compressor, else compressed.
absl::StatusOr<std::unique_ptr<model::KvCache>> NewCache(const model::Model& m, int S, int capacity,
                                                         const std::shared_ptr<kvcache::SpanCompressor>& compressor) {
  if (compressor == nullptr) {
    ASSIGN_OR_RETURN(auto cache, m.NewDenseCache(std::min(capacity, m.config().max_position_embeddings)));
    return std::unique_ptr<model::KvCache>(std::move(cache));
  }
  ASSIGN_OR_RETURN(auto cache, kvcache::CompressedKvCache::Create(
                                   kvcache::CompressedKvCache::OptionsFor(m.config(), S, capacity), compressor));
  return std::unique_ptr<model::KvCache>(std::move(cache));
}

}  // namespace

absl::Status Feed(const model::Model& m, model::KvCache* cache, const std::vector<int32_t>& tokens, int chunk,
                  bool all_logits, std::vector<float>* out) {
  const int vocab = m.config().vocab_size;
  out->clear();
  std::vector<float> logits;
  for (size_t i = 0; i < tokens.size(); i += chunk) {
    const size_t n = std::min(tokens.size() - i, static_cast<size_t>(chunk));
    model::ForwardItem item{absl::MakeConstSpan(tokens.data() + i, n), cache,
                            all_logits ? model::LogitsMode::kAllTokens : model::LogitsMode::kLastToken,
                            &logits};
    RETURN_IF_ERROR(m.Forward(absl::MakeSpan(&item, 1)));
    if (all_logits) {
      out->insert(out->end(), logits.begin(), logits.end());
    } else if (i + n == tokens.size()) {
      out->assign(logits.begin(), logits.begin() + vocab);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Greedy(const model::Model& m, model::KvCache* cache,
                                            const std::vector<int32_t>& prompt, int chunk, int new_tokens) {
  const int vocab = m.config().vocab_size;
  std::vector<float> logits;
  RETURN_IF_ERROR(Feed(m, cache, prompt, chunk, /*all_logits=*/false, &logits));
  std::vector<int32_t> out;
  for (int t = 0; t < new_tokens; ++t) {
    int32_t next = Argmax(logits.data(), vocab);
    out.push_back(next);
    if (t + 1 == new_tokens) break;
    model::ForwardItem item{absl::MakeConstSpan(&next, 1), cache, model::LogitsMode::kLastToken, &logits};
    RETURN_IF_ERROR(m.Forward(absl::MakeSpan(&item, 1)));
  }
  return out;
}

absl::StatusOr<std::vector<TaskRow>> LoadTasks(const std::string& path) {
  std::vector<TaskRow> rows;
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return rows;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("task") || !j.contains("context") || !j.contains("question") ||
        !j.contains("answer")) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": bad row ", rows.size()));
    }
    rows.push_back(TaskRow{j["task"].get<std::string>(), j["context"].get<std::string>(),
                           j["question"].get<std::string>(), j["answer"].get<std::string>(),
                           j.value("group", int64_t{-1}), j.value("depth", -1.0)});
  }
  return rows;
}

absl::StatusOr<RetrievalScore> ScoreTasks(const model::Model& m, const model::Tokenizer& tok,
                                          const std::vector<TaskRow>& rows, int32_t bos, int S,
                                          std::shared_ptr<kvcache::SpanCompressor> compressor) {
  auto prompt_of = [&](const TaskRow& r) {
    std::vector<int32_t> ids = {bos};
    const std::vector<int32_t> body = tok.Encode(r.context + r.question);
    ids.insert(ids.end(), body.begin(), body.end());
    return ids;
  };
  double retrieval = 0, multiquery = 0;
  int n_ret = 0, n_mq = 0;
  std::map<double, int> needle_hits, needle_rows;
  std::map<int64_t, std::vector<const TaskRow*>> groups;
  for (const TaskRow& r : rows) {
    if (r.task == "multiquery") {
      groups[r.group].push_back(&r);
      continue;
    }
    const std::vector<int32_t> prompt = prompt_of(r);
    ASSIGN_OR_RETURN(auto cache, NewCache(m, S, static_cast<int>(prompt.size()) + kAnswerRoom, compressor));
    ASSIGN_OR_RETURN(bool ok, AnswerMatches(m, tok, cache.get(), prompt, 0, r.answer, S));
    retrieval += ok;
    ++n_ret;
    if (r.task == "needle") {
      needle_hits[r.depth] += ok;
      ++needle_rows[r.depth];
    }
  }
  for (const auto& [group, members] : groups) {
    std::vector<std::vector<int32_t>> prompts;
    int capacity = 0;
    for (const TaskRow* r : members) {
      prompts.push_back(prompt_of(*r));
      capacity = std::max(capacity, static_cast<int>(prompts.back().size()) + kAnswerRoom);
    }
    // The spans of the shared context, compressed once (none for the dense baseline: each
    // question then runs over its whole prompt).
    std::vector<kvcache::Span> context_spans;
    if (compressor != nullptr) {
      size_t shared = prompts[0].size() - 1;  // each question keeps >= 1 own token
      for (const auto& p : prompts) {
        size_t k = 0;
        while (k < std::min(shared, p.size()) && p[k] == prompts[0][k]) ++k;
        shared = k;
      }
      ASSIGN_OR_RETURN(auto context_cache, kvcache::CompressedKvCache::Create(
                                               kvcache::CompressedKvCache::OptionsFor(m.config(), S, capacity),
                                               compressor));
      std::vector<float> unused;
      const std::vector<int32_t> context(prompts[0].begin(), prompts[0].begin() + static_cast<int64_t>(shared));
      RETURN_IF_ERROR(Feed(m, context_cache.get(), context, S, /*all_logits=*/false, &unused));
      context_spans = context_cache->spans();
    }
    for (size_t q = 0; q < members.size(); ++q) {
      std::unique_ptr<model::KvCache> cache;
      if (compressor == nullptr) {
        ASSIGN_OR_RETURN(cache, NewCache(m, S, capacity, compressor));
      } else {
        ASSIGN_OR_RETURN(cache, kvcache::CompressedKvCache::FromSpans(
                                    kvcache::CompressedKvCache::OptionsFor(m.config(), S, capacity), compressor,
                                    context_spans));
      }
      ASSIGN_OR_RETURN(bool ok, AnswerMatches(m, tok, cache.get(), prompts[q],
                                              context_spans.size() * static_cast<size_t>(S), members[q]->answer, S));
      multiquery += ok;
      ++n_mq;
    }
  }
  RetrievalScore score;
  if (n_ret > 0) score.retrieval = retrieval / n_ret;
  if (n_mq > 0) score.multiquery = multiquery / n_mq;
  for (const auto& [depth, n] : needle_rows) score.needle_by_depth[depth] = static_cast<double>(needle_hits[depth]) / n;
  return score;
}

}  // namespace kvspan::bench
