// Quality of every compression policy against the uncompressed (dense fp32) cache, on every
// model in models/ (issue 3): bytes per token from the real serialized spans, perplexity on
// held-out text, next-token KL divergence and top-1 agreement (teacher-forced), and
// agreement of greedy continuations. Writes docs/quality.csv and docs/quality.md;
// bench/plot_quality.py draws docs/quality.png from the CSV. bench/run_quality.sh runs all.
//
//   xz -dc tools/corpus/brown_valid.txt.xz > /tmp/brown_valid.txt
//   build/bench/quality_bench --text /tmp/brown_valid.txt
//
// Method (also written into the md):
//   - A window is bos + (window_tokens - 1) held-out tokens. The dense baseline runs it in
//     one step; each policy feeds it to a CompressedKvCache in chunks of S tokens, so every
//     span is compressed at the Commit that completes it and later chunks attend to it.
//   - Metrics are taken over positions >= S only (the first span's queries see no
//     compressed token, so they agree by construction).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "bench/doc_section.h"
#include "bench/quality_tasks.h"
#include "common/file_util.h"
#include "common/flags.h"
#include "common/status_macros.h"
#include "kvcache/compressed_kv_cache.h"
#include "kvcache/policy.h"
#include "kvcache/span_format.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace kvspan::bench {
namespace {

// Every implemented policy at several strengths, aiming at ratios near 2x, 4x, 8x, 16x
// against bf16, plus the policies whose engine is not built yet (listed, not measured).
// "{model}" stands for the model's directory (per-model calibration files); a policy
// whose @file does not exist for a model is listed as not measured.
const char* const kDefaultPolicies[] = {
    "bf16",
    "fp16",
    "int8(g=32)",
    "int4(g=32)",
    "int4(g=64)",
    "int2(g=32)",
    "int2(g=64)",
    "mikv(hi=int8,lo=int4,keep_hi=0.2,g=32)",
    "mikv(hi=int8,lo=int2,keep_hi=0.2,g=32)",
    "mikv(hi=int4,lo=int2,keep_hi=0.2,g=32)",
    "keynorm(keep=0.5)/bf16",
    "keynorm(keep=0.5)/int8",
    "keynorm(keep=0.25)/int8",
    "keynorm(keep=0.125)/int8",
    "keynorm(keep=0.5)/int4",
    "keynorm(keep=0.25)/int4",
    "sinks(4)+window(8)+keynorm(keep=0.25)/int8",
    "sinks(4)+window(8)+keynorm(keep=0.25)/int4",
    "kvmerger(sim=0.9,sigma=1)/bf16",
    "kvmerger(sim=0.8,sigma=1)/int8",
    "kvmerger(sim=0.9,sigma=1)/int4",
    "kvmerger(sim=0.8,sigma=1)/int4(g=64)",
    "kvmerger(sim=0.7,sigma=1)/int4(g=64)",
    "kvmerger(sim=0.9,sigma=1)/int2",
    "razor(sinks=4,window=8)/bf16",
    "razor(sinks=4,window=8)/int8",
    "razor(sinks=4,window=8,retrieval=@{model}/razor_heads.txt)/bf16",
    "razor(sinks=4,window=8,retrieval=@{model}/razor_heads.txt)/int8",
    "sentinel-analogue(k=32)/bf16",
    "sentinel-analogue(k=16)/bf16",
    "sentinel-analogue(k=8)/bf16",
    "sentinel-analogue(k=4)/bf16",
    "sentinel-analogue(k=32)/int8",
    "sentinel-analogue(k=16)/int8",
    "sentinel-analogue(k=8)/int8",
    "sentinel-analogue(k=4)/int8",
    "expected-attn(keep=0.5)/bf16",
    "expected-attn(keep=0.5)/int8",
    "expected-attn(keep=0.25)/int8",
    "expected-attn(keep=0.5)/int4",
    "expected-attn(keep=0.25)/int4",
    "sinks(4)+window(8)+expected-attn(keep=0.25)/int4",
    "snapkv(keep=0.5,obs=16,pool=7)/bf16",
    "snapkv(keep=0.5,obs=16,pool=7)/int8",
    "snapkv(keep=0.25,obs=16,pool=7)/int8",
    "snapkv(keep=0.25,obs=16,pool=7)/int4",
    "snapkv(keep=0.75,obs=16,pool=7)/int4(g=64)",
    "snapkv(keep=0.125,obs=16,pool=7)/int4",
    "expected-attn(keep=0.75)/int4(g=64)",
    "expected-attn(keep=0.125)/int4",
    "bf16/minicache(from=0.5)",
    "bf16/minicache(from=0,retain=0.25)",
    "int4/minicache(from=0.5)",
    "bf16/pod(from=0.5)",
    "bf16/pod",
    "bf16/pod(group=4)",
    "int4/pod",
};

struct Options {
  std::vector<std::string> models;
  std::string text;
  int windows = 4;
  int window_tokens = 1024;
  int span_tokens = 64;
  int greedy_prefix_tokens = 256;
  int greedy_new_tokens = 32;
  int threads = 2;
  model::WeightsChoice weights;
  std::vector<std::string> policies;
  std::string tasks = "reference/tasks_heldout.jsonl";  // relative to the model directory
  double retrieval_check = 0.5;
  std::string out_csv = "docs/quality.csv";
  std::string out_md = "docs/quality.md";
};

struct Row {
  std::string model;
  std::string policy;  // canonical form
  bool query_agnostic = true;
  double bytes_per_token = 0;
  double ratio_vs_bf16 = 0;
  double ppl = 0;
  double ppl_delta_pct = 0;
  double kl_mean = 0;
  double top1_agreement = 0;
  double greedy_match = 0;
  double retrieval_exact = -1;   // -1: not measured
  double multiquery_exact = -1;  // -1: not measured
  std::map<double, double> needle_by_depth;  // empty: not measured
};

struct ModelResult {
  std::string model;
  double dense_ppl = 0;
  int64_t scored_positions = 0;
  int num_prompts = 0;
  // The retrieval check on the uncompressed cache (-1: no task file).
  int num_retrieval = 0, num_multiquery = 0;
  double dense_retrieval = -1, dense_multiquery = -1;
  std::map<double, double> dense_needle_by_depth;
  bool retrieves = false;  // dense_retrieval >= kRetrievalCheck: the columns are measured
  std::vector<Row> rows;
  std::vector<std::string> unimplemented;  // policy: message
};

// Row-wise log-softmax of `logits` [rows, vocab], in place.
void LogSoftmax(std::vector<float>* logits, int vocab) {
  const int64_t rows = static_cast<int64_t>(logits->size()) / vocab;
  for (int64_t r = 0; r < rows; ++r) {
    float* x = logits->data() + r * vocab;
    const float mx = *std::max_element(x, x + vocab);
    double sum = 0;
    for (int i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(x[i] - mx));
    const float lse = mx + static_cast<float>(std::log(sum));
    for (int i = 0; i < vocab; ++i) x[i] -= lse;
  }
}

// The compressor's own status on one span of small pseudo-random K/V, before any forward
// step: an unsupported policy (Unimplemented) is known without feeding a window (Forward
// returns a compressor's error with its own code too, but only once a span completes).
absl::Status ProbeCompressor(kvcache::SpanCompressor* compressor, const kvcache::CompressedKvCache::Options& o) {
  kvcache::DenseSpanView view;
  view.geometry = {.num_layers = o.num_layers, .num_kv_heads = o.num_kv_heads, .head_dim = o.head_dim,
                   .span_tokens = o.span_tokens};
  const int64_t n = int64_t{o.num_layers} * o.num_kv_heads * o.span_tokens * o.head_dim;
  std::vector<float> k(n), v(n);
  for (int64_t i = 0; i < n; ++i) {
    k[i] = static_cast<float>((i * 7919) % 101) / 101.0f - 0.5f;
    v[i] = static_cast<float>((i * 104729) % 97) / 97.0f - 0.5f;
  }
  view.kv = {.keys = k.data(),
             .values = v.data(),
             .layer_stride = int64_t{o.num_kv_heads} * o.span_tokens * o.head_dim,
             .head_stride = int64_t{o.span_tokens} * o.head_dim,
             .token_stride = o.head_dim};
  // Query-reading policies get queries of the span and of its observation window.
  const kvcache::QueryNeeds needs = compressor->query_needs();
  const int q_tokens = o.span_tokens + needs.observation_tokens;
  const int64_t q_row = int64_t{o.num_heads} * o.head_dim;
  std::vector<float> q(int64_t{o.num_layers} * q_tokens * q_row);
  for (int64_t i = 0; i < static_cast<int64_t>(q.size()); ++i) {
    q[i] = static_cast<float>((i * 6151) % 89) / 89.0f - 0.5f;
  }
  kvcache::DenseQueryView queries{.q = q.data(),
                                  .layer_stride = int64_t{q_tokens} * q_row,
                                  .token_stride = q_row,
                                  .num_heads = o.num_heads,
                                  .num_tokens = q_tokens,
                                  .rope_inv_freq = o.rope_inv_freq};
  if (needs.any()) view.queries = &queries;
  return compressor->Compress(view).status();
}

int Argmax(const float* x, int n) { return static_cast<int>(std::max_element(x, x + n) - x); }

// Prompts of <model>/reference/prompts.json, without their leading bos.
absl::StatusOr<std::vector<std::vector<int32_t>>> LoadPrompts(const std::string& dir, int32_t bos) {
  std::vector<std::vector<int32_t>> prompts;
  absl::StatusOr<std::string> text = ReadFile(dir + "/reference/prompts.json");
  if (!text.ok()) return prompts;  // no prompt set: greedy_match left empty
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.contains("prompts")) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/reference/prompts.json: bad JSON"));
  }
  for (const auto& p : j["prompts"]) {
    std::vector<int32_t> ids = p["ids"].get<std::vector<int32_t>>();
    if (!ids.empty() && ids[0] == bos) ids.erase(ids.begin());
    prompts.push_back(std::move(ids));
  }
  return prompts;
}

