// Throughput of kernels::Linear per weight format, ISA and batch rows m, on the matrix
// shapes of the Llama-3.2-1B MLP (gate_up [16384, 2048], down [2048, 8192]): weight bytes
// read per second (the decode bound) and GFLOP/s (the prefill bound). Prints a Markdown
// table (no docs/ section: docs/performance.md quotes it by hand with the command).
// --dram-mib N cycles through copies of each matrix that together take at least N MiB, so
// that every call reads its weights from DRAM (the model's case) rather than from the L3.
//
//   build/bench/linear_bench --threads 2 --m 1,8,16,512
//   build/bench/linear_bench --threads 2 --m 1 --dram-mib 512 --formats int8,int4
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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

int Main(int argc, char** argv) {
  int threads = 2;
  std::string ms_flag = "1,8,16,512";
  double seconds = 0.3;
  int dram_mib = 0;
  std::string formats_flag = "f32,bf16,int8,int4";
  FlagSet flags("linear_bench", "kernels::Linear throughput per weight format, ISA and batch rows.");
  flags.Add("threads", &threads, "threads (pool and OpenBLAS)");
  flags.Add("m", &ms_flag, "rows of x, comma-separated");
  flags.Add("seconds", &seconds, "minimum time per measurement");
  flags.Add("dram-mib", &dram_mib, "cycle through copies of each matrix taking at least this many MiB; 0 = one");
  flags.Add("formats", &formats_flag, "weight formats, comma-separated (f32, bf16, int8, int4)");
  if (std::optional<int> code = flags.ParseOrExitCode(argc, argv)) return *code;
  std::vector<int> ms;
  for (absl::string_view v : absl::StrSplit(ms_flag, ',')) {
    int m;
    if (!absl::SimpleAtoi(v, &m) || m < 1) return 2;
    ms.push_back(m);
  }
  ThreadPool pool(threads);
  kernels::SetBlasThreads(threads);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::printf("| matrix | format | isa | m | ms/call | weight GB/s | GFLOP/s |\n|---|---|---|---:|---:|---:|---:|\n");
  for (auto [rows, cols] : {std::pair{16384, 2048}, std::pair{2048, 8192}}) {
    std::vector<float> w(int64_t{rows} * cols);
    for (float& v : w) v = dist(rng) * 0.05f;
    for (WeightFormat format : {WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kInt8, WeightFormat::kInt4}) {
      if (!absl::StrContains(absl::StrCat(",", formats_flag, ","), absl::StrCat(",", kernels::WeightFormatName(format), ","))) continue;
      std::vector<kernels::OwnedWeightMatrix> copies;
      copies.emplace_back(format, w.data(), rows, cols);
      const kernels::WeightMatrix mat = copies[0].view();  // a copy: emplace_back moves copies[0]
      while (static_cast<int64_t>(copies.size()) * mat.size_bytes() < (int64_t{dram_mib} << 20)) {
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
          std::vector<float> x(int64_t{m} * cols), y(int64_t{m} * rows);
          for (float& v : x) v = dist(rng);
          kernels::LinearParams p{.x = x.data(), .w = mat, .y = y.data(), .m = m, .pool = &pool};
          kernels::Linear(p, isa);  // warm-up
          int calls = 0;
          const auto t0 = std::chrono::steady_clock::now();
          double elapsed = 0;
          do {
            p.w = copies[calls % copies.size()].view();
            kernels::Linear(p, isa);
            ++calls;
            elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          } while (elapsed < seconds);
          const double per_call = elapsed / calls;
          std::printf("| %dx%d | %s | %s | %d | %.3f | %.1f | %.1f |\n", rows, cols,
                      std::string(kernels::WeightFormatName(format)).c_str(),
                      format == WeightFormat::kF32 ? "openblas" : std::string(kernels::CpuIsaName(isa)).c_str(), m,
                      per_call * 1e3, mat.size_bytes() / per_call / 1e9,
                      2.0 * m * rows * cols / per_call / 1e9);
          std::fflush(stdout);
        }
      }
    }
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
