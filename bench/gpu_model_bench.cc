// gpu_model_bench: the whole GpuModel forward pass on a GPU (issue 13), time to first token
// and decode tokens/s for the Llama-3.2-1B and Llama-3.1-8B shapes (bench/gpu_model_shapes.json)
// with random bf16 weights made on the device (GpuModel::CreateRandom: no checkpoint), over
// the dense cache and compressed ones. tools/gpu_torch_peer.py measures the same in PyTorch
// eager; tools/device_check.sh runs both. Table: docs/performance.md, section gpu_model_bench.
//
// What is timed (host steady_clock around Forward, which returns only after copying the
// step's logits to the host, so each timing ends on a synchronized device):
// - TTFT: one Forward over a --prompt-tokens prompt (batch 1, the last token's logits) in a
//   fresh cache, compressing the spans the prompt completes; the median of --ttft-reps
//   after one warm-up.
// - Decode: --batches sequences, each prefilled with its own prompt (untimed), then --warmup
//   steps, then --steps timed steps of the whole batch, one token per sequence, each step's
//   [batch, vocab] fp32 logits copied to the host; tokens/s = batch * steps / time. The
//   tokens are a fixed pseudo-random sequence (sampling from random weights means nothing,
//   and the host's argmax would be timed with the model).
//
//   gpu_model_bench [--shapes 1b,8b] [--policy dense --policy 'int8(g=32)' ...] [--batches 1,32]
//                   [--prompt-tokens 512] [--steps 64] [--warmup 4] [--ttft-reps 5]
//                   [--span-tokens 64] [--gemm auto|plain|cublaslt] [--out FILE.md]
//
// Prints one Markdown table (command, date, device, commit) and writes it into --out's
// section gpu_model_bench (bench/doc_section.h). Built twice (bench/CMakeLists.txt): over
// CUDA, and gpu_model_bench_emulated over the CPU emulator for smoke runs of the tiny shape.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/doc_section.h"
#include "common/file_util.h"
#include "common/flags.h"
#include "common/status_macros.h"
#include "gpu/gpu_model.h"
#include "kernels/cuda/device_memory.h"
#include "kvcache/policy.h"
#include "kvcache/span_compressor.h"
#include "model/config.h"
#include "nlohmann/json.hpp"

namespace kvspan::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Settings {
  std::vector<int> batches;
  int prompt_tokens = 512;
  int steps = 64;
  int warmup = 4;
  int ttft_reps = 5;
  int span_tokens = 64;
};

struct Row {
  std::string shape, policy, gemm;  // gemm: the model's GEMM path ("cublaslt", "plain")
  bool on_device = false;  // spans encoded on the device
  double weight_gb = 0, create_s = 0, ttft_ms = 0;
  std::vector<double> decode_tps, step_ms;  // per batch
  double kv_mib_per_seq = 0;                // device memory of one sequence's cache after decode
  double b1_read_gbps = 0;                  // batch 1: weights + KV read per step / step time
};

double Seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Token `position` of sequence `seq`: a fixed pseudo-random id.
int32_t TokenAt(int seq, int position, int vocab) {
  uint64_t z = (uint64_t{static_cast<uint32_t>(seq)} << 32 | static_cast<uint32_t>(position)) * 0x9E3779B97F4A7C15ull;
  z ^= z >> 29;
  return static_cast<int32_t>(z % static_cast<uint64_t>(vocab));
}

std::vector<int32_t> Prompt(int seq, int tokens, int vocab) {
  std::vector<int32_t> prompt(tokens);
  for (int j = 0; j < tokens; ++j) prompt[j] = TokenAt(seq, j, vocab);
  return prompt;
}

absl::Status CheckFinite(const std::vector<float>& logits, const char* where) {
  for (float v : logits) {
    if (!std::isfinite(v)) return absl::InternalError(absl::StrCat(where, ": a logit is not finite"));
  }
  return absl::OkStatus();
}

absl::StatusOr<gpu::GpuCacheOptions> CacheOptions(const std::string& policy_text, const gpu::GpuModel& model,
                                                  int span_tokens) {
  gpu::GpuCacheOptions options;
  options.span_tokens = span_tokens;
  if (policy_text == "dense") return options;
  ASSIGN_OR_RETURN(kvcache::Policy policy, kvcache::ParsePolicy(policy_text));
  options.compressor = std::make_shared<kvcache::PolicySpanCompressor>(
      kvcache::PolicySpanCompressor::Options{policy, model.config().fingerprint});
  return options;
}