// A model "retrieves in context" when its uncompressed exact match on the kv + needle rows
// reaches --retrieval-check (default 0.5); below it the retrieval columns would measure
// noise and stay empty.

absl::StatusOr<ModelResult> RunModel(const Options& o, const std::string& dir, const std::string& text) {
  ModelResult result;
  result.model = dir.substr(dir.find_last_of('/') + 1);
  ASSIGN_OR_RETURN(std::unique_ptr<model::Model> m, model::Model::Load(dir, {.num_threads = o.threads, .weights = o.weights}));
  ASSIGN_OR_RETURN(std::unique_ptr<model::Tokenizer> tok, model::Tokenizer::LoadFromDir(dir));
  const model::ModelConfig& c = m->config();
  const int vocab = c.vocab_size;
  const int S = o.span_tokens;
  const int W = std::min(o.window_tokens, c.max_position_embeddings);
  if (W <= S + 1) return absl::InvalidArgumentError("--window-tokens must exceed --span-tokens + 1");
  const int32_t bos = tok->bos_id().value_or(0);

  // Held-out tokens: the windows first, then the greedy prefix.
  const size_t need_tokens = static_cast<size_t>(o.windows) * (W - 1) + o.greedy_prefix_tokens;
  const std::vector<int32_t> ids = tok->Encode(text.substr(0, std::min(text.size(), need_tokens * 16)));
  if (ids.size() < need_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("--text has ", ids.size(), " tokens, need ", need_tokens));
  }
  std::vector<std::vector<int32_t>> windows;
  for (int w = 0; w < o.windows; ++w) {
    std::vector<int32_t> win = {bos};
    win.insert(win.end(), ids.begin() + static_cast<int64_t>(w) * (W - 1), ids.begin() + static_cast<int64_t>(w + 1) * (W - 1));
    windows.push_back(std::move(win));
  }
  const auto prefix_begin = ids.begin() + static_cast<int64_t>(o.windows) * (W - 1);
  ASSIGN_OR_RETURN(std::vector<std::vector<int32_t>> raw_prompts, LoadPrompts(dir, bos));
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& p : raw_prompts) {
    std::vector<int32_t> full = {bos};
    full.insert(full.end(), prefix_begin, prefix_begin + o.greedy_prefix_tokens);
    full.insert(full.end(), p.begin(), p.end());
    if (static_cast<int>(full.size()) + o.greedy_new_tokens <= c.max_position_embeddings) prompts.push_back(full);
  }
  result.num_prompts = static_cast<int>(prompts.size());

  // Dense baseline: log-softmax of every window, greedy continuations.
  std::vector<std::vector<float>> dense_logp(windows.size());
  double nll = 0;
  int64_t count = 0;
  for (size_t w = 0; w < windows.size(); ++w) {
    ASSIGN_OR_RETURN(auto cache, m->NewDenseCache(W));
    RETURN_IF_ERROR(Feed(*m, cache.get(), windows[w], W, /*all_logits=*/true, &dense_logp[w]));
    LogSoftmax(&dense_logp[w], vocab);
    for (int p = S; p + 1 < W; ++p) {
      nll -= dense_logp[w][static_cast<int64_t>(p) * vocab + windows[w][p + 1]];
      ++count;
    }
  }
  result.dense_ppl = std::exp(nll / count);
  result.scored_positions = count;
  std::vector<std::vector<int32_t>> dense_greedy;
  for (const auto& p : prompts) {
    ASSIGN_OR_RETURN(auto cache, m->NewDenseCache(static_cast<int>(p.size()) + o.greedy_new_tokens));
    ASSIGN_OR_RETURN(auto g, Greedy(*m, cache.get(), p, S, o.greedy_new_tokens));
    dense_greedy.push_back(std::move(g));
  }

  // Retrieval: the uncompressed check first.
  ASSIGN_OR_RETURN(std::vector<TaskRow> tasks, LoadTasks(dir + "/" + o.tasks));
  for (const TaskRow& t : tasks) (t.task == "multiquery" ? result.num_multiquery : result.num_retrieval)++;
  if (!tasks.empty()) {
    ASSIGN_OR_RETURN(RetrievalScore dense, ScoreTasks(*m, *tok, tasks, bos, S, /*compressor=*/nullptr));
    result.dense_retrieval = dense.retrieval;
    result.dense_multiquery = dense.multiquery;
    result.dense_needle_by_depth = dense.needle_by_depth;
    result.retrieves = dense.retrieval >= o.retrieval_check;
    std::fprintf(stderr, "%s dense retrieval %.3f multiquery %.3f: %s\n", result.model.c_str(), dense.retrieval,
                 dense.multiquery, result.retrieves ? "measured per policy" : "does not retrieve; not measured");
  }

  std::vector<std::string> policies = o.policies;
  if (std::find(policies.begin(), policies.end(), "bf16") == policies.end()) {
    policies.insert(policies.begin(), "bf16");  // the reference of ratio_vs_bf16
  }
  double bf16_bytes_per_token = 0;
  std::vector<float> logp;
  for (const std::string& template_policy : policies) {
    const std::string text_policy = absl::StrReplaceAll(template_policy, {{"{model}", dir}});
    absl::StatusOr<kvcache::Policy> parsed = kvcache::ParsePolicy(text_policy);
    if (parsed.status().code() == absl::StatusCode::kNotFound) {  // a missing @file
      result.unimplemented.push_back(absl::StrCat("`", template_policy, "`: ", parsed.status().message()));
      continue;
    }
    ASSIGN_OR_RETURN(kvcache::Policy policy, std::move(parsed));
    auto compressor = std::make_shared<kvcache::PolicySpanCompressor>(
        kvcache::PolicySpanCompressor::Options{policy, c.fingerprint});
    Row row;
    row.model = result.model;
    row.policy = policy.ToString();
    row.query_agnostic = policy.query_agnostic();
    double span_bytes = 0, kl = 0, agree = 0, pnll = 0;
    int64_t num_spans = 0;
    absl::Status status = ProbeCompressor(compressor.get(), kvcache::CompressedKvCache::OptionsFor(c, S, W));
    for (size_t w = 0; w < windows.size() && status.ok(); ++w) {
      auto cache_or = kvcache::CompressedKvCache::Create(kvcache::CompressedKvCache::OptionsFor(c, S, W), compressor);
      if (!cache_or.ok()) return cache_or.status();
      kvcache::CompressedKvCache* cache = cache_or->get();
      status = Feed(*m, cache, windows[w], S, /*all_logits=*/true, &logp);
      if (!status.ok()) break;
      // Every full span is compressed, except those a query-aware policy's observation
      // window has not passed yet.
      if (cache->num_compressed_tokens() < (W - compressor->query_needs().observation_tokens) / S * S) {
        status = absl::InternalError("spans were not compressed");
        break;
      }
      for (const kvcache::Span& span : cache->spans()) span_bytes += kvcache::SerializedSize(span);
      num_spans += static_cast<int64_t>(cache->spans().size());
      LogSoftmax(&logp, vocab);
      for (int p = S; p + 1 < W; ++p) {
        const float* d = &dense_logp[w][static_cast<int64_t>(p) * vocab];
        const float* q = &logp[static_cast<int64_t>(p) * vocab];
        double k = 0;
        for (int i = 0; i < vocab; ++i) k += std::exp(static_cast<double>(d[i])) * (d[i] - q[i]);
        kl += k;
        agree += Argmax(d, vocab) == Argmax(q, vocab) ? 1 : 0;
        pnll -= q[windows[w][p + 1]];
      }
    }
    if (status.code() == absl::StatusCode::kUnimplemented) {
      result.unimplemented.push_back(absl::StrCat("`", row.policy, "`: ", status.message()));
      std::fprintf(stderr, "%s %s: not implemented\n", result.model.c_str(), row.policy.c_str());
      continue;
    }
    RETURN_IF_ERROR(status);
    row.bytes_per_token = span_bytes / num_spans / S;
    if (row.policy == "bf16") bf16_bytes_per_token = row.bytes_per_token;
    row.ppl = std::exp(pnll / count);
    row.ppl_delta_pct = 100.0 * (row.ppl / result.dense_ppl - 1.0);
    row.kl_mean = kl / count;
    row.top1_agreement = agree / count;
    double match = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto cache_or = kvcache::CompressedKvCache::Create(
          kvcache::CompressedKvCache::OptionsFor(c, S, static_cast<int>(prompts[i].size()) + o.greedy_new_tokens),
          compressor);
      if (!cache_or.ok()) return cache_or.status();
      ASSIGN_OR_RETURN(auto g, Greedy(*m, cache_or->get(), prompts[i], S, o.greedy_new_tokens));
      int same = 0;
      while (same < o.greedy_new_tokens && g[same] == dense_greedy[i][same]) ++same;
      match += static_cast<double>(same) / o.greedy_new_tokens;
    }
    row.greedy_match = prompts.empty() ? -1 : match / prompts.size();
    if (result.retrieves) {
      ASSIGN_OR_RETURN(RetrievalScore got, ScoreTasks(*m, *tok, tasks, bos, S, compressor));
      row.retrieval_exact = got.retrieval;
      row.multiquery_exact = got.multiquery;
      row.needle_by_depth = got.needle_by_depth;
    }
    std::fprintf(stderr, "%s %-50s %7.1f B/tok ppl %.3f (%+.2f%%) kl %.4f top1 %.4f greedy %.3f\n",
                 result.model.c_str(), row.policy.c_str(), row.bytes_per_token, row.ppl, row.ppl_delta_pct,
                 row.kl_mean, row.top1_agreement, row.greedy_match);
    result.rows.push_back(row);
  }
  for (Row& row : result.rows) row.ratio_vs_bf16 = bf16_bytes_per_token / row.bytes_per_token;
  std::sort(result.rows.begin(), result.rows.end(),
            [](const Row& a, const Row& b) { return a.ratio_vs_bf16 < b.ratio_vs_bf16; });
  return result;
}

