// Evaluation helpers of bench/quality_bench (issue 3): feeding and greedy decoding through
// any model::KvCache, and the retrieval / multi-query reuse scores on the held-out rows of
// tools/tasks.py. Thread-compatible (functions of their inputs; each call uses its own
// caches).
#ifndef KVSPAN_BENCH_QUALITY_TASKS_H_
#define KVSPAN_BENCH_QUALITY_TASKS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvcache/compressed_kv_cache.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "model/tokenizer.h"

namespace kvspan::bench {

// Feeds `tokens` to `cache` in chunks of `chunk` tokens (logits of every token when
// `all_logits`, else of the last token of the last chunk) into *out.
absl::Status Feed(const model::Model& m, model::KvCache* cache, const std::vector<int32_t>& tokens, int chunk,
                  bool all_logits, std::vector<float>* out);

// Greedy continuation of `prompt` (prefilled in chunks of `chunk`) for `new_tokens` tokens.
absl::StatusOr<std::vector<int32_t>> Greedy(const model::Model& m, model::KvCache* cache,
                                            const std::vector<int32_t>& prompt, int chunk, int new_tokens);

// One held-out row of tools/tasks.py --heldout.
struct TaskRow {
  std::string task;  // kv | needle | multiquery
  std::string context, question, answer;
  int64_t group = -1;  // multiquery: rows of one group share the context
  double depth = -1;   // where the answer sits in the context, 0..1 (-1: not given)
};

// The rows of the JSONL file `path`; an empty list when it cannot be read (no task set).
// InvalidArgument for a malformed row.
absl::StatusOr<std::vector<TaskRow>> LoadTasks(const std::string& path);

struct RetrievalScore {
  double retrieval = -1;   // exact match over kv + needle rows (-1: none)
  double multiquery = -1;  // exact match over multiquery rows (-1: none)
  std::map<double, double> needle_by_depth;  // exact match of the needle rows at each depth
};

// Exact match of the greedy answers. Prompt = [bos] + Encode(context + question), prefilled
// in chunks of S. With `compressor` null every prompt runs on a dense fp32 cache; else on a
// CompressedKvCache with that compressor, and for multi-query rows the group's shared token
// prefix is prefilled and compressed ONCE (no question in sight) and every question of the
// group continues from those spans (CompressedKvCache::FromSpans).
absl::StatusOr<RetrievalScore> ScoreTasks(const model::Model& m, const model::Tokenizer& tok,
                                          const std::vector<TaskRow>& rows, int32_t bos, int S,
                                          std::shared_ptr<kvcache::SpanCompressor> compressor);

}  // namespace kvspan::bench

#endif  // KVSPAN_BENCH_QUALITY_TASKS_H_
