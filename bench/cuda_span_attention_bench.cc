// cuda_span_attention_bench: CudaSpanAttention (kernels/cuda/span_attention_cuda.h) on a
// GPU, one decode step over compressed spans, against the device's measured copy bandwidth
// (issue 13's benchmark: docs/performance.md, section cuda_span_attention).
//
// Shape: Llama-3.1-8B's attention (8 KV heads, 4 query heads each, head_dim 128), spans of
// 64 entries (one entry block per span and head), a dense fp32 tail of 32 tokens, every
// sequence at the same context, each with its own memory (no sharing, so nothing is served
// from L2 that a real batch would read from HBM). Quantized blocks use group size 32.
// Reported: the bytes a step must read (codes, params, tail, queries) over the kernels' time
// (CUDA events around Launch, median of --reps after --warmup), as GB/s and as a share of a
// device-to-device copy's (read + write) bandwidth measured in the same run; and the time of
// a whole Run (host plan + upload of the work items and block views + kernels).
//
//   cuda_span_attention_bench [--contexts 8192,32768] [--batches 1,64] [--codecs bf16,int8,int4]
//                             [--reps 20] [--warmup 3] [--out FILE.md]
//
// Prints one Markdown table (with the command and the device) and writes it to --out.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/span_attention_cuda.h"
#include "kernels/span_attention.h"