std::string CsvQuote(const std::string& s) {
  if (s.find_first_of(",\"") == std::string::npos) return s;
  std::string out = "\"";
  for (char ch : s) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return out + "\"";
}

std::string Csv(const std::vector<ModelResult>& results) {
  std::string out =
      "model,policy,query_agnostic,bytes_per_token,ratio_vs_bf16,ppl,ppl_delta_pct,kl_mean,top1_agreement,"
      "greedy_match,retrieval_exact,multiquery_exact\n";
  for (const ModelResult& r : results) {
    for (const Row& row : r.rows) {
      auto cell = [](double x) { return x < 0 ? std::string() : absl::StrFormat("%.4f", x); };
      absl::StrAppendFormat(&out, "%s,%s,%d,%.3f,%.4f,%.4f,%.4f,%.6f,%.6f,%s,%s,%s\n", row.model,
                            CsvQuote(row.policy), row.query_agnostic ? 1 : 0, row.bytes_per_token, row.ratio_vs_bf16,
                            row.ppl, row.ppl_delta_pct, row.kl_mean, row.top1_agreement, cell(row.greedy_match),
                            cell(row.retrieval_exact), cell(row.multiquery_exact));
    }
  }
  return out;
}

bool MeetsTarget(const Row& row) {
  return row.ratio_vs_bf16 >= 4.0 && row.ppl_delta_pct <= 1.0 && row.top1_agreement >= 0.99;
}

