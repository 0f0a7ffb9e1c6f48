// Decode attention over compressed spans (kernels::SpanAttention, the fused-dequantization
// fast path that CompressedKvCache runs: int8 queries against quantized keys, and the fp32
// key path beside it) against dense fp32 attention (kernels::DenseAttentionPartial) over
// the same context, one KV head and its GQA group of query heads, one thread: the cost of
// one decode step for one KV head. The context is N / S blocks of S = 64 entries, as
// CompressedKvCache holds it; at head_dim 128 / 4K also one call per query head (what GQA
// sharing saves). Written into docs/performance.md (section span_attention_bench).
//
//   build/bench/span_attention_bench [--out docs/performance.md] [--reps 30]
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/doc_section.h"
#include "common/flags.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "kernels/cpu_isa.h"
#include "kernels/span_attention.h"
#include "kvcache/compressed_kv_cache.h"
#include "kvcache/entry_block.h"

namespace kvspan::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kSpan = 64;

struct Result {
  std::string codec;
  int context = 0;
  int head_dim = 0;
  double us = 0;        // best-of-reps microseconds per decode step (one KV head)
  double kv_bytes = 0;  // K/V payload + params read
  // head_dim 128 at 4K only: the same step as one call per query head (group 1), which
  // reads and unpacks every K/V row once per head instead of once per group; 0 elsewhere.
  double per_head_us = 0;
};