// TTFT: the median prefill of one prompt into a fresh cache, after a warm-up.
absl::StatusOr<double> MeasureTtftMs(gpu::GpuModel& model, const gpu::GpuCacheOptions& options, const Settings& s,
                                     bool* on_device) {
  const std::vector<int32_t> prompt = Prompt(0, s.prompt_tokens, model.config().vocab_size);
  std::vector<double> ms;
  for (int rep = 0; rep < 1 + s.ttft_reps; ++rep) {
    ASSIGN_OR_RETURN(auto cache, model.NewCache(s.prompt_tokens, options));
    *on_device = cache->encodes_on_device();
    std::vector<float> logits;
    gpu::GpuForwardItem item{.tokens = prompt, .cache = cache.get(), .logits = &logits};
    const Clock::time_point t0 = Clock::now();
    RETURN_IF_ERROR(model.Forward(absl::MakeSpan(&item, 1)));
    if (rep > 0) ms.push_back(Seconds(t0) * 1e3);
    RETURN_IF_ERROR(CheckFinite(logits, "prefill"));
  }
  return Median(ms);
}

struct DecodeResult {
  double tokens_per_s = 0, step_ms = 0, kv_bytes_per_seq = 0;
};

// Decode: `batch` sequences prefilled one by one, then warm-up and timed steps of all.
absl::StatusOr<DecodeResult> MeasureDecode(gpu::GpuModel& model, const gpu::GpuCacheOptions& options,
                                           const Settings& s, int batch) {
  const int vocab = model.config().vocab_size;
  const int capacity = s.prompt_tokens + s.warmup + s.steps;
  std::vector<std::unique_ptr<gpu::GpuKvCache>> caches;
  std::vector<std::vector<float>> logits(batch);
  for (int b = 0; b < batch; ++b) {
    ASSIGN_OR_RETURN(auto cache, model.NewCache(capacity, options));
    const std::vector<int32_t> prompt = Prompt(b, s.prompt_tokens, vocab);
    gpu::GpuForwardItem item{.tokens = prompt, .cache = cache.get(), .logits = &logits[b]};
    RETURN_IF_ERROR(model.Forward(absl::MakeSpan(&item, 1)));
    caches.push_back(std::move(cache));
  }
  std::vector<int32_t> tokens(batch);
  std::vector<gpu::GpuForwardItem> items(batch);
  Clock::time_point t0 = Clock::now();
  for (int step = 0; step < s.warmup + s.steps; ++step) {
    if (step == s.warmup) t0 = Clock::now();
    for (int b = 0; b < batch; ++b) {
      tokens[b] = TokenAt(b, s.prompt_tokens + step, vocab);
      items[b] = {.tokens = absl::MakeConstSpan(&tokens[b], 1), .cache = caches[b].get(), .logits = &logits[b]};
    }
    RETURN_IF_ERROR(model.Forward(absl::MakeSpan(items)));
  }
  const double seconds = Seconds(t0);
  for (const std::vector<float>& l : logits) RETURN_IF_ERROR(CheckFinite(l, "decode"));
  DecodeResult r;
  r.tokens_per_s = static_cast<double>(batch) * s.steps / seconds;
  r.step_ms = seconds * 1e3 / s.steps;
  r.kv_bytes_per_seq = static_cast<double>(caches[0]->memory_bytes());
  return r;
}