std::string Markdown(const Options& o, const std::string& command, const std::vector<ModelResult>& results) {
  std::string md = "# Quality of the compression policies\n\n";
  absl::StrAppend(&md,
                  "Generated by `bench/quality_bench` (issue 3); do not edit by hand. Produced by "
                  "`bench/run_quality.sh <build dir>`, which writes the held-out text with `xz -dc "
                  "tools/corpus/brown_valid.txt.xz` to a file and ran:\n\n```\n",
                  command, "\n```\n\n");
  absl::StrAppendFormat(&md,
                        "Machine: CPU only (fp32 forward pass, %d threads, %u hardware threads). Windows: %d of "
                        "%d tokens each (bos + %d held-out tokens), span S = %d tokens.\n\n",
                        o.threads, std::thread::hardware_concurrency(), o.windows, o.window_tokens,
                        o.window_tokens - 1, o.span_tokens);
  absl::StrAppend(&md, R"(## Definitions

- **bytes_per_token**: mean over every compressed span of all windows of
  `SerializedSize(span) / S`: the real serialized size (header, strings, block arrays,
  checksum) per token of the span. **ratio_vs_bf16** = bytes_per_token of the `bf16`
  policy (every token, dense bf16 K/V, same headers) / this policy's bytes_per_token.
- **Teacher-forced metrics**: each window runs once through the dense fp32 cache (the
  uncompressed baseline) in one step, and once per policy through a `CompressedKvCache`
  fed in chunks of S tokens, so each span is compressed at the Commit that completes it
  and every later chunk attends to the compressed spans (the last partial span stays
  dense). All metrics are over positions p >= S only (predicting token p+1): the queries
  of the first span see no compressed token and would agree by construction.
  **ppl** = exp(mean NLL); **ppl_delta_pct** = 100 (ppl / dense ppl - 1);
  **kl_mean** = mean over positions of KL(dense || compressed) of the next-token
  distributions (nats; a value that prints as -0.0000 is fp32 rounding of a zero KL);
  **top1_agreement** = fraction of positions where the argmax of
  the two distributions is the same token.
- **greedy_match**: each prompt of `models/<m>/reference/prompts.json` is padded in front
  with bos + )",
                  o.greedy_prefix_tokens, R"( held-out tokens (taken after the evaluation windows) so that
  compression matters, prefilled in chunks of S, then continued greedily for )",
                  o.greedy_new_tokens, R"( tokens
  with the compressed and the dense cache (spans compress during decode as they
  complete). Per prompt: length of the common prefix of the two continuations / )",
                  o.greedy_new_tokens, R"(;
  the column is the mean over prompts (1.0 = identical continuations).