std::vector<float> Normal(size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Best of `reps` timings of `step`, in microseconds.
template <typename F>
double BestMicros(int reps, F step) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    step();
    best = std::min(best, std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  return best;
}

absl::StatusOr<std::vector<Result>> Run(int reps) {
  std::vector<Result> results;
  std::mt19937_64 rng(7);
  constexpr int kGroup = 4;
  for (int hd : {64, 128}) {
    for (int n : {512, 1024, 4096, 16384}) {
      const std::vector<float> keys = Normal(static_cast<size_t>(n) * hd, rng);
      const std::vector<float> values = Normal(keys.size(), rng);
      const std::vector<float> q = Normal(static_cast<size_t>(kGroup) * hd, rng);
      const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
      std::vector<float> m(kGroup), s(kGroup), o(static_cast<size_t>(kGroup) * hd), out(o.size());
      kernels::PartialState state{m.data(), s.data(), o.data()};
      float sink = 0;
      {  // dense fp32
        kernels::DensePartialParams p;
        p.q = q.data();
        p.q_row_stride = kGroup * hd;
        p.num_q = 1;
        p.group = kGroup;
        p.head_dim = hd;
        p.k = keys.data();
        p.k_token_stride = hd;
        p.v = values.data();
        p.v_token_stride = hd;
        p.num_keys = n;
        p.q_start = n - 1;
        p.scale = scale;
        p.state = state;
        const double us = BestMicros(reps, [&] {
          kernels::InitPartial(state, kGroup, hd);
          kernels::DenseAttentionPartial(p, nullptr);
          kernels::FinishPartial(state, 1, kGroup, hd, out.data(), kGroup * hd);
          sink += out[0];
        });
        results.push_back({"fp32 dense", n, hd, us, 2.0 * n * hd * sizeof(float)});
      }
      for (kvcache::Codec codec : {kvcache::Codec::kBF16, kvcache::Codec::kInt8, kvcache::Codec::kInt4,
                                   kvcache::Codec::kInt2}) {
        const kvcache::CodecSpec spec{codec, kvcache::IsQuantized(codec) ? 32 : 0};
        std::vector<kvcache::EntryBlock> blocks;
        double bytes = 0;
        for (int b = 0; b < n / kSpan; ++b) {
          std::vector<int32_t> positions(kSpan);
          for (int t = 0; t < kSpan; ++t) positions[t] = b * kSpan + t;
          const std::vector<float> log_counts(kSpan, 0.0f);
          const size_t off = static_cast<size_t>(b) * kSpan * hd;
          ASSIGN_OR_RETURN(kvcache::EntryBlock block,
                           kvcache::EncodeBlock(spec, kvcache::DenseEntries{
                                                          hd, positions, log_counts,
                                                          absl::MakeConstSpan(keys).subspan(off, kSpan * hd),
                                                          absl::MakeConstSpan(values).subspan(off, kSpan * hd)}));
          bytes += block.key_data.size() + block.value_data.size() +
                   2.0 * (block.key_params.size() + block.value_params.size());
          blocks.push_back(std::move(block));
        }
        std::vector<kernels::SpanBlockView> views;
        for (const auto& block : blocks) views.push_back(kvcache::ToSpanBlockView(block));
        // Quantized keys: the integer path (what CompressedKvCache runs), and for int8/int4
        // also the fp32 one beside it; bf16 has only the fp32 path.
        std::vector<kernels::SpanKeyDot> key_dots = {kernels::SpanKeyDot::kFloat};
        if (kvcache::IsQuantized(codec)) {
          key_dots = {kernels::SpanKeyDot::kInt8Query};
          if (codec != kvcache::Codec::kInt2) key_dots.push_back(kernels::SpanKeyDot::kFloat);
        }
        for (kernels::SpanKeyDot key_dot : key_dots) {
          const double us = BestMicros(reps, [&] {
            kernels::InitPartial(state, kGroup, hd);
            for (const kernels::SpanBlockView& v : views) {
              kernels::SpanAttentionParams p{v, q.data(), kGroup * hd, 1, kGroup, scale, state};
              p.key_dot = key_dot;
              kernels::SpanAttention(p, nullptr);
            }
            kernels::FinishPartial(state, 1, kGroup, hd, out.data(), kGroup * hd);
            sink += out[0];
          });
          double per_head_us = 0;
          if (hd == 128 && n == 4096) {
            per_head_us = BestMicros(reps, [&] {
              kernels::InitPartial(state, kGroup, hd);
              for (const kernels::SpanBlockView& v : views) {
                for (int h = 0; h < kGroup; ++h) {
                  const kernels::PartialState row{&m[h], &s[h], &o[static_cast<size_t>(h) * hd]};
                  kernels::SpanAttentionParams p{v, q.data() + static_cast<size_t>(h) * hd, hd, 1, 1, scale, row};
                  p.key_dot = key_dot;
                  kernels::SpanAttention(p, nullptr);
                }
              }
              kernels::FinishPartial(state, 1, kGroup, hd, out.data(), kGroup * hd);
              sink += out[0];
            });
          }
          const bool float_keys = key_dot == kernels::SpanKeyDot::kFloat && kvcache::IsQuantized(codec);
          results.push_back({absl::StrCat(kvcache::CodecName(codec), float_keys ? " (fp32 keys)" : ""), n, hd, us,
                             bytes, per_head_us});
        }
      }
      if (sink == 12345.0f) std::printf(" ");  // keeps the work observable
    }
  }
  return results;
}

int Main(int argc, char** argv) {
  std::string out = "docs/performance.md";
  int reps = 30;
  FlagSet flags("span_attention_bench", "Decode attention over compressed spans vs dense fp32 (issue 3).");
  flags.Add("out", &out, "Markdown file whose span_attention_bench section is replaced ('' = print only)");
  flags.Add("reps", &reps, "timed repetitions per case (best is reported)");
  if (std::optional<int> code = flags.ParseOrExitCode(argc, argv)) return *code;
  double load_start[3] = {0, 0, 0}, load_end[3] = {0, 0, 0};
  getloadavg(load_start, 3);
  absl::StatusOr<std::vector<Result>> results = Run(reps);
  getloadavg(load_end, 3);
  if (!results.ok()) {
    std::fprintf(stderr, "%s\n", results.status().ToString().c_str());
    return 1;
  }
  std::string table = absl::StrCat(
      "### Decode attention over compressed spans (`span_attention_bench`)\n\n"
      "One decode step of one KV head (a GQA group of 4 query heads), one thread, the context held "
      "as blocks of 64 entries (as `CompressedKvCache` holds it); best of ",
      reps,
      " runs. `fp32 dense` is `kernels::DenseAttentionPartial` over fp32 K/V; the codecs run "
      "`kernels::SpanAttention` (dequantization fused into the dot products; int codecs g = 32) with the "
      "kernels of `KVSPAN_CPU_ISA`'s choice, here ",
      kernels::CpuIsaName(kernels::SelectedCpuIsa().isa), " (", kernels::SelectedCpuIsa().reason,
      "). Quantized keys run the integer path (`SpanKeyDot::kInt8Query`: int8 queries per key group, what "
      "`CompressedKvCache` runs); rows marked `(fp32 keys)` the fp32 one (`kFloat`). "
      "Bytes = K/V payload and scale/zero params read per step; speed-up = dense time / codec time. "
      "Load average (1, 5, 15 min) ",
      absl::StrFormat("%.2f %.2f %.2f at the start, %.2f %.2f %.2f at the end", load_start[0], load_start[1],
                      load_start[2], load_end[0], load_end[1], load_end[2]),
      ".\n\nCommand: `", CommandLine(argc, argv), "`\n\n",
      "| head_dim | context tokens | layout | µs / step | KV bytes read | GB/s | speed-up vs fp32 |\n"
      "|---:|---:|---|---:|---:|---:|---:|\n");
  double dense_us = 0;
  for (const Result& r : *results) {
    if (r.codec == "fp32 dense") dense_us = r.us;
    absl::StrAppendFormat(&table, "| %d | %d | %s | %.1f | %.0f KiB | %.2f | %.2fx |\n", r.head_dim, r.context, r.codec,
                          r.us, r.kv_bytes / 1024, r.kv_bytes / (r.us * 1e3), dense_us / r.us);
  }
  absl::StrAppend(&table,
                  "\nGQA: the same step (head_dim 128, 4096 tokens) as one call for the group of 4 query heads "
                  "(every K/V row read and unpacked once) and as 4 calls of one head each.\n\n"
                  "| layout | one call for 4 heads µs | 4 calls of 1 head µs | ratio |\n|---|---:|---:|---:|\n");
  for (const Result& r : *results) {
    if (r.per_head_us == 0) continue;
    absl::StrAppendFormat(&table, "| %s | %.1f | %.1f | %.2fx |\n", r.codec, r.us, r.per_head_us, r.per_head_us / r.us);
  }
  std::printf("%s", table.c_str());
  if (!out.empty()) {
    if (absl::Status s = WriteDocSection(out, "span_attention_bench", table); !s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
    std::printf("wrote section span_attention_bench of %s\n", out.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace kvspan::bench

int main(int argc, char** argv) { return kvspan::bench::Main(argc, argv); }