// One model of `config`'s shape, every policy's TTFT and decode rows appended to `rows`.
absl::Status BenchShape(const std::string& shape, const model::ModelConfig& config, gpu::GpuGemm gemm,
                        const std::vector<std::string>& policies, const Settings& s, std::vector<Row>* rows) {
  const Clock::time_point t0 = Clock::now();
  ASSIGN_OR_RETURN(auto model, gpu::GpuModel::CreateRandom(config, 1, {.device = 0, .gemm = gemm}));
  const double create_s = Seconds(t0);
  std::fprintf(stderr, "%s: %.2f GB of random bf16 weights in %.2f s, gemm %s\n", shape.c_str(),
               model->weight_memory_bytes() / 1e9, create_s, model->gemm_name().c_str());
  for (const std::string& policy : policies) {
    ASSIGN_OR_RETURN(gpu::GpuCacheOptions options, CacheOptions(policy, *model, s.span_tokens));
    Row r;
    r.shape = shape;
    r.policy = policy;
    r.gemm = model->gemm_name();
    r.weight_gb = model->weight_memory_bytes() / 1e9;
    r.create_s = create_s;
    ASSIGN_OR_RETURN(r.ttft_ms, MeasureTtftMs(*model, options, s, &r.on_device));
    for (int batch : s.batches) {
      ASSIGN_OR_RETURN(DecodeResult d, MeasureDecode(*model, options, s, batch));
      r.decode_tps.push_back(d.tokens_per_s);
      r.step_ms.push_back(d.step_ms);
      r.kv_mib_per_seq = d.kv_bytes_per_seq / (1 << 20);
      if (batch == 1) {
        // The embedding is read only for the step's rows; an untied lm_head is a matrix read whole.
        const double embed = static_cast<double>(config.vocab_size) * config.hidden_size * 2;
        const double weights = model->weight_memory_bytes() - (config.tie_word_embeddings ? 0.0 : embed);
        r.b1_read_gbps = (weights + d.kv_bytes_per_seq) / (d.step_ms * 1e-3) / 1e9;
      }
      std::fprintf(stderr, "  %s batch %d: %.1f tok/s, %.2f ms/step\n", policy.c_str(), batch, d.tokens_per_s,
                   d.step_ms);
    }
    std::fprintf(stderr, "  %s TTFT(%d) %.2f ms\n", policy.c_str(), s.prompt_tokens, r.ttft_ms);
    rows->push_back(r);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> ParseBatches(const std::string& text) {
  std::vector<int> out;
  for (absl::string_view b : absl::StrSplit(text, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(b, &v) || v < 1) return absl::InvalidArgumentError(absl::StrCat("bad --batches ", text));
    out.push_back(v);
  }
  return out;
}

absl::StatusOr<gpu::GpuGemm> ParseGemm(const std::string& text) {
  if (text == "auto") return gpu::GpuGemm::kAuto;
  if (text == "plain") return gpu::GpuGemm::kPlain;
  if (text == "cublaslt") return gpu::GpuGemm::kCublasLt;
  return absl::InvalidArgumentError(absl::StrCat("--gemm ", text, ": not auto, plain or cublaslt"));
}

std::string UtcNow() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%d %H:%M UTC", &tm);
  return text;
}

int Main(int argc, char** argv) {
  std::string shapes = "1b,8b", shapes_file = "bench/gpu_model_shapes.json", batches = "1,32", gemm_name = "auto";
  std::string out, commit = std::getenv("KVSPAN_COMMIT") != nullptr ? std::getenv("KVSPAN_COMMIT") : "unknown";
  std::vector<std::string> policies;
  Settings s;
  FlagSet flags("gpu_model_bench", "GpuModel TTFT and decode tokens/s with random weights (docs/performance.md).");
  flags.Add("shapes", &shapes, "shapes of --shapes-file, comma-separated");
  flags.Add("shapes-file", &shapes_file, "JSON object of Hugging Face config.json entries");
  flags.Add("policy", &policies, "KV cache: dense or a policy (repeatable; default dense, int8(g=32), int4(g=32))");
  flags.Add("batches", &batches, "decode batch sizes, comma-separated");
  flags.Add("prompt-tokens", &s.prompt_tokens, "prompt length (TTFT and each sequence's prefill)");
  flags.Add("steps", &s.steps, "timed decode steps");
  flags.Add("warmup", &s.warmup, "decode steps before the timed ones");
  flags.Add("ttft-reps", &s.ttft_reps, "timed prefills for the TTFT median (after one warm-up)");
  flags.Add("span-tokens", &s.span_tokens, "S: tokens per compressed span");
  flags.Add("gemm", &gemm_name, "auto, plain or cublaslt");
  flags.Add("commit", &commit, "the commit measured, for the table (default: $KVSPAN_COMMIT)");
  flags.Add("out", &out, "Markdown file whose gpu_model_bench section is rewritten; empty = none");
  if (std::optional<int> code = flags.ParseOrExitCode(argc, argv)) return *code;
  if (policies.empty()) policies = {"dense", "int8(g=32)", "int4(g=32)"};
  absl::StatusOr<std::vector<int>> batch_list = ParseBatches(batches);
  absl::StatusOr<gpu::GpuGemm> gemm = ParseGemm(gemm_name);
  if (!batch_list.ok() || !gemm.ok() || s.prompt_tokens < 1 || s.steps < 1 || s.warmup < 0 || s.ttft_reps < 1) {
    std::fprintf(stderr, "gpu_model_bench: %s\n",
                 !batch_list.ok() ? batch_list.status().ToString().c_str()
                 : !gemm.ok()     ? gemm.status().ToString().c_str()
                                  : "--prompt-tokens, --steps and --ttft-reps must be >= 1, --warmup >= 0");
    return 2;
  }
  s.batches = *batch_list;
  if (kernels::CudaDeviceCount() == 0) {
    std::fprintf(stderr, "gpu_model_bench: no CUDA device\n");
    return 1;
  }
  absl::StatusOr<std::string> shapes_json = ReadFile(shapes_file);
  if (!shapes_json.ok()) {
    std::fprintf(stderr, "gpu_model_bench: %s\n", shapes_json.status().ToString().c_str());
    return 1;
  }
  const nlohmann::json all = nlohmann::json::parse(*shapes_json, nullptr, /*allow_exceptions=*/false);
  std::vector<Row> rows;
  for (absl::string_view name : absl::StrSplit(shapes, ',')) {
    const std::string shape(name);
    if (!all.is_object() || !all.contains(shape)) {
      std::fprintf(stderr, "gpu_model_bench: no shape %s in %s\n", shape.c_str(), shapes_file.c_str());
      return 2;
    }
    absl::StatusOr<model::ModelConfig> config = model::ModelConfig::FromJson(all[shape].dump());
    const absl::Status st = config.ok() ? BenchShape(shape, *config, *gemm, policies, s, &rows) : config.status();
    if (!st.ok()) {
      std::fprintf(stderr, "gpu_model_bench: %s: %s\n", shape.c_str(), st.ToString().c_str());
      return 1;
    }
  }

  std::string table = absl::StrFormat(
      "Measured %s on %s, commit %s, by `%s` (bench/gpu_model_bench.cc). Random bf16 weights made on the device "
      "(seed 1), fp32 activations and dense KV, GEMMs: %s; compressed caches with spans of %d tokens. TTFT: one "
      "%d-token prompt at batch 1, its last token's logits on the host (median of %d). Decode: %d timed steps after "
      "%d warm-up steps, every sequence with its own %d-token prompt, each step's logits copied to the host.\n\n",
      UtcNow(), kernels::CudaDeviceName(0), commit, CommandLine(argc, argv), rows.empty() ? gemm_name : rows[0].gemm,
      s.span_tokens,
      s.prompt_tokens, s.ttft_reps, s.steps, s.warmup, s.prompt_tokens);
  absl::StrAppend(&table, "| shape | KV cache | weights (GB) | TTFT (ms) |");
  for (int b : s.batches) absl::StrAppend(&table, " decode tok/s b=", b, " | ms/step b=", b, " |");
  absl::StrAppend(&table, " b=1 GB/s read | KV MiB/seq at the end |\n|---|---|---:|---:|");
  for (size_t i = 0; i < s.batches.size(); ++i) absl::StrAppend(&table, "---:|---:|");
  absl::StrAppend(&table, "---:|---:|\n");
  for (const Row& r : rows) {
    absl::StrAppendFormat(&table, "| %s | %s%s | %.2f | %.1f |", r.shape, r.policy,
                          r.policy == "dense" ? "" : (r.on_device ? " (device)" : " (host)"), r.weight_gb, r.ttft_ms);
    for (size_t i = 0; i < s.batches.size(); ++i) {
      absl::StrAppendFormat(&table, " %.1f | %.2f |", r.decode_tps[i], r.step_ms[i]);
    }
    absl::StrAppendFormat(&table, " %s | %.1f |\n", r.b1_read_gbps > 0 ? absl::StrFormat("%.0f", r.b1_read_gbps) : "-",
                          r.kv_mib_per_seq);
  }
  absl::StrAppend(&table,
                  "\nb=1 GB/s read: the weights a step reads (every matrix but the embedding's unread rows) plus "
                  "the sequence's KV memory, over the step's time. (device) / (host): where the spans are encoded.\n");
  std::fputs(table.c_str(), stdout);
  if (!out.empty()) {
    if (absl::Status st = WriteDocSection(out, "gpu_model_bench", table); !st.ok()) {
      std::fprintf(stderr, "gpu_model_bench: %s\n", st.ToString().c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace kvspan::bench

int main(int argc, char** argv) { return kvspan::bench::Main(argc, argv); }