- **retrieval_exact, multiquery_exact**: exact match of the greedy answer on the held-out
  rows of `models/<m>/)", o.tasks, R"(` (for kvspan-brown:
  `/usr/bin/python3 tools/tasks.py --heldout --seed 7 --n 20 --questions 4
  --context-tokens 1024 --out models/kvspan-brown/reference/tasks_heldout.jsonl`: 20 kv,
  20 needle and 20 multi-query rows in 5 groups of 4, context from the validation split). retrieval_exact: the kv-recall and
  needle rows, prompt = bos + context + question prefilled in chunks of S (the question
  is visible to the spans that complete while it is fed). multiquery_exact: the
  multi-query rows, several questions over ONE context: the context is prefilled and
  compressed once, with no question in sight, and every question continues from those
  same spans (`CompressedKvCache::FromSpans`). Both are measured only for a model that
  passes the check uncompressed (retrieval exact match >= )", o.retrieval_check, R"(); the
  check's result is stated per model below.
- **query_agnostic**: `Policy::query_agnostic()` (1 = may be written to the cache store).
- **razor**: `retrieval=none` gives every head sinks + window + 1 compensation entry;
  `retrieval=@models/<m>/razor_heads.txt` keeps the heads that `kvspan calibrate-razor`
  found (echo and induction scores on repeated random tokens) whole.
