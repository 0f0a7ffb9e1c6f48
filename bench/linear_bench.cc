// Throughput of kernels::Linear per weight format, ISA and batch rows m, on the matrix
// shapes of the Llama-3.2-1B MLP (gate_up [16384, 2048], down [2048, 8192]): weight bytes
// read per second (the decode bound) and GFLOP/s (the prefill bound). Prints a Markdown
// table (no docs/ section: docs/performance.md quotes it by hand with the command).
// --dram-mib N cycles through copies of each matrix that together take at least N MiB, so
// that every call reads its weights from DRAM (the model's case) rather than from the L3.
// --rounds R measures every case R times, one case after another in each round, and prints
// each case's median and range: a VM whose read rate moves by the minute moves every case
// alike, so compare cases within one run.
//
//   build/bench/linear_bench --threads 2 --m 1,8,16,512
//   build/bench/linear_bench --threads 2 --m 1 --dram-mib 512 --formats int8,int4 --rounds 5
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <list>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/flags.h"
#include "common/float16.h"
#include "common/logging.h"
#include "common/thread_pool.h"
#include "kernels/blas_select.h"
#include "kernels/cpu_isa.h"
#include "kernels/gemm.h"
#include "kernels/weight_matrix.h"

namespace kvspan::bench {
namespace {

using kernels::WeightFormat;

// One measured case: a matrix (its copies), a format, an ISA and rows of x.
struct Case {
  int rows, cols;
  WeightFormat format;
  kernels::CpuIsa isa;
  int m;
  const std::vector<kernels::OwnedWeightMatrix>* copies;
  std::vector<float> x, y;
  std::vector<double> per_call;  // seconds per call, one per round
};

int Main(int argc, char** argv) {
  int threads = 2;
  std::string ms_flag = "1,8,16,512";
  double seconds = 0.3;
  int dram_mib = 0;
  int rounds = 1;
  std::string formats_flag = "f32,bf16,int8,int4";
  FlagSet flags("linear_bench", "kernels::Linear throughput per weight format, ISA and batch rows.");
  flags.Add("threads", &threads, "threads (pool and OpenBLAS)");
  flags.Add("m", &ms_flag, "rows of x, comma-separated");
  flags.Add("seconds", &seconds, "minimum time per measurement");
  flags.Add("dram-mib", &dram_mib, "cycle through copies of each matrix taking at least this many MiB; 0 = one");
  flags.Add("formats", &formats_flag, "weight formats, comma-separated (f32, bf16, int8, int4)");
  flags.Add("rounds", &rounds, "measure every case this many times, the cases interleaved; prints the median and the range");
  if (std::optional<int> code = flags.ParseOrExitCode(argc, argv)) return *code;
  std::vector<int> ms;
  for (absl::string_view v : absl::StrSplit(ms_flag, ',')) {
    int m;
    if (!absl::SimpleAtoi(v, &m) || m < 1) return 2;
    ms.push_back(m);
  }
  if (rounds < 1) return 2;
  ThreadPool pool(threads);
  kernels::SetBlasThreads(threads);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::list<std::vector<kernels::OwnedWeightMatrix>> matrices;  // stable addresses
  std::vector<Case> cases;
  for (auto [rows, cols] : {std::pair{16384, 2048}, std::pair{2048, 8192}}) {
    std::vector<float> w(int64_t{rows} * cols);
    for (float& v : w) v = dist(rng) * 0.05f;
    for (WeightFormat format : {WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kInt8, WeightFormat::kInt4}) {
      if (!absl::StrContains(absl::StrCat(",", formats_flag, ","), absl::StrCat(",", kernels::WeightFormatName(format), ","))) continue;
      std::vector<kernels::OwnedWeightMatrix>& copies = matrices.emplace_back();
      copies.emplace_back(format, w.data(), rows, cols);
      while (static_cast<int64_t>(copies.size()) * copies[0].view().size_bytes() < (int64_t{dram_mib} << 20)) {
        copies.emplace_back(format, w.data(), rows, cols);
      }
      for (kernels::CpuIsa isa :
           {kernels::CpuIsa::kAvx2, kernels::CpuIsa::kAvx512, kernels::CpuIsa::kAvx512Bf16Dot, kernels::CpuIsa::kAmx}) {
        if (!kernels::CpuSupportsIsa(DetectCpuFeatures(), isa)) continue;
        // amx differs from avx512 only in the bf16 / int8 GEMM from kAmxGemmMinRows rows.
        if (isa == kernels::CpuIsa::kAmx && format != WeightFormat::kBF16 && format != WeightFormat::kInt8) continue;
        if (format == WeightFormat::kF32 && isa != kernels::CpuIsa::kAvx2) continue;  // OpenBLAS either way
        if (format != WeightFormat::kBF16 && isa == kernels::CpuIsa::kAvx512Bf16Dot) continue;  // = avx512
        for (int m : ms) {
          Case& c = cases.emplace_back(Case{rows, cols, format, isa, m, &copies, {}, {}, {}});
          c.x.resize(int64_t{m} * cols);
          c.y.resize(int64_t{m} * rows);
          for (float& v : c.x) v = dist(rng);
        }
      }
    }
  }
  for (int round = 0; round < rounds; ++round) {
    for (Case& c : cases) {
      const std::vector<kernels::OwnedWeightMatrix>& copies = *c.copies;
      kernels::LinearParams p{.x = c.x.data(), .w = copies[0].view(), .y = c.y.data(), .m = c.m, .pool = &pool};
      kernels::Linear(p, c.isa);  // warm-up
      int calls = 0;
      const auto t0 = std::chrono::steady_clock::now();
      double elapsed = 0;
      do {
        p.w = copies[calls % copies.size()].view();
        kernels::Linear(p, c.isa);
        ++calls;
        elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      } while (elapsed < seconds);
      c.per_call.push_back(elapsed / calls);
    }
  }
  std::printf("| matrix | format | isa | m | ms/call | weight GB/s | GFLOP/s |%s\n|---|---|---|---:|---:|---:|---:|%s\n",
              rounds > 1 ? " weight GB/s, range |" : "", rounds > 1 ? "---:|" : "");
  for (Case& c : cases) {
    std::vector<double> sorted = c.per_call;
    std::sort(sorted.begin(), sorted.end());
    const double per_call = sorted[sorted.size() / 2];
    const double bytes = static_cast<double>((*c.copies)[0].view().size_bytes());
    std::string range;
    if (rounds > 1) range = absl::StrFormat(" %.1f-%.1f |", bytes / sorted.back() / 1e9, bytes / sorted.front() / 1e9);
    std::printf("| %dx%d | %s | %s | %d | %.3f | %.1f | %.1f |%s\n", c.rows, c.cols,
                std::string(kernels::WeightFormatName(c.format)).c_str(),
                c.format == WeightFormat::kF32 ? "openblas" : std::string(kernels::CpuIsaName(c.isa)).c_str(), c.m,
                per_call * 1e3, bytes / per_call / 1e9, 2.0 * c.m * c.rows * c.cols / per_call / 1e9, range.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace kvspan::bench

int main(int argc, char** argv) {
  kvspan::kernels::SelectBlasCoreAtStartup("linear_bench", argv);
  kvspan::InitLogging(argv[0]);
  return kvspan::bench::Main(argc, argv);
}