namespace kvspan::kernels {
namespace {

constexpr int kKvHeads = 8, kGroup = 4, kHeadDim = 128, kSpanEntries = 64, kTail = 32, kGroupSize = 32;

std::vector<int> ParseInts(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(std::atoi(item.c_str()));
  return out;
}

std::vector<std::string> ParseWords(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
  return out;
}

void Die(const absl::Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "cuda_span_attention_bench: %s: %s\n", what, std::string(s.message()).c_str());
  std::exit(1);
}

struct CodecInfo {
  SpanCodec codec;
  int bits;
};

CodecInfo Codec(const std::string& name) {
  if (name == "bf16") return {SpanCodec::kBF16, 16};
  if (name == "fp16") return {SpanCodec::kFP16, 16};
  if (name == "int8") return {SpanCodec::kInt8, 8};
  if (name == "int4") return {SpanCodec::kInt4, 4};
  if (name == "int2") return {SpanCodec::kInt2, 2};
  std::fprintf(stderr, "unknown codec %s\n", name.c_str());
  std::exit(2);
}

// Fills `buffer` with random bits: a 64 MiB random block uploaded once, tiled on the device
// (integer codes take any bits; float data gets finite patterns instead, below).
void FillRandom(DeviceBuffer& buffer, const DeviceBuffer& pattern) {
  for (int64_t off = 0; off < buffer.size_bytes(); off += pattern.size_bytes()) {
    const int64_t n = std::min<int64_t>(pattern.size_bytes(), buffer.size_bytes() - off);
    Die(buffer.CopyFromDevice(pattern, n, off), "fill");
  }
}

double MedianMs(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Copy bandwidth: bytes read + written per second of a 2 GiB device-to-device copy.
double CopyGBps(int reps) {
  const int64_t bytes = int64_t{2} << 30;
  DeviceBuffer a, b;
  Die(a.Reserve(bytes), "copy buffer");
  Die(b.Reserve(bytes), "copy buffer");
  CudaEventTimer timer;
  std::vector<double> ms;
  for (int i = 0; i < reps + 2; ++i) {
    Die(timer.Start(nullptr), "timer");
    Die(b.CopyFromDevice(a, bytes), "copy");
    double t = 0;
    Die(timer.Stop(nullptr, &t), "timer");
    if (i >= 2) ms.push_back(t);
  }
  return 2.0 * bytes / (MedianMs(ms) * 1e-3) / 1e9;
}

struct Row {
  std::string codec;
  int context = 0, batch = 0;
  double bytes = 0, kernel_us = 0, gbps = 0, run_us = 0;
  int items = 0;
};

Row Measure(const std::string& codec_name, int context, int batch, int reps, int warmup,
            const DeviceBuffer& pattern) {
  const CodecInfo ci = Codec(codec_name);
  const bool quantized = ci.bits < 16;
  const int spans = (context - kTail) / kSpanEntries;
  const int64_t row_bytes = (int64_t{kHeadDim} * ci.bits + 7) / 8;
  const int64_t block_code_bytes = kSpanEntries * row_bytes;                                  // keys or values
  const int64_t key_param_bytes = quantized ? (kSpanEntries / kGroupSize) * kHeadDim * 4 : 0;  // [n/G, D, 2] fp16
  const int64_t value_param_bytes = quantized ? kSpanEntries * (kHeadDim / kGroupSize) * 4 : 0;
  const int64_t block_bytes = 2 * block_code_bytes + key_param_bytes + value_param_bytes;
  const int64_t num_blocks = int64_t{batch} * kKvHeads * spans;
  const int64_t tail_floats = int64_t{kKvHeads} * kTail * kHeadDim;

  DeviceBuffer codes, params, tails, q, out;
  Die(codes.Reserve(std::max<int64_t>(1, num_blocks * 2 * block_code_bytes)), "codes");
  FillRandom(codes, pattern);
  if (quantized) {
    // fp16 (scale, zero) pairs: a fixed finite pattern (random bits would hold NaN/inf).
    const int64_t param_bytes = num_blocks * (key_param_bytes + value_param_bytes);
    std::vector<uint16_t> host(std::min<int64_t>(param_bytes / 2, int64_t{1} << 24));
    for (size_t i = 0; i < host.size(); ++i) host[i] = (i % 2 == 0) ? 0x2000 + (i * 37 % 1024) : 0xB800;
    Die(params.Reserve(param_bytes), "params");
    for (int64_t off = 0; off < param_bytes; off += host.size() * 2) {
      Die(params.CopyFromHost(host.data(), std::min<int64_t>(host.size() * 2, param_bytes - off), off), "params");
    }
  }
  Die(tails.Reserve(int64_t{batch} * 2 * tail_floats * 4), "tails");
  {
    std::mt19937 rng(5);
    std::normal_distribution<float> normal;
    std::vector<float> host(int64_t{batch} * 2 * tail_floats);
    for (float& f : host) f = normal(rng);
    Die(tails.CopyFromHost(host.data(), host.size() * 4), "tails");
    std::vector<float> qh(int64_t{batch} * kKvHeads * kGroup * kHeadDim);
    for (float& f : qh) f = normal(rng);
    Die(q.Reserve(qh.size() * 4), "q");
    Die(q.CopyFromHost(qh.data(), qh.size() * 4), "q");
    Die(out.Reserve(qh.size() * 4), "out");
  }
  if (!quantized) {
    // bf16/fp16 from random bytes may hold NaN/inf: a finite pattern instead.
    std::vector<uint16_t> host(std::min<int64_t>(codes.size_bytes() / 2, int64_t{1} << 24));
    for (size_t i = 0; i < host.size(); ++i) host[i] = 0x3C00 ^ static_cast<uint16_t>(i * 2654435761u >> 22);
    for (int64_t off = 0; off < codes.size_bytes(); off += host.size() * 2) {
      Die(codes.CopyFromHost(host.data(), std::min<int64_t>(host.size() * 2, codes.size_bytes() - off), off), "codes");
    }
  }

  std::vector<SpanBlockView> views(num_blocks);
  std::vector<int32_t> indptr(int64_t{batch} * kKvHeads + 1);
  const uint8_t* code_base = codes.as<uint8_t>();
  const uint8_t* param_base = quantized ? params.as<uint8_t>() : nullptr;
  for (int64_t i = 0; i < num_blocks; ++i) {
    SpanBlockView& v = views[i];
    v.codec = ci.codec;
    v.group_size = kGroupSize;
    v.num_entries = kSpanEntries;
    v.head_dim = kHeadDim;
    v.key_data = code_base + i * 2 * block_code_bytes;
    v.value_data = v.key_data + block_code_bytes;
    if (quantized) {
      v.key_params = reinterpret_cast<const uint16_t*>(param_base + i * (key_param_bytes + value_param_bytes));
      v.value_params = v.key_params + key_param_bytes / 2;
    }
  }
  for (size_t sh = 0; sh < indptr.size(); ++sh) indptr[sh] = static_cast<int32_t>(sh * spans);
  std::vector<const float*> tail_k(batch), tail_v(batch);
  std::vector<int32_t> tail_len(batch, kTail), positions(batch, context - 1);
  for (int s = 0; s < batch; ++s) {
    tail_k[s] = tails.as<float>() + int64_t{s} * 2 * tail_floats;
    tail_v[s] = tail_k[s] + tail_floats;
  }
  SpanAttentionBatch b;
  b.num_seqs = batch;
  b.num_kv_heads = kKvHeads;
  b.group = kGroup;
  b.head_dim = kHeadDim;
  b.scale = 0.08838834764f;
  b.q = q.as<float>();
  b.out = out.as<float>();
  b.block_indptr = indptr.data();
  b.blocks = views.data();
  b.tail_k = tail_k.data();
  b.tail_v = tail_v.data();
  b.tail_len = tail_len.data();
  b.tail_head_stride = int64_t{kTail} * kHeadDim;
  b.tail_token_stride = kHeadDim;
  b.query_position = positions.data();

  CudaSpanAttention attention;
  Die(attention.Plan(b, nullptr), "plan");
  CudaEventTimer timer;
  std::vector<double> ms;
  for (int i = 0; i < warmup + reps; ++i) {
    Die(timer.Start(nullptr), "timer");
    Die(attention.Launch(nullptr), "launch");
    double t = 0;
    Die(timer.Stop(nullptr, &t), "timer");
    if (i >= warmup) ms.push_back(t);
  }
  std::vector<double> run_ms;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    Die(attention.Run(b, nullptr), "run");
    Die(CudaSynchronize(), "synchronize");
    run_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  Row r;
  r.codec = codec_name;
  r.context = context;
  r.batch = batch;
  r.bytes = static_cast<double>(num_blocks * block_bytes + int64_t{batch} * 2 * tail_floats * 4 +
                                2 * q.size_bytes());
  r.kernel_us = MedianMs(ms) * 1e3;
  r.gbps = r.bytes / (r.kernel_us * 1e-6) / 1e9;
  r.run_us = MedianMs(run_ms) * 1e3;
  r.items = attention.last_num_work_items();
  return r;
}

}  // namespace
}  // namespace kvspan::kernels