- **expected-attn** ranks a span's tokens by the attention that future queries are expected
  to pay them, from the mean and covariance of the span's own queries (so it stays
  query-agnostic and causal).
- **snapkv** is query-aware (`query_agnostic` = no): each span keeps the tokens that the
  queries of the `obs` tokens after it vote for, so a span is compressed only once `obs`
  committed tokens follow it. Fed in chunks of S here, the observation window is the
  `obs` tokens right after each span (a sliding window), not the end of a prompt as in the
  paper's single prefill; with S-token chunks it is also the last `obs` tokens of the
  chunk after the span. Such spans serve one sequence's decode-side working set and are
  never stored.
- **sentinel** (the exact method of arXiv 2310.08152, `kvcache/sentinel.h`) needs a
  checkpoint post-trained with `<CL>`/`<CR>` sentinel tokens; no model in models/ carries
  them, so only the training-free `sentinel-analogue` rows are measured.
- pod runs **training-free**: PoD (arXiv 2412.02252) post-trains the model so that upper
  layers read the lowest layer's keys for distant tokens; kvspan-brown was not trained for
  it, so the pod rows measure the mechanism on an unadapted checkpoint, not the paper's
  method. minicache (arXiv 2405.14366) is training-free by design.

)");
  const double bands[][2] = {{1.5, 3}, {3, 6}, {6, 12}, {12, 24}};
  for (const ModelResult& r : results) {
    absl::StrAppendFormat(&md, "## %s\n\nDense fp32 perplexity: %.4f over %d positions (%d windows); greedy prompts: %d.\n\n",
                          r.model, r.dense_ppl, r.scored_positions, o.windows, r.num_prompts);
    if (r.dense_retrieval < 0) {
      absl::StrAppendFormat(&md, "Retrieval check: no `%s` for this model; retrieval columns not measured.\n\n",
                            o.tasks);
    } else {
      absl::StrAppendFormat(&md,
                            "Retrieval check (uncompressed): exact match %.3f on %d kv/needle rows, %.3f on %d "
                            "multi-query rows: %s\n\n",
                            r.dense_retrieval, r.num_retrieval, r.dense_multiquery, r.num_multiquery,
                            r.retrieves ? "the model retrieves in context; the columns are measured."
                                        : "**this model does not retrieve in context**, so retrieval_exact and "
                                          "multiquery_exact are not measured for it (empty cells).");
    }
    md += "| policy | query_agnostic | bytes/token | ratio vs bf16 | ppl | ppl Δ % | KL mean | top-1 agree | greedy match "
          "| retrieval | multi-query |\n";
    md += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (const Row& row : r.rows) {
      auto cell = [](double x) { return x < 0 ? std::string() : absl::StrFormat("%.3f", x); };
      absl::StrAppendFormat(&md, "| `%s` | %s | %.1f | %.2f | %.4f | %+.2f | %.4f | %.4f | %s | %s | %s |\n",
                            row.policy, row.query_agnostic ? "yes" : "no", row.bytes_per_token, row.ratio_vs_bf16,
                            row.ppl, row.ppl_delta_pct, row.kl_mean, row.top1_agreement, cell(row.greedy_match),
                            cell(row.retrieval_exact), cell(row.multiquery_exact));
    }
    if (r.retrieves && !r.dense_needle_by_depth.empty()) {
      // Long-context view: where in the context each policy loses the needle.
      md += "\n### Needle exact match by depth\n\nThe needle rows of the retrieval column, split by where the "
            "needle sits in the context (0 = its start, 1 = right before the question).\n\n| policy |";
      std::string rule = "|---|";
      for (const auto& [depth, unused] : r.dense_needle_by_depth) {
        absl::StrAppendFormat(&md, " %g |", depth);
        rule += "---:|";
      }
      md += "\n" + rule + "\n| dense (uncompressed) |";
      for (const auto& [depth, exact] : r.dense_needle_by_depth) absl::StrAppendFormat(&md, " %.2f |", exact);
      md += "\n";
      for (const Row& row : r.rows) {
        absl::StrAppendFormat(&md, "| `%s` |", row.policy);
        for (const auto& [depth, unused] : r.dense_needle_by_depth) {
          const auto it = row.needle_by_depth.find(depth);
          md += it == row.needle_by_depth.end() ? std::string(" |") : absl::StrFormat(" %.2f |", it->second);
        }
        md += "\n";
      }
    }
    md += "\n### Best policy per ratio band (lowest ppl Δ)\n\nStorable = query-agnostic (may be written to the cache "
          "store); the query-aware SnapKV serves the decode side only.\n\n"
          "| band (ratio vs bf16) | best policy | ratio | ppl Δ % | top-1 agree | best storable policy | ratio | ppl Δ % "
          "| top-1 agree |\n|---|---|---:|---:|---:|---|---:|---:|---:|\n";
    auto describe = [](const Row* row) {
      return row == nullptr ? std::string("none reaches it | | |")
                            : absl::StrFormat("`%s` | %.2f | %+.2f | %.4f", row->policy, row->ratio_vs_bf16,
                                              row->ppl_delta_pct, row->top1_agreement);
    };
    // The best row of a ratio band by `better`, and the best query-agnostic (storable) one.
    auto best_in_band = [&r](const auto& band, auto better) {
      std::pair<const Row*, const Row*> best{nullptr, nullptr};
      for (const Row& row : r.rows) {
        if (row.ratio_vs_bf16 < band[0] || row.ratio_vs_bf16 >= band[1]) continue;
        if (best.first == nullptr || better(row, *best.first)) best.first = &row;
        if (row.query_agnostic && (best.second == nullptr || better(row, *best.second))) best.second = &row;
      }
      return best;
    };
    for (const auto& band : bands) {
      const auto [best, best_storable] =
          best_in_band(band, [](const Row& a, const Row& b) { return a.ppl_delta_pct < b.ppl_delta_pct; });
      absl::StrAppendFormat(&md, "| [%g, %g) | %s | %s |\n", band[0], band[1], describe(best), describe(best_storable));
    }
    if (r.retrieves) {
      absl::StrAppendFormat(&md,
                            "\n### Best policy per ratio band by retrieval (highest retrieval exact; dense %.3f)\n\n"
                            "| band (ratio vs bf16) | best policy | ratio | retrieval | ppl Δ %% | best storable policy | "
                            "ratio | retrieval | ppl Δ %% |\n|---|---|---:|---:|---:|---|---:|---:|---:|\n",
                            r.dense_retrieval);
      auto describe_retrieval = [](const Row* row) {
        return row == nullptr ? std::string("none reaches it | | |")
                              : absl::StrFormat("`%s` | %.2f | %.3f | %+.2f", row->policy, row->ratio_vs_bf16,
                                                row->retrieval_exact, row->ppl_delta_pct);
      };
      for (const auto& band : bands) {
        const auto [best, best_storable] =
            best_in_band(band, [](const Row& a, const Row& b) { return a.retrieval_exact > b.retrieval_exact; });
        absl::StrAppendFormat(&md, "| [%g, %g) | %s | %s |\n", band[0], band[1], describe_retrieval(best),
                              describe_retrieval(best_storable));
      }
    }
    std::vector<std::string> meeting;
    const Row* best_top1 = nullptr;
    for (const Row& row : r.rows) {
      if (MeetsTarget(row)) meeting.push_back(absl::StrFormat("`%s` (%.2fx)", row.policy, row.ratio_vs_bf16));
      if (row.ratio_vs_bf16 >= 4.0 && (best_top1 == nullptr || row.top1_agreement > best_top1->top1_agreement)) {
        best_top1 = &row;
      }
    }
    md += "\n**Target** (ratio >= 4 vs bf16 with ppl Δ <= 1% and top-1 agreement >= 99%): ";
    if (!meeting.empty()) {
      absl::StrAppend(&md, "**met** by ", absl::StrJoin(meeting, ", "), ".\n\n");
    } else if (best_top1 != nullptr) {
      absl::StrAppendFormat(&md,
                            "**not met**. At ratio >= 4 the highest top-1 agreement is `%s` (%.2fx): ppl Δ "
                            "%+.2f%%, top-1 %.4f.\n\n",
                            best_top1->policy, best_top1->ratio_vs_bf16, best_top1->ppl_delta_pct,
                            best_top1->top1_agreement);
    } else {
      md += "**not met**: no policy reaches ratio 4.\n\n";
    }
    if (!r.unimplemented.empty()) {
      md += "Not measured (engine returns Unimplemented, or the model has no such calibration file; not in "
            "the CSV):\n\n";
      for (const std::string& u : r.unimplemented) absl::StrAppend(&md, "- ", u, "\n");
      md += "\n";
    }
  }
  md += "## Plot\n\n![quality against bytes per token](quality.png)\n\n"
        "Drawn by `/usr/bin/python3 bench/plot_quality.py docs/quality.csv docs/quality.png` "
        "(bench/run_quality.sh runs both steps).\n";
  return md;
}

