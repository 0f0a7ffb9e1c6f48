// serve_bench: a gRPC client of a running `kvspan serve` that measures it from outside
// (bench/run_serve_bench.sh starts the servers). Four parts, each a function that runs
// its measurements and returns a Markdown subsection for docs/performance.md:
//   RunTtftPart       time to first token, prefix hit in the cache store vs recompute;
//   RunDecodePart     decode throughput with 1..N concurrent streams;
//   RunAdmissionPart  how many sequences each policy admits under one KV budget;
//   RunTracePart      a multi-turn trace: per turn, prompt-cache hit rate and TTFT.
// Errors: the first failed RPC's status (a part does not report partial tables).
#ifndef KVSPAN_BENCH_SERVE_BENCH_H_
#define KVSPAN_BENCH_SERVE_BENCH_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvspan/v1/serving.pb.h"
#include "node/serving_client.h"

namespace kvspan::bench {

struct ServeBenchOptions {
  // Tenants are `tenant_prefix` + a part and a counter, so runs against the same
  // server never share cache-store entries.
  std::string tenant_prefix = "serve_bench";
  uint64_t seed = 1;  // random prompt ids

  // TTFT: per policy and prompt length, `reps` unique prompts, each sent twice, the
  // second time `hit_delay_ms` after the first finished (the server puts spans to the
  // store asynchronously).
  std::vector<std::string> policies = {"bf16", "int8(g=32)", "int4(g=32)"};
  std::vector<int> prompt_lengths = {1024, 4096};
  int reps = 5;
  int hit_delay_ms = 200;

  // Decode: streams of `decode_prompt_tokens` random ids, `decode_max_tokens` each; each
  // level runs `reps` times and reports the run with the median aggregate.
  std::vector<int> concurrency_levels = {1, 4, 16, 64};
  int decode_prompt_tokens = 16;
  int decode_max_tokens = 32;

  // Admission: `admission_streams` streams per policy, each `admission_prompt_tokens`
  // random ids and `admission_max_tokens` generated (0: to the end of the context);
  // watched for at most `admission_seconds` or until the peak running count holds for
  // `settle_ms`.
  std::vector<std::string> admission_policies = {"bf16", "int8(g=32)", "int4(g=32)",
                                                 "kvmerger(sim=0.7)/int4(g=64)"};
  int admission_streams = 64;
  int admission_prompt_tokens = 256;
  int admission_max_tokens = 512;
  double admission_seconds = 30;
  int settle_ms = 1500;
  std::string quality_csv = "docs/quality.csv";

  // Trace: `sessions` concurrent sessions of `turns` turns; each turn sends
  // [turn_min_tokens, turn_max_tokens] random ids and generates `turn_completion_tokens`.
  int sessions = 16;
  int turns = 8;
  int turn_min_tokens = 32;
  int turn_max_tokens = 64;
  int turn_completion_tokens = 16;
};

absl::StatusOr<std::string> RunTtftPart(const node::ServingClient& client,
                                        const ServeBenchOptions& options);
absl::StatusOr<std::string> RunDecodePart(const node::ServingClient& client,
                                          const ServeBenchOptions& options);
// `client` talks to the server with the KV budget under test.
absl::StatusOr<std::string> RunAdmissionPart(const node::ServingClient& client,
                                             const ServeBenchOptions& options);
absl::StatusOr<std::string> RunTracePart(const node::ServingClient& client,
                                         const ServeBenchOptions& options);

// Helpers the parts share (serve_bench_util.cc).

// `num_tokens` ids drawn uniformly from [3, vocab_size) by a generator seeded with
// (seed, stream): the same arguments give the same ids. Ids 0-2 are skipped because the
// shipped tokenizer reserves them (bos, eos, pad).
std::vector<int32_t> RandomIds(uint64_t seed, uint64_t stream, int num_tokens, int vocab_size);

// A greedy request for `ids` with `max_tokens`, policy and tenant as given.
kvspan::v1::GenerateRequest IdsRequest(const std::vector<int32_t>& ids, int max_tokens,
                                       const std::string& policy, const std::string& tenant);

// The q-quantile (0..1, nearest rank) of `values`; 0 for an empty vector.
double Quantile(std::vector<double> values, double q);

// Runs fn(0) .. fn(n - 1) on n threads at once and joins them. Returns the first error
// any of them returned (the others still run to their end).
absl::Status RunOnThreads(int n, const std::function<absl::Status(int)>& fn);

// Splits "a,b(c=1,d=2),e" at the commas outside parentheses (policy strings have commas).
std::vector<std::string> SplitTopLevel(const std::string& list);

// The row of the quality CSV at `path` (bench/quality_bench.cc's columns) whose policy
// column equals `policy` (and whose model column equals `model`, when a row for that
// model exists): "MODEL: bytes/token B, ppl X%, top-1 Y, greedy match Z" (X: the
// perplexity change vs the dense cache), or "n/a" when no row matches.
std::string QualitySummary(const std::string& path, const std::string& model,
                           const std::string& policy);

}  // namespace kvspan::bench

#endif  // KVSPAN_BENCH_SERVE_BENCH_H_