int main(int argc, char** argv) {
  using namespace kvspan::kernels;
  std::string contexts = "8192,32768", batches = "1,64", codecs = "bf16,int8,int4", out_path;
  int reps = 20, warmup = 3;
  std::string command = "cuda_span_attention_bench";
  for (int i = 1; i < argc; ++i) {
    command += std::string(" ") + argv[i];
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      command += std::string(" ") + argv[i + 1];
      return argv[++i];
    };
    if (a == "--contexts") contexts = value();
    else if (a == "--batches") batches = value();
    else if (a == "--codecs") codecs = value();
    else if (a == "--reps") reps = std::atoi(value().c_str());
    else if (a == "--warmup") warmup = std::atoi(value().c_str());
    else if (a == "--out") out_path = value();
    else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  if (CudaDeviceCount() == 0) {
    std::fprintf(stderr, "cuda_span_attention_bench: no CUDA device\n");
    return 1;
  }
  DeviceBuffer pattern;
  {
    std::vector<uint8_t> host(64 << 20);
    std::mt19937 rng(1);
    for (size_t i = 0; i < host.size(); i += 4) {
      const uint32_t x = rng();
      std::memcpy(&host[i], &x, 4);
    }
    Die(pattern.Reserve(host.size()), "pattern");
    Die(pattern.CopyFromHost(host.data(), host.size()), "pattern");
  }
  const double copy_gbps = CopyGBps(10);
  std::ostringstream table;
  table << "Command: `" << command << "` (bench/cuda_span_attention_bench.cc). Shape: 8 KV heads x 4 query heads, "
        << "head_dim 128, spans of 64 entries, fp32 tail of 32 tokens; quantized groups of 32. Device-to-device copy "
        << "(read + write): " << static_cast<int>(copy_gbps) << " GB/s.\n\n"
        << "| codec | context | batch | work items | bytes read / step (MB) | kernels (us) | GB/s | of copy | "
           "Run with plan + upload (us) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const std::string& codec : ParseWords(codecs)) {
    for (int context : ParseInts(contexts)) {
      for (int batch : ParseInts(batches)) {
        const Row r = Measure(codec, context, batch, reps, warmup, pattern);
        char line[256];
        std::snprintf(line, sizeof(line), "| %s | %d | %d | %d | %.1f | %.1f | %.0f | %.0f%% | %.0f |\n",
                      r.codec.c_str(), r.context, r.batch, r.items, r.bytes / 1e6, r.kernel_us, r.gbps,
                      100.0 * r.gbps / copy_gbps, r.run_us);
        table << line;
        std::fputs(line, stderr);
      }
    }
  }
  std::fputs(table.str().c_str(), stdout);
  if (!out_path.empty()) std::ofstream(out_path) << table.str();
  return 0;
}