std::vector<std::string> DefaultModels() {
  std::vector<std::string> dirs;
  FILE* pipe = popen("ls -d models/*/ 2>/dev/null", "r");
  if (pipe == nullptr) return dirs;
  char buf[4096];
  while (std::fgets(buf, sizeof(buf), pipe) != nullptr) {
    std::string d(buf);
    while (!d.empty() && (d.back() == '\n' || d.back() == '/')) d.pop_back();
    if (FileExists(d + "/config.json")) dirs.push_back(d);
  }
  pclose(pipe);
  return dirs;
}

absl::Status Run(int argc, char** argv) {
  Options o;
  FlagSet flags("quality_bench", "Quality of every compression policy against the dense cache (issue 3).");
  flags.Add("model", &o.models, "model directory (repeatable; default: every models/*/ with config.json)");
  flags.Add("text", &o.text, "held-out text file (e.g. xz -dc tools/corpus/brown_valid.txt.xz)");
  flags.Add("windows", &o.windows, "number of evaluation windows");
  flags.Add("window-tokens", &o.window_tokens, "tokens per window, bos included (capped at the model's context)");
  flags.Add("span-tokens", &o.span_tokens, "span size S");
  flags.Add("greedy-prefix-tokens", &o.greedy_prefix_tokens, "held-out tokens put before each greedy prompt");
  flags.Add("greedy-new-tokens", &o.greedy_new_tokens, "greedy continuation length");
  flags.Add("threads", &o.threads, "threads for the forward pass");
  model::AddWeightsFlag(flags, &o.weights);
  flags.Add("policy", &o.policies, "policy string (repeatable; default: a built-in list of every policy)");
  flags.Add("tasks", &o.tasks, "held-out retrieval tasks (tools/tasks.py JSONL), relative to each model directory");
  flags.Add("retrieval-check", &o.retrieval_check,
            "uncompressed retrieval exact match a model needs for the retrieval columns to be measured");
  flags.Add("out-csv", &o.out_csv, "CSV output");
  flags.Add("out-md", &o.out_md, "Markdown output");
  RETURN_IF_ERROR(flags.Parse(argc, argv));
  if (flags.help_requested()) {
    std::printf("%s", flags.Usage().c_str());
    return absl::OkStatus();
  }
  if (o.text.empty()) return absl::InvalidArgumentError("--text is required");
  if (o.windows < 1 || o.span_tokens < 1 || o.greedy_new_tokens < 1 || o.greedy_prefix_tokens < 0) {
    return absl::InvalidArgumentError("--windows, --span-tokens, --greedy-new-tokens must be >= 1");
  }
  if (o.models.empty()) o.models = DefaultModels();
  if (o.models.empty()) return absl::NotFoundError("no models/*/config.json found (run from the repo root)");
  if (o.policies.empty()) o.policies.assign(std::begin(kDefaultPolicies), std::end(kDefaultPolicies));
  ASSIGN_OR_RETURN(std::string text, ReadFile(o.text));
  std::vector<ModelResult> results;
  for (const std::string& dir : o.models) {
    ASSIGN_OR_RETURN(ModelResult r, RunModel(o, dir, text));
    results.push_back(std::move(r));
  }
  const std::string command = CommandLine(argc, argv);
  std::printf("%s\n", command.c_str());
  RETURN_IF_ERROR(WriteFile(o.out_csv, Csv(results)));
  // A section, so that other programs' sections of the page (weights_quality_bench's) survive.
  RETURN_IF_ERROR(WriteDocSection(o.out_md, "quality_bench", Markdown(o, command, results)));
  std::printf("wrote %s and %s\n", o.out_csv.c_str(), o.out_md.c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace kvspan::bench

int main(int argc, char** argv) {
  absl::Status s = kvspan::bench::Run(argc, argv);
  if (!s.ok()) {
    std::fprintf(stderr, "quality_bench: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
